//! Attacks on the license server's trust boundaries, black-box over real HTTP, on SQLite and
//! on PostgreSQL: one tenant's bad input must fail only its own request, sums must never wrap,
//! and floods must be refused in the order that protects everyone else.

mod common;

use diesel::connection::SimpleConnection as _;
use serde_json::{json, Value};
use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{batch, nonce, Db, Harness};
use licensor::license::Tier;

on_both_backends!(
    text_a_backend_cannot_store_is_refused_at_validation,
    counts_are_bounded_and_sums_saturate,
    a_poisoned_check_in_fails_alone_while_others_succeed,
    garbage_is_limited_per_address_before_parsing_and_stored_nowhere,
    naming_a_victims_instance_cannot_lock_it_out,
    refused_newcomers_leave_no_instances_behind,
    readiness_means_a_check_in_could_be_recorded,
    another_license_naming_an_instance_cannot_touch_it,
    an_admin_frees_a_seat_at_once,
    a_license_revoked_before_its_first_use_is_refused_at_its_first_check_in,
    admin_listings_come_in_pages_with_filters,
);

/// Writes a bad value into one place of a batch.
type Poison = fn(&mut Value);
/// Writes a count into one place of a batch.
type SetCount = fn(&mut Value, u64);

fn status(v: &Value) -> &str {
    v["status"].as_str().unwrap_or("")
}

fn error_code(h: &Harness, body: Vec<u8>) -> (u16, String) {
    let (code, v) = h.post_raw("/v1/check-ins", "application/json", body);
    (code, v["error"]["code"].as_str().unwrap_or("").to_owned())
}

fn text_a_backend_cannot_store_is_refused_at_validation(h: Harness) {
    let key = h.license(Tier::Community, 1);
    // A NUL byte in every free-text field the batch carries: PostgreSQL refuses it, SQLite
    // would keep it; both backends refuse it the same way, before the database.
    let places: [(&str, Poison); 5] = [
        ("message", |b| b["errors"][0]["message"] = json!("bad\u{0}byte")),
        ("stack", |b| b["errors"][0]["stack"][0] = json!("at \u{0}")),
        ("sketch", |b| b["performance"][0]["sketch"] = json!("\u{0}")),
        ("redactions", |b| b["redactions"] = json!({ "e\u{0}mail": 1 })),
        ("usage name", |b| b["usage"][0]["name"] = json!("x\u{0}y")),
    ];
    for (place, poison) in places {
        let mut b = batch(uuid::Uuid::new_v4(), 2, 1, 1);
        poison(&mut b);
        let body = h.check_in_body(&key, "nul-sender", &nonce(), Some(&b.to_string()));
        assert_eq!(error_code(&h, body), (400, "invalid_telemetry".to_owned()), "NUL in the {place}");
    }
    // An instance id is stored as it is: one carrying a secret is refused, and so is one that
    // is neither a UUID, a digest nor a short identifier no rule changes.
    let roomy = h.license(Tier::Community, 10);
    let refused = [
        "AKIAIOSFODNN7EXAMPLE",
        "ghp_16C7e42F292c6912E7710c838347Ae178B4a",
        "bench-0000001",
        "customer-acme-corp-production-server-eu",
        "0123456789ABCDEF0123456789ABCDEF",
    ];
    let accepted = [
        "be0c0000-0000-4000-8000-000000000001",
        "5f0c2a9e11aa4b7c9d3e5f0c2a9e11aa",
        "web-1",
        "a94a8fe5ccb19ba61c4c0873d391e987982fbbd3",
    ];
    for (id, ok) in refused.iter().map(|id| (id, false)).chain(accepted.iter().map(|id| (id, true))) {
        let body =
            h.check_in_body(&roomy, id, &nonce(), Some(&batch(uuid::Uuid::new_v4(), 1, 1, 0).to_string()));
        let (code, answer) = h.post_raw("/v1/check-ins", "application/json", body);
        let outcome = if ok { answer["status"].clone() } else { answer["error"]["code"].clone() };
        assert_eq!(
            (code, outcome),
            if ok { (200, json!("valid")) } else { (400, json!("invalid_instance_id")) },
            "{id}: {answer}"
        );
    }
    // Line breaks and tabs in messages stay allowed: they are operational text.
    let mut b = batch(uuid::Uuid::new_v4(), 2, 1, 1);
    b["errors"][0]["message"] = json!("line one\n\tline two");
    assert_eq!(status(&h.check_in(&key, "nul-sender", Some(&b.to_string()))), "valid");
}

fn counts_are_bounded_and_sums_saturate(h: Harness) {
    let key = h.license(Tier::Pro, 1);
    let max = licensor::protocol::MAX_COUNT;
    // Counts above 2^53 - 1 are refused, wherever they stand.
    let places: [(&str, SetCount); 5] = [
        ("usage", |b, n| b["usage"][0]["count"] = json!(n)),
        ("errors", |b, n| b["errors"][0]["count"] = json!(n)),
        ("hourly", |b, n| b["sessions"]["hourly"][3] = json!(n)),
        ("route errors", |b, n| b["performance"][0]["errors"] = json!(n)),
        ("redactions", |b, n| b["redactions"] = json!({ "email": n })),
    ];
    for (place, set) in places {
        for too_big in [max + 1, i64::MAX as u64, u64::MAX] {
            let mut b = batch(uuid::Uuid::new_v4(), 2, 1, 1);
            set(&mut b, too_big);
            let body = h.check_in_body(&key, "counter", &nonce(), Some(&b.to_string()));
            assert_eq!(error_code(&h, body), (400, "invalid_telemetry".to_owned()), "{place} = {too_big}");
        }
    }
    // Two batches at the bound add up exactly: no wrap to a negative.
    for _ in 0..2 {
        let mut b = batch(uuid::Uuid::new_v4(), 1, 1, 1);
        b["usage"][0]["count"] = json!(max);
        b["errors"][0]["count"] = json!(max);
        b["sessions"]["hourly"][5] = json!(max);
        assert_eq!(status(&h.check_in(&key, "counter", Some(&b.to_string()))), "valid");
    }
    let (_, s) =
        h.admin(reqwest::Method::GET, "/v1/admin/telemetry/summary?instance_id=counter&hours=24", None);
    assert_eq!(s["usage"][0]["count"], json!(2 * max), "{s}");
    assert_eq!(s["errors"][0]["count"], json!(2 * max), "{s}");
    assert_eq!(s["sessions"]["hourly"][5], json!(2 * max), "{s}");

    // A stored error count near the top saturates at i64::MAX instead of failing the group
    // (PostgreSQL: bigint out of range) or turning into a float (SQLite).
    h.store.conn().unwrap().batch_execute("UPDATE telemetry_errors SET count = 9223372036854775000").unwrap();
    let mut b = batch(uuid::Uuid::new_v4(), 1, 1, 1);
    b["errors"][0]["count"] = json!(max);
    assert_eq!(status(&h.check_in(&key, "counter", Some(&b.to_string()))), "valid");
    let (_, s) =
        h.admin(reqwest::Method::GET, "/v1/admin/telemetry/summary?instance_id=counter&hours=24", None);
    assert_eq!(s["errors"][0]["count"], json!(i64::MAX), "{s}");
}

/// Makes the database itself refuse one tenant's check-ins, whatever validation lets through:
/// a trigger that aborts any insert of a check-in row from an instance named `poison-*`.
fn install_poison(h: &Harness) {
    let sql = match h.db {
        Db::Sqlite => {
            "CREATE TRIGGER poison BEFORE INSERT ON check_ins WHEN NEW.instance_id LIKE 'poison-%' \
             BEGIN SELECT RAISE(ABORT, 'poisoned row'); END;"
        }
        Db::Postgres => {
            "CREATE FUNCTION poison() RETURNS trigger AS $$ BEGIN \
               IF NEW.instance_id LIKE 'poison-%' THEN RAISE EXCEPTION 'poisoned row'; END IF; \
               RETURN NEW; END $$ LANGUAGE plpgsql; \
             CREATE TRIGGER poison BEFORE INSERT ON check_ins FOR EACH ROW EXECUTE FUNCTION poison();"
        }
    };
    h.store.conn().unwrap().batch_execute(sql).unwrap();
}

fn a_poisoned_check_in_fails_alone_while_others_succeed(h: Harness) {
    install_poison(&h);
    // A license large enough that its own rate limit lets the flood through to the database.
    let poison_key = h.license(Tier::Community, 1_000);
    let keys: Vec<String> = (0..4).map(|_| h.license(Tier::Pro, 50)).collect();
    let batch_text = batch(uuid::Uuid::new_v4(), 20, 5, 3).to_string();
    let (ok, failed, poison_answers) = (AtomicUsize::new(0), AtomicUsize::new(0), AtomicUsize::new(0));
    let per_thread = 60;
    std::thread::scope(|s| {
        // 8 threads of poison, sending as fast as the server answers.
        for t in 0..8 {
            let (h, key, batch_text, poison_answers) = (&h, &poison_key, &batch_text, &poison_answers);
            s.spawn(move || {
                for i in 0..per_thread {
                    let body = h.check_in_body(key, &format!("poison-{t}-{i}"), &nonce(), Some(batch_text));
                    let (code, _) = h.post_raw("/v1/check-ins", "application/json", body);
                    assert_eq!(
                        code, 500,
                        "a poisoned check-in is answered 500 (retrying cannot help), never 200"
                    );
                    poison_answers.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
        // 4 threads of legitimate check-ins, with telemetry, each batch new.
        for (t, key) in keys.iter().enumerate() {
            let (h, ok, failed) = (&h, &ok, &failed);
            s.spawn(move || {
                for i in 0..per_thread {
                    let b = batch(uuid::Uuid::new_v4(), 20, 5, 3).to_string();
                    let body = h.check_in_body(key, &format!("legit-{t}-{}", i % 40), &nonce(), Some(&b));
                    let (code, v) = h.post_raw("/v1/check-ins", "application/json", body);
                    if code == 200 && status(&v) == "valid" && v["telemetry"]["accepted"] == true {
                        ok.fetch_add(1, Ordering::Relaxed);
                    } else {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
    });
    let (ok, failed) = (ok.into_inner(), failed.into_inner());
    eprintln!("poisoned group: {ok} legitimate check-ins recorded, {failed} failed");
    assert_eq!(poison_answers.into_inner(), 8 * per_thread);
    assert!(ok * 100 >= (ok + failed) * 99, "{ok} of {} legitimate check-ins succeeded", ok + failed);
    // Nothing of the poisoned tenant was stored, and every legitimate batch was.
    let (_, list) = h.admin(reqwest::Method::GET, "/v1/admin/instances?limit=1000", None);
    let instances = list["instances"].as_array().unwrap();
    assert!(instances.iter().all(|i| !i["instance_id"].as_str().unwrap().starts_with("poison-")));
    assert_eq!(instances.len(), 4 * 40);
}

fn count_rows(h: &Harness, table: &str) -> i64 {
    use diesel::RunQueryDsl as _;
    #[derive(diesel::QueryableByName)]
    struct N {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    let mut conn = h.store.conn().unwrap();
    diesel::sql_query(format!("SELECT COUNT(*) AS n FROM {table}")).get_result::<N>(&mut *conn).unwrap().n
}

fn garbage_is_limited_per_address_before_parsing_and_stored_nowhere(h: Harness) {
    let db = h.db;
    drop(h);
    let Some(h) = Harness::start_with(db, |c| c.rate_limit_per_address = 50) else { return };
    let mut answered = 0;
    let mut limited = 0;
    let started = std::time::Instant::now();
    for i in 0..200 {
        let body = if i % 2 == 0 {
            h.check_in_body("garbage", &format!("g-{i}"), &nonce(), None)
        } else {
            b"{not json".to_vec()
        };
        let (code, v) = h.post_raw("/v1/check-ins", "application/json", body);
        match code {
            200 => {
                assert_eq!(status(&v), "malformed");
                answered += 1;
            }
            400 => answered += 1,
            429 => {
                assert_eq!(v["error"]["code"], "too_many_requests");
                limited += 1;
            }
            other => panic!("{other}: {v}"),
        }
    }
    // The limiter runs on the real monotonic clock: a loop slowed by a loaded machine earns what
    // refilled meanwhile (50 a minute), and nothing more.
    let refilled = (started.elapsed().as_secs_f64() * 50.0 / 60.0).ceil() as usize;
    assert_eq!(answered + limited, 200);
    assert!(
        (50..=50 + refilled).contains(&answered),
        "the address limit counts every request, parsed or not: {answered} answered, {limited} limited, {refilled} refilled"
    );
    // Nothing of it reached the database.
    assert_eq!(count_rows(&h, "check_ins"), 0);
    assert_eq!(count_rows(&h, "instances"), 0);
    assert_eq!(count_rows(&h, "licenses"), 0);
}

#[test]
fn behind_a_trusted_proxy_the_forwarded_address_is_limited() {
    let send = |h: &Harness, forwarded: &str| {
        h.http
            .post(h.url("/v1/check-ins"))
            .header("content-type", "application/json")
            .header("x-forwarded-for", forwarded)
            .body(h.check_in_body("garbage", "x", &nonce(), None))
            .send()
            .unwrap()
            .status()
            .as_u16()
    };
    // Trusted: each client behind the proxy has its own allowance; what a client wrote itself
    // to the left of the proxy's entry is ignored.
    let h = Harness::start_with(Db::Sqlite, |c| {
        c.rate_limit_per_address = 5;
        c.trusted_proxies = vec!["127.0.0.0/8".parse().unwrap()];
    })
    .unwrap();
    for i in 0..5 {
        assert_eq!(send(&h, &format!("10.9.9.{i}, 203.0.113.7")), 200);
    }
    assert_eq!(send(&h, "203.0.113.7"), 429);
    assert_eq!(send(&h, "203.0.113.8"), 200, "another client behind the same proxy");
    // Not trusted: the header proves nothing, and every request counts against the peer.
    let h = Harness::start_with(Db::Sqlite, |c| c.rate_limit_per_address = 5).unwrap();
    for i in 0..5 {
        assert_eq!(send(&h, &format!("203.0.113.{i}")), 200);
    }
    assert_eq!(send(&h, "203.0.113.99"), 429);
}

fn naming_a_victims_instance_cannot_lock_it_out(h: Harness) {
    let db = h.db;
    drop(h);
    let Some(h) = Harness::start_with(db, |c| c.rate_limit_per_minute = 3) else { return };
    let victim_key = h.license(Tier::Pro, 5);
    assert_eq!(
        status(&h.check_in(&victim_key, "victim-1", Some(&batch(uuid::Uuid::new_v4(), 1, 1, 0).to_string()))),
        "valid"
    );
    // 35 requests naming the victim's instance: garbage keys, and keys with a broken signature.
    let mut forged = victim_key.clone().into_bytes();
    let i = forged.len() - 5;
    forged[i] = if forged[i] == b'A' { b'B' } else { b'A' };
    let forged = String::from_utf8(forged).unwrap();
    for i in 0..35 {
        let key = if i % 2 == 0 { "garbage" } else { forged.as_str() };
        let (code, _) =
            h.post_raw("/v1/check-ins", "application/json", h.check_in_body(key, "victim-1", &nonce(), None));
        assert_eq!(code, 200, "answered, never counted against the victim");
    }
    let r = h.check_in(&victim_key, "victim-1", Some(&batch(uuid::Uuid::new_v4(), 1, 1, 0).to_string()));
    assert_eq!(status(&r), "valid", "{r}");
}

fn refused_newcomers_leave_no_instances_behind(h: Harness) {
    let key = h.license(Tier::Community, 1);
    assert_eq!(
        status(&h.check_in(&key, "the-one", Some(&batch(uuid::Uuid::new_v4(), 1, 1, 0).to_string()))),
        "valid"
    );
    let (mut refused, mut limited) = (0, 0);
    let started = std::time::Instant::now();
    for i in 0..200 {
        let (code, v) = h.post_raw(
            "/v1/check-ins",
            "application/json",
            h.check_in_body(&key, &format!("new-{i}"), &nonce(), None),
        );
        match code {
            200 => {
                assert_eq!(status(&v), "telemetry_required");
                refused += 1;
            }
            429 => limited += 1,
            other => panic!("{other}: {v}"),
        }
    }
    // A 1-seat license may check in about 32 times a minute (2 per seat, and 30); the limiter
    // runs on the real monotonic clock, so a slow machine's loop earns what refilled meanwhile.
    let refilled = (started.elapsed().as_secs_f64() * 32.0 / 60.0).ceil() as usize;
    assert!(
        (25..=33 + refilled).contains(&refused),
        "{refused} answered, {limited} limited, {refilled} refilled"
    );
    assert_eq!(count_rows(&h, "instances"), 1, "no instance rows for refused newcomers");
    assert_eq!(count_rows(&h, "check_ins"), 1 + refused as i64, "each answered check-in is in the history");
}

fn readiness_means_a_check_in_could_be_recorded(h: Harness) {
    let ready = |h: &Harness| h.http.get(h.url("/readyz")).send().unwrap().status().as_u16();
    assert_eq!(ready(&h), 200);
    // The schema gone (a botched restore): the database answers, but no check-in could be
    // recorded.
    h.store.conn().unwrap().batch_execute("DROP TABLE check_ins").unwrap();
    assert_eq!(ready(&h), 503);
    let (code, v) = h.admin(reqwest::Method::GET, "/v1/admin/licenses", None);
    assert_eq!(code, 200, "the admin listing does not need check_ins: {v}");
}

/// A TCP proxy in front of PostgreSQL that can be cut, as a database outage would.
struct TcpProxy {
    port: u16,
    cut: Arc<AtomicBool>,
    streams: Arc<std::sync::Mutex<Vec<TcpStream>>>,
}

impl TcpProxy {
    fn start(upstream: (&'static str, u16)) -> TcpProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let cut = Arc::new(AtomicBool::new(false));
        let streams = Arc::new(std::sync::Mutex::new(Vec::<TcpStream>::new()));
        let (is_cut, open) = (cut.clone(), streams.clone());
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                if is_cut.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let Ok(server) = TcpStream::connect(upstream) else { continue };
                open.lock().unwrap().extend([client.try_clone().unwrap(), server.try_clone().unwrap()]);
                for (mut from, mut to) in
                    [(client.try_clone().unwrap(), server.try_clone().unwrap()), (server, client)]
                {
                    std::thread::spawn(move || {
                        let mut buf = [0u8; 16 * 1024];
                        while let Ok(n) = from.read(&mut buf) {
                            if n == 0 || to.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
        TcpProxy { port, cut, streams }
    }

    /// Drops every open connection and refuses new ones.
    fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        for s in self.streams.lock().unwrap().drain(..) {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }

    fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

#[test]
fn a_database_outage_is_answered_503_within_seconds_and_recovers() {
    let proxy = TcpProxy::start(("127.0.0.1", 5432));
    let port = proxy.port;
    let Some(h) = Harness::start_with(Db::Postgres, move |c| {
        c.database_url = c.database_url.replace("127.0.0.1:5432", &format!("127.0.0.1:{port}"));
        assert!(c.database_url.contains(&port.to_string()), "the test URL goes through the proxy");
    }) else {
        return;
    };
    let key = h.license(Tier::Enterprise, 5);
    assert_eq!(status(&h.check_in(&key, "steady", None)), "valid");
    proxy.cut();
    let timed = |what: &str, f: &dyn Fn() -> u16| {
        let started = Instant::now();
        let code = f();
        let took = started.elapsed();
        assert_eq!(code, 503, "{what}");
        assert!(took < Duration::from_secs(8), "{what} took {took:?}");
    };
    timed("readyz", &|| h.http.get(h.url("/readyz")).send().unwrap().status().as_u16());
    timed("an admin listing", &|| h.admin(reqwest::Method::GET, "/v1/admin/licenses", None).0);
    timed("a check-in", &|| {
        h.post_raw("/v1/check-ins", "application/json", h.check_in_body(&key, "steady", &nonce(), None)).0
    });
    let (_, v) = h.admin(reqwest::Method::GET, "/v1/admin/instances", None);
    assert_eq!(v["error"]["code"], "unavailable", "{v}");
    assert!(!v.to_string().contains("5432") && !v.to_string().contains("connection"), "no internals: {v}");
    proxy.restore();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (code, _) =
            h.post_raw("/v1/check-ins", "application/json", h.check_in_body(&key, "steady", &nonce(), None));
        if code == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "the server did not recover after the database came back");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(h.http.get(h.url("/readyz")).send().unwrap().status().as_u16(), 200);
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(bytes).unwrap();
    gz.finish().unwrap()
}

fn post_encoded(h: &Harness, encoding: &str, body: Vec<u8>) -> (u16, Option<String>, Value) {
    let response = h
        .http
        .post(h.url("/v1/check-ins"))
        .header("content-type", "application/json")
        .header("content-encoding", encoding)
        .body(body)
        .send()
        .unwrap();
    let status = response.status().as_u16();
    let accept = response.headers().get("accept-encoding").map(|v| v.to_str().unwrap().to_owned());
    (status, accept, response.json().unwrap())
}

/// A gzipped check-in is taken, and its digest is over the telemetry as sent before
/// compression. Bombs are refused with 413 once inflating passes the body limit or 100 times
/// the compressed size (the server stops there, and stores nothing); another encoding is 415
/// naming gzip; a damaged stream is 400.
#[test]
fn gzipped_bodies_are_inflated_within_bounds() {
    use sha2::Digest as _;
    let Some(h) = Harness::start_with(Db::Sqlite, |c| c.max_body_bytes = 256 * 1024) else { return };
    let key = h.license(Tier::Pro, 2);
    let telemetry = batch(uuid::Uuid::new_v4(), 50, 20, 5).to_string();
    let plain = h.check_in_body(&key, "zipped", &nonce(), Some(&telemetry));
    let (status, _, answer) = post_encoded(&h, "gzip", gzip(&plain));
    assert_eq!((status, answer["status"].as_str()), (200, Some("valid")), "{answer}");
    assert_eq!(answer["telemetry"]["digest"], hex::encode(sha2::Sha256::digest(telemetry.as_bytes())));
    assert_eq!(answer["telemetry"]["accepted"], true);

    // 20 MB of zeros in a JSON string is about 20 KB gzipped, well under the limit as sent; the
    // server stops inflating it at the limit (256 KiB).
    let mut bomb = br#"{"license_key":""#.to_vec();
    bomb.extend(std::iter::repeat_n(b'0', 20 * 1024 * 1024));
    bomb.extend_from_slice(br#""}"#);
    let (status, _, answer) = post_encoded(&h, "gzip", gzip(&bomb));
    assert_eq!((status, answer["error"]["code"].as_str()), (413, Some("body_too_large")), "{answer}");
    assert!(answer["error"]["message"].as_str().unwrap().contains("262144 bytes"), "{answer}");
    // Under the limit, but 200 times its compressed size: refused at 100 times.
    let mut dense = br#"{"license_key":""#.to_vec();
    dense.extend(std::iter::repeat_n(b'0', 200 * 1024));
    dense.extend_from_slice(br#""}"#);
    let dense = gzip(&dense);
    let (status, _, answer) = post_encoded(&h, "gzip", dense.clone());
    assert_eq!((status, answer["error"]["code"].as_str()), (413, Some("body_too_large")), "{answer}");
    assert!(
        answer["error"]["message"].as_str().unwrap().contains(&format!("{} bytes", dense.len() * 100)),
        "{answer}"
    );

    for encoding in ["br", "zstd", "deflate", "gzip, gzip"] {
        let (status, accept, answer) = post_encoded(&h, encoding, gzip(&plain));
        assert_eq!(
            (status, answer["error"]["code"].as_str()),
            (415, Some("unsupported_encoding")),
            "{answer}"
        );
        assert_eq!(accept.as_deref(), Some("gzip"));
    }
    let mut damaged = gzip(&plain);
    damaged.truncate(damaged.len() / 2);
    let (status, _, answer) = post_encoded(&h, "gzip", damaged);
    assert_eq!((status, answer["error"]["code"].as_str()), (400, Some("invalid_body")), "{answer}");
    // Only the first check-in left anything behind.
    assert_eq!(count_rows(&h, "check_ins"), 1);
}

#[test]
fn a_trickling_body_is_cut_off() {
    let h = Harness::start_with(Db::Sqlite, |c| c.body_timeout = Duration::from_secs(1)).unwrap();
    let mut stream = TcpStream::connect(h.server.as_ref().unwrap().addr).unwrap();
    stream
        .write_all(b"POST /v1/check-ins HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n{\"li")
        .unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let started = Instant::now();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    // One byte a while, never the whole body.
    loop {
        let _ = stream.write_all(b" ");
        std::thread::sleep(Duration::from_millis(200));
        stream.set_nonblocking(true).unwrap();
        let read = stream.read(&mut buf);
        stream.set_nonblocking(false).unwrap();
        match read {
            Ok(0) => break,
            Ok(n) => {
                answer.extend_from_slice(&buf[..n]);
                if answer.windows(4).any(|w| w == b"\r\n\r\n") {
                    break;
                }
            }
            Err(_) if started.elapsed() < Duration::from_secs(10) => continue,
            Err(e) => panic!("no answer after {:?}: {e}", started.elapsed()),
        }
    }
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
}

fn telemetry_with(feature: &str) -> String {
    let mut b = batch(uuid::Uuid::new_v4(), 1, 1, 1);
    b["usage"][0]["name"] = json!(feature);
    b.to_string()
}

fn license_id_of(h: &Harness, key: &str) -> String {
    licensor::license::verify(key, &h.ring, h.now()).unwrap().license_id.to_string()
}

fn another_license_naming_an_instance_cannot_touch_it(h: Harness) {
    let victim = h.license(Tier::Community, 1);
    let attacker = h.license(Tier::Community, 5);
    let (victim_id, attacker_id) = (license_id_of(&h, &victim), license_id_of(&h, &attacker));
    assert_eq!(status(&h.check_in(&victim, "shared-id", Some(&telemetry_with("victim_feature")))), "valid");
    // The attacker, with a license of their own, names the victim's instance id.
    for _ in 0..3 {
        assert_eq!(
            status(&h.check_in(&attacker, "shared-id", Some(&telemetry_with("attacker_feature")))),
            "valid"
        );
    }
    // The victim's seat is still held: a second instance of the 1-seat license is refused.
    assert_eq!(status(&h.check_in(&victim, "second", Some(&telemetry_with("x")))), "seat_limit_exceeded");
    assert_eq!(status(&h.check_in(&victim, "shared-id", Some(&telemetry_with("victim_feature")))), "valid");
    // Two instances, one per license.
    let (_, list) = h.admin(reqwest::Method::GET, "/v1/admin/instances?limit=10", None);
    let mut owners: Vec<&str> = list["instances"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["instance_id"] == "shared-id")
        .map(|i| i["license_id"].as_str().unwrap())
        .collect();
    owners.sort();
    let mut expected = vec![victim_id.as_str(), attacker_id.as_str()];
    expected.sort();
    assert_eq!(owners, expected);
    // Telemetry is not mixed: the summary must be told which, and each holds its own.
    let (code, v) = h.admin(reqwest::Method::GET, "/v1/admin/telemetry/summary?instance_id=shared-id", None);
    assert_eq!((code, v["error"]["code"].as_str()), (409, Some("ambiguous_instance")), "{v}");
    let summary = |license: &str| {
        let path = format!("/v1/admin/telemetry/summary?instance_id=shared-id&license_id={license}");
        let (code, v) = h.admin(reqwest::Method::GET, &path, None);
        assert_eq!(code, 200, "{v}");
        let names: Vec<String> =
            v["usage"].as_array().unwrap().iter().map(|u| u["name"].as_str().unwrap().to_owned()).collect();
        (names, v["batches"].as_i64().unwrap())
    };
    assert_eq!(summary(&victim_id), (vec!["victim_feature".to_owned()], 2));
    assert_eq!(summary(&attacker_id), (vec!["attacker_feature".to_owned()], 3));
    // Erasing one license's instance leaves the other's telemetry.
    let (code, _) = h.admin(
        reqwest::Method::DELETE,
        &format!("/v1/admin/instances/shared-id/telemetry?license_id={attacker_id}"),
        None,
    );
    assert_eq!(code, 200);
    assert_eq!(summary(&victim_id).1, 2);
    assert_eq!(summary(&attacker_id).1, 0);
}

fn an_admin_frees_a_seat_at_once(h: Harness) {
    let key = h.license(Tier::Pro, 1);
    let license = license_id_of(&h, &key);
    assert_eq!(status(&h.check_in(&key, "killed-container", Some(&telemetry_with("a")))), "valid");
    assert_eq!(status(&h.check_in(&key, "replacement", Some(&telemetry_with("a")))), "seat_limit_exceeded");
    let path = format!("/v1/admin/licenses/{license}/instances/killed-container");
    let (code, v) = h.admin(reqwest::Method::DELETE, &path, None);
    assert_eq!(code, 200, "{v}");
    assert_eq!((v["released"].as_bool(), v["held_seat"].as_bool()), (Some(true), Some(true)));
    // The seat is free at once, and the released instance comes back as a new one.
    assert_eq!(status(&h.check_in(&key, "replacement", Some(&telemetry_with("a")))), "valid");
    assert_eq!(
        status(&h.check_in(&key, "killed-container", Some(&telemetry_with("a")))),
        "seat_limit_exceeded"
    );
    let (code, v) = h.admin(reqwest::Method::DELETE, &path, None);
    assert_eq!(
        (code, v["error"]["code"].as_str()),
        (404, Some("not_found")),
        "refused newcomers have no row"
    );
    // Another license's admin path cannot reach it.
    let other = license_id_of(&h, &h.license(Tier::Pro, 1));
    let (code, _) =
        h.admin(reqwest::Method::DELETE, &format!("/v1/admin/licenses/{other}/instances/replacement"), None);
    assert_eq!(code, 404);
}

fn a_license_revoked_before_its_first_use_is_refused_at_its_first_check_in(h: Harness) {
    // A key issued offline by the vendor, leaked before any instance used it.
    let key = h.license(Tier::Enterprise, 10);
    let license = license_id_of(&h, &key);
    let (code, v) = h.admin(
        reqwest::Method::POST,
        &format!("/v1/admin/licenses/{license}/revoke"),
        Some(&json!({ "reason": "leaked on a forum" })),
    );
    assert_eq!(code, 200, "{v}");
    let (_, list) = h.admin(reqwest::Method::GET, "/v1/admin/licenses?revoked=true", None);
    assert_eq!(list["licenses"][0]["license_id"], license.as_str());
    assert_eq!(list["licenses"][0]["seen"], false);
    let r = h.check_in(&key, "first", None);
    assert_eq!(status(&r), "revoked");
    assert!(r["message"].as_str().unwrap().contains("leaked on a forum"), "{r}");
    // Its first check-in showed the server the license: its fields are known now.
    let (_, list) = h.admin(reqwest::Method::GET, "/v1/admin/licenses", None);
    assert_eq!(list["licenses"][0]["seen"], true);
    assert_eq!(list["licenses"][0]["licensee"], "Acme Test Corp");
    assert_eq!(list["licenses"][0]["seats"], 10);
    let (code, _) = h.admin(reqwest::Method::POST, &format!("/v1/admin/licenses/{license}/reinstate"), None);
    assert_eq!(code, 200);
    assert_eq!(status(&h.check_in(&key, "first", None)), "valid");
}

fn admin_listings_come_in_pages_with_filters(h: Harness) {
    let keys: Vec<String> = (0..3).map(|_| h.license(Tier::Enterprise, 20)).collect();
    for (n, key) in keys.iter().enumerate() {
        for i in 0..9 {
            assert_eq!(status(&h.check_in(key, &format!("i-{n}-{i}"), None)), "valid");
        }
    }
    let pro = h.license(Tier::Pro, 1);
    assert_eq!(status(&h.check_in(&pro, "pro-1", Some(&telemetry_with("a")))), "valid");
    assert_eq!(status(&h.check_in(&pro, "pro-1", None)), "telemetry_required");
    // 28 instances in pages of 10: every one exactly once.
    let mut seen = std::collections::BTreeSet::new();
    let mut cursor: Option<String> = None;
    let mut pages = Vec::new();
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/admin/instances?limit=10&cursor={c}"),
            None => "/v1/admin/instances?limit=10".to_owned(),
        };
        let (code, v) = h.admin(reqwest::Method::GET, &path, None);
        assert_eq!(code, 200, "{v}");
        let items = v["instances"].as_array().unwrap();
        pages.push(items.len());
        for i in items {
            assert!(seen.insert((i["license_id"].to_string(), i["instance_id"].to_string())), "{i} twice");
        }
        match v["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(pages, [10, 10, 8]);
    // Filters.
    let first = license_id_of(&h, &keys[0]);
    let (_, v) = h.admin(reqwest::Method::GET, &format!("/v1/admin/instances?license_id={first}"), None);
    assert_eq!(v["instances"].as_array().unwrap().len(), 9);
    let (_, v) = h.admin(reqwest::Method::GET, "/v1/admin/instances?status=telemetry_required", None);
    assert_eq!(v["instances"].as_array().unwrap().len(), 1);
    assert_eq!(v["instances"][0]["instance_id"], "pro-1");
    let (_, v) = h.admin(reqwest::Method::GET, "/v1/admin/licenses?tier=pro", None);
    assert_eq!(v["licenses"].as_array().unwrap().len(), 1);
    let (_, v) = h.admin(reqwest::Method::GET, "/v1/admin/licenses?limit=2", None);
    assert_eq!(v["licenses"].as_array().unwrap().len(), 2);
    let (_, v2) = h.admin(
        reqwest::Method::GET,
        &format!("/v1/admin/licenses?limit=2&cursor={}", v["next_cursor"].as_str().unwrap()),
        None,
    );
    assert_eq!(v2["licenses"].as_array().unwrap().len(), 2);
    assert!(v2["next_cursor"].is_null());
    // Bad input is a clear 400.
    for (path, code) in [
        ("/v1/admin/instances?limit=0", "invalid_query"),
        ("/v1/admin/instances?limit=1001", "invalid_query"),
        ("/v1/admin/instances?cursor=bm90LWEtY3Vyc29y", "invalid_cursor"),
        ("/v1/admin/instances?status=sleeping", "invalid_query"),
        ("/v1/admin/licenses?tier=gold", "invalid_query"),
    ] {
        let (status, v) = h.admin(reqwest::Method::GET, path, None);
        assert_eq!((status, v["error"]["code"].as_str()), (400, Some(code)), "{path}: {v}");
    }
}

/// One IPv6 /64 is one client address: whoever holds it holds every address in it.
#[test]
fn an_ipv6_prefix_shares_one_address_allowance() {
    use licensor::checkin::{Limiter, Rates};
    let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
    let limiter =
        Limiter::new(Rates { per_address_per_minute: 2, per_instance_per_minute: 600, ipv6_prefix: 64 });
    assert!(limiter.admit_address(ip("2001:db8::1")).is_ok());
    assert!(limiter.admit_address(ip("2001:db8::2")).is_ok());
    assert!(limiter.admit_address(ip("2001:db8::ffff:1")).is_err(), "the same /64");
    assert!(limiter.admit_address(ip("2001:db8:0:1::1")).is_ok(), "the next /64");
    assert!(limiter.admit_address(ip("192.0.2.1")).is_ok());
    let per_address =
        Limiter::new(Rates { per_address_per_minute: 1, per_instance_per_minute: 600, ipv6_prefix: 128 });
    assert!(per_address.admit_address(ip("2001:db8::1")).is_ok());
    assert!(per_address.admit_address(ip("2001:db8::2")).is_ok(), "/128: each address alone");
}

#[test]
fn the_limiters_forget_idle_keys_so_memory_stays_bounded() {
    use licensor::checkin::{Limiter, Rates};
    let limiter =
        Limiter::new(Rates { per_address_per_minute: 600, per_instance_per_minute: 600, ipv6_prefix: 64 });
    let license = uuid::Uuid::new_v4();
    for i in 0..20_000u32 {
        let address = std::net::IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
        limiter.admit_address(address).unwrap();
        limiter.admit_instance(license, &format!("instance-{i}")).unwrap();
    }
    assert!(limiter.forget_idle() >= 20_000, "recent keys are kept");
    // One request of a 600-a-minute allowance is replenished after 0.1 s; a key is dropped once
    // it would be admitted as a new one.
    limiter.clock().skip(Duration::from_millis(400));
    assert_eq!(limiter.forget_idle(), 0, "every key's allowance is full again: all forgotten");
}
