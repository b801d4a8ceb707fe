//! Webhooks over real HTTP on both backends: registration, every event type, signatures a
//! receiver can verify, retries with backoff, redelivery, and (on PostgreSQL) a second replica's
//! worker on the same database that never sends what the first sent.

mod common;

use chrono::Duration;
use hmac::{Hmac, Mac as _};
use serde_json::{json, Value};
use sha2::Sha256;
use std::collections::VecDeque;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use common::{batch, Harness};

on_both_backends!(
    every_event_arrives_signed_once_and_failures_are_retried,
    a_hanging_receiver_delays_no_other_and_a_failing_one_is_paused,
);

/// A request the receiver got: its headers (lower-case names) and body.
#[derive(Debug, Clone)]
struct Received {
    headers: Vec<(String, String)>,
    body: String,
}

impl Received {
    fn header(&self, name: &str) -> &str {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str()).unwrap_or("")
    }
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap()
    }
}

/// A webhook receiver: answers each request with the next queued status (200 when none).
struct Receiver {
    url: String,
    got: Arc<Mutex<Vec<Received>>>,
    answers: Arc<Mutex<VecDeque<u16>>>,
}

impl Receiver {
    fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/hooks", listener.local_addr().unwrap());
        let got = Arc::new(Mutex::new(Vec::new()));
        let answers = Arc::new(Mutex::new(VecDeque::new()));
        let (g, a) = (got.clone(), answers.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut headers = Vec::new();
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                loop {
                    line.clear();
                    reader.read_line(&mut line).unwrap();
                    let trimmed = line.trim_end();
                    if trimmed.is_empty() {
                        break;
                    }
                    let (name, value) = trimmed.split_once(':').unwrap();
                    headers.push((name.to_ascii_lowercase(), value.trim().to_owned()));
                }
                let length: usize = headers
                    .iter()
                    .find(|(n, _)| n == "content-length")
                    .map_or(0, |(_, v)| v.parse().unwrap());
                let mut body = vec![0; length];
                reader.read_exact(&mut body).unwrap();
                g.lock().unwrap().push(Received { headers, body: String::from_utf8(body).unwrap() });
                let status = a.lock().unwrap().pop_front().unwrap_or(200);
                let mut stream = stream;
                let _ =
                    write!(stream, "HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
            }
        });
        Receiver { url, got, answers }
    }

    /// Waits until `n` requests arrived, and returns them.
    fn wait_for(&self, n: usize) -> Vec<Received> {
        let deadline = Instant::now() + std::time::Duration::from_secs(15);
        loop {
            let got = self.got.lock().unwrap().clone();
            if got.len() >= n {
                return got;
            }
            assert!(Instant::now() < deadline, "{} of {n} deliveries arrived: {got:#?}", got.len());
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
}

/// The status of an admin request whose answer has no body.
fn status_of(h: &Harness, method: reqwest::Method, path: &str) -> u16 {
    h.http.request(method, h.url(path)).bearer_auth(common::ADMIN_TOKEN).send().unwrap().status().as_u16()
}

/// The receiver's side of the documented verification recipe.
fn verify(secret: &str, received: &Received) -> i64 {
    let header = received.header("licensor-signature");
    let (t, v1) = header.split_once(",v1=").unwrap_or_else(|| panic!("{header}"));
    let t = t.strip_prefix("t=").unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{t}.{}", received.body).as_bytes());
    mac.verify_slice(&hex::decode(v1).unwrap()).expect("the signature verifies under the endpoint's secret");
    t.parse().unwrap()
}

fn every_event_arrives_signed_once_and_failures_are_retried(h: Harness) {
    let receiver = Receiver::start();
    let post = reqwest::Method::POST;
    // Registration checks what it is given.
    let (status, body) = h.admin(
        post.clone(),
        "/v1/admin/webhooks",
        Some(&json!({ "url": "ftp://x", "events": ["license.issued"] })),
    );
    assert_eq!(status, 400, "{body}");
    let (status, body) = h.admin(
        post.clone(),
        "/v1/admin/webhooks",
        Some(&json!({ "url": receiver.url, "events": ["license.exploded"] })),
    );
    assert_eq!(status, 400, "{body}");
    let all = licensor::store::EVENT_TYPES;
    let (status, endpoint) =
        h.admin(post.clone(), "/v1/admin/webhooks", Some(&json!({ "url": receiver.url, "events": all })));
    assert_eq!(status, 201, "{endpoint}");
    let secret = endpoint["secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("whsec_"));
    let endpoint_id = endpoint["id"].as_str().unwrap().to_owned();
    let (_, listed) = h.admin(reqwest::Method::GET, "/v1/admin/webhooks", None);
    assert_eq!(listed["endpoints"][0]["id"], endpoint_id.as_str());
    assert!(listed.to_string().find(&secret).is_none(), "the secret is shown once only");

    // license.issued
    let (status, issued) = h.admin(
        post.clone(),
        "/v1/admin/licenses",
        Some(&json!({ "tier": "pro", "licensee": "Hooked Ltd", "perpetual": true, "seats": 1 })),
    );
    assert_eq!(status, 201);
    let key = issued["license_key"].as_str().unwrap().to_owned();
    let license_id = issued["payload"]["license_id"].as_str().unwrap().to_owned();
    // instance.activated, then seat_limit.reached (twice refused, one event).
    let b = || batch(uuid::Uuid::new_v4(), 2, 1, 0).to_string();
    assert_eq!(h.check_in(&key, "hook-1", Some(&b()))["status"], "valid");
    assert_eq!(h.check_in(&key, "hook-2", Some(&b()))["status"], "seat_limit_exceeded");
    assert_eq!(h.check_in(&key, "hook-3", Some(&b()))["status"], "seat_limit_exceeded");
    // license.revoked, license.reinstated, instance.released
    h.admin(
        post.clone(),
        &format!("/v1/admin/licenses/{license_id}/revoke"),
        Some(&json!({ "reason": "unpaid" })),
    );
    h.admin(post.clone(), &format!("/v1/admin/licenses/{license_id}/reinstate"), None);
    let (status, _) =
        h.admin(reqwest::Method::DELETE, &format!("/v1/admin/licenses/{license_id}/instances/hook-1"), None);
    assert_eq!(status, 200);

    let got = receiver.wait_for(6);
    let mut types: Vec<String> = got.iter().map(|r| r.json()["type"].as_str().unwrap().to_owned()).collect();
    types.sort();
    assert_eq!(
        types,
        [
            "instance.activated",
            "instance.released",
            "license.issued",
            "license.reinstated",
            "license.revoked",
            "seat_limit.reached"
        ]
    );
    for r in &got {
        let t = verify(&secret, r);
        assert_eq!(t, h.now().timestamp(), "signed at the server's time");
        assert_eq!(r.header("licensor-event-id"), r.json()["id"].as_str().unwrap());
        assert_eq!(r.header("content-type"), "application/json");
        assert_eq!(r.json()["data"]["license_id"], license_id.as_str(), "{}", r.body);
    }
    let of = |t: &str| got.iter().find(|r| r.json()["type"] == t).unwrap().json();
    assert_eq!(of("license.issued")["data"]["licensee"], "Hooked Ltd");
    assert_eq!(of("license.revoked")["data"]["reason"], "unpaid");
    assert_eq!(of("instance.activated")["data"]["instance_id"], "hook-1");
    assert_eq!(of("seat_limit.reached")["data"]["refused_instance_id"], "hook-2");
    assert_eq!(of("instance.released")["data"]["by"], "admin");
    // A signature checked with another secret fails: the check above can fail.
    let mut forged = got[0].clone();
    forged.body.push(' ');
    assert!(std::panic::catch_unwind(|| verify(&secret, &forged)).is_err());

    // A delivery that fails is retried after its backoff (10 s), not before.
    receiver.answers.lock().unwrap().push_back(500);
    h.admin(post.clone(), &format!("/v1/admin/licenses/{license_id}/revoke"), None);
    let got = receiver.wait_for(7);
    let failed_id = got[6].json()["id"].as_str().unwrap().to_owned();
    // Once the failure is recorded, a later event is delivered while the failed one waits for
    // its backoff.
    let deliveries_path = format!("/v1/admin/webhooks/{endpoint_id}/deliveries");
    let recorded = || {
        let (_, d) = h.admin(reqwest::Method::GET, &deliveries_path, None);
        d["deliveries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["event_id"] == failed_id.as_str() && d["last_status"] == 500)
    };
    assert!(
        common::eventually(std::time::Duration::from_secs(15), recorded),
        "the failed attempt was recorded"
    );
    h.admin(post.clone(), &format!("/v1/admin/licenses/{license_id}/revoke"), None);
    let got = receiver.wait_for(8);
    assert_eq!(got[7].json()["type"], "license.revoked", "no retry before the backoff");
    h.advance(Duration::seconds(11));
    let got = receiver.wait_for(9);
    assert_eq!(got[8].json()["id"], failed_id.as_str(), "the same event, retried");
    let (_, deliveries) =
        h.admin(reqwest::Method::GET, &format!("/v1/admin/webhooks/{endpoint_id}/deliveries"), None);
    let retried = deliveries["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["event_id"] == failed_id.as_str())
        .unwrap()
        .clone();
    assert_eq!(
        (retried["attempts"].as_i64(), retried["last_status"].as_i64()),
        (Some(2), Some(200)),
        "{retried}"
    );
    assert!(retried["delivered_at"].is_string());

    // Redelivery sends the same event again.
    let status = status_of(
        &h,
        post.clone(),
        &format!("/v1/admin/webhooks/{endpoint_id}/deliveries/{failed_id}/redeliver"),
    );
    assert_eq!(status, 202);
    let got = receiver.wait_for(10);
    assert_eq!(got[9].json()["id"], failed_id.as_str());
    let status = status_of(
        &h,
        post.clone(),
        &format!("/v1/admin/webhooks/{endpoint_id}/deliveries/evt_nothing/redeliver"),
    );
    assert_eq!(status, 404);

    // checkin.overdue and install.seat_freed: hook-4 (its own install) checks in, its lease
    // lapses, and the scan notices it once.
    h.admin(post.clone(), &format!("/v1/admin/licenses/{license_id}/reinstate"), None);
    let answer = h.check_in(&key, "hook-4", Some(&b()));
    assert_eq!(answer["status"], "valid", "{answer}");
    let lease_end = chrono::DateTime::parse_from_rfc3339(answer["valid_until"].as_str().unwrap()).unwrap();
    let got = receiver.wait_for(12); // license.reinstated and instance.activated
    assert_eq!(got.len(), 12);
    h.advance(lease_end.with_timezone(&chrono::Utc) - h.now() + Duration::minutes(5));
    let got = receiver.wait_for(14);
    let lapsed: Vec<Value> = got[12..].iter().map(|r| r.json()).collect();
    let of = |t: &str| lapsed.iter().find(|e| e["type"] == t).unwrap_or_else(|| panic!("{t}: {lapsed:?}"));
    assert_eq!(of("checkin.overdue")["data"]["instance_id"], "hook-4");
    let freed = &of("install.seat_freed")["data"];
    assert_eq!((&freed["install_id"], &freed["processes"]), (&json!("hook-4"), &json!(1)), "{freed}");
    assert_eq!(freed["seat_freed_at"], answer["valid_until"], "the install's seat ended with its lease");
    // The next scan (by the server's clock) finds the same lapse and sends nothing more.
    let before = h.metric("licensor_webhook_scans_total");
    h.advance(Duration::minutes(2));
    assert!(
        common::eventually(std::time::Duration::from_secs(15), || h.metric("licensor_webhook_scans_total")
            > before),
        "no later scan ran"
    );
    assert_eq!(receiver.got.lock().unwrap().len(), 14, "one lapse, one event of each type");

    // A second replica's worker on the same database sends nothing the first has sent.
    if h.db == common::Db::Postgres {
        let replica = licensor::store::Store::open(&h.database_url, 2).unwrap();
        let clock = h.clock.clone();
        std::thread::spawn(move || {
            actix_web::rt::System::new().block_on(async move {
                let worker = licensor::server::webhooks::start_worker(
                    replica,
                    Arc::new(move || *clock.lock().unwrap()),
                    licensor::metrics::Metrics::new(),
                );
                let _ = worker.await;
            })
        });
        for _ in 0..20 {
            h.admin(post.clone(), &format!("/v1/admin/licenses/{license_id}/revoke"), None);
        }
        let got = receiver.wait_for(34);
        // Every delivery is recorded as delivered: nothing is due anywhere any more.
        let all_delivered = || {
            let (_, d) = h.admin(reqwest::Method::GET, &format!("{deliveries_path}?limit=1000"), None);
            d["deliveries"].as_array().unwrap().iter().all(|d| d["delivered_at"].is_string())
        };
        assert!(
            common::eventually(std::time::Duration::from_secs(15), all_delivered),
            "deliveries still due"
        );
        let got_now = receiver.got.lock().unwrap().clone();
        assert_eq!(got_now.len(), got.len().max(34), "nothing sent twice");
        let mut ids: Vec<String> = got_now.iter().map(|r| r.header("licensor-event-id").to_owned()).collect();
        // The event retried after a 500 and then redelivered came three times; every other once.
        ids.sort();
        let before = ids.len();
        ids.dedup();
        assert_eq!(before - ids.len(), 2, "only the retried and the redelivered event came twice");
    }

    // Retention removes the deliveries that are done, with the raw telemetry.
    let done_before = h.store.purge_before(h.now() + Duration::days(1)).unwrap();
    // Twelve events so far (the retried and redelivered one is one delivery), and twenty more on
    // PostgreSQL.
    let expected = if h.db == common::Db::Postgres { 32 } else { 12 };
    assert_eq!(done_before["webhook_deliveries"], expected, "{done_before:?}");
    let (_, deliveries) =
        h.admin(reqwest::Method::GET, &format!("/v1/admin/webhooks/{endpoint_id}/deliveries"), None);
    assert!(
        deliveries["deliveries"]
            .as_array()
            .unwrap()
            .iter()
            .all(|d| d["delivered_at"].is_null() && d["gave_up_at"].is_null()),
        "only pending deliveries stay: {deliveries}"
    );

    // Removing the endpoint stops it all.
    assert_eq!(status_of(&h, reqwest::Method::DELETE, &format!("/v1/admin/webhooks/{endpoint_id}")), 204);
    assert_eq!(status_of(&h, reqwest::Method::DELETE, &format!("/v1/admin/webhooks/{endpoint_id}")), 404);
}

/// A receiver that takes connections and never answers (until the sender gives up).
fn hanging_receiver() -> (String, Arc<Mutex<usize>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hooks", listener.local_addr().unwrap());
    let accepted = Arc::new(Mutex::new(0));
    let count = accepted.clone();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().flatten() {
            *count.lock().unwrap() += 1;
            held.push(stream);
        }
    });
    (url, accepted)
}

fn a_hanging_receiver_delays_no_other_and_a_failing_one_is_paused(h: Harness) {
    let post = reqwest::Method::POST;
    let (hanging, accepted) = hanging_receiver();
    let fast = Receiver::start();
    let failing = Receiver::start();
    failing.answers.lock().unwrap().extend([500; 5]);
    for url in [&hanging, &fast.url, &failing.url] {
        let (status, body) = h.admin(
            post.clone(),
            "/v1/admin/webhooks",
            Some(&json!({ "url": url, "events": ["license.revoked", "license.reinstated"] })),
        );
        assert_eq!(status, 201, "{body}");
    }
    let failing_id = {
        let (_, list) = h.admin(reqwest::Method::GET, "/v1/admin/webhooks", None);
        list["endpoints"].as_array().unwrap().iter().find(|e| e["url"] == failing.url.as_str()).unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let (_, issued) = h.admin(
        post.clone(),
        "/v1/admin/licenses",
        Some(&json!({ "tier": "pro", "licensee": "Hooks", "perpetual": true })),
    );
    let license_id = issued["payload"]["license_id"].as_str().unwrap().to_owned();
    let toggle = |n: usize| {
        let action = if n % 2 == 1 { "revoke" } else { "reinstate" };
        let (status, _) = h.admin(post.clone(), &format!("/v1/admin/licenses/{license_id}/{action}"), None);
        assert_eq!(status, 200);
    };
    let opened = || h.metric("licensor_webhook_circuits_opened_total");

    // Each event reaches the fast receiver within a second, while the hanging one holds its
    // deliveries for the sender's whole timeout (10 s).
    for n in 1..=5 {
        let started = Instant::now();
        toggle(n);
        assert!(
            common::eventually(std::time::Duration::from_secs(1), || fast.got.lock().unwrap().len() == n),
            "event {n} reached the fast receiver only after {:?}",
            started.elapsed()
        );
    }
    assert!(*accepted.lock().unwrap() >= 1, "the hanging receiver was sent to");
    // The failing receiver answered 500 five times: its circuit opened.
    assert!(common::eventually(std::time::Duration::from_secs(5), || opened() == 1), "opened: {}", opened());
    assert_eq!(failing.got.lock().unwrap().len(), 5);

    // Paused: the next events reach the others, not it.
    for n in 6..=7 {
        toggle(n);
        fast.wait_for(n);
    }
    let attempts = |h: &Harness| -> Vec<i64> {
        let (_, d) =
            h.admin(reqwest::Method::GET, &format!("/v1/admin/webhooks/{failing_id}/deliveries"), None);
        let mut attempts: Vec<i64> =
            d["deliveries"].as_array().unwrap().iter().map(|d| d["attempts"].as_i64().unwrap()).collect();
        attempts.sort_unstable();
        attempts
    };
    assert_eq!(attempts(&h), [0, 0, 1, 1, 1, 1, 1], "events 6 and 7 wait, untried");
    assert_eq!(failing.got.lock().unwrap().len(), 5);

    // Once the pause is over (by the server's clock) one trial goes; it succeeds, and the
    // endpoint gets everything it missed: the two events it never had, and the five retried.
    h.advance(Duration::seconds(31));
    let got = failing.wait_for(12);
    let mut ids: Vec<&str> = got[5..].iter().map(|r| r.header("licensor-event-id")).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 7, "every event delivered once more");
    assert!(common::eventually(std::time::Duration::from_secs(5), || attempts(&h) == [1, 1, 2, 2, 2, 2, 2]));
    assert_eq!(opened(), 1);
}
