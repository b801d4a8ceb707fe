//! The client believes nothing unsigned: answers from a fake server (one that cannot sign, as a
//! man in the middle or a hostile network would be), redirects, huge bodies, error statuses and
//! plain http must change nothing a deployment holds.

mod common;

use chrono::{DateTime, Duration as Days, Utc};
use serde_json::{json, Value};
use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Db, Harness};
use licensor::client::licensing::CheckInOutcome;
use licensor::client::store::LocalStore;
use licensor::client::{Config, DeactivateError, InvalidReason, Licensing, StartError, Status};
use licensor::license::Tier;
use licensor::protocol::CheckInStatus;

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
}

fn config(h: &Harness, key: &str, server: &str, data: &std::path::Path) -> Config {
    let mut c = Config::new(key, h.ring.clone(), "3.1.0");
    c.server_url = Some(server.to_owned());
    c.instance_url = Some("https://app.example.com".into());
    c.data_dir = data.into();
    c.first_check_in_after = Duration::from_secs(3600);
    let clock = h.clock.clone();
    c.clock = Arc::new(move || *clock.lock().unwrap());
    c
}

/// One HTTP request as the fake server read it: the body inflated when it came gzipped.
struct Seen {
    body: Vec<u8>,
    /// The `Content-Encoding` it came with.
    encoding: Option<String>,
}

fn read_request(stream: &mut TcpStream) -> Option<Seen> {
    let mut data = Vec::new();
    let mut buf = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = stream.read(&mut buf).ok()?;
        if n == 0 {
            return None;
        }
        data.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&data[..head_end]).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    while data.len() < head_end + length {
        let n = stream.read(&mut buf).ok()?;
        if n == 0 {
            return None;
        }
        data.extend_from_slice(&buf[..n]);
    }
    let encoding =
        head.lines().find_map(|l| l.strip_prefix("content-encoding:")).map(|v| v.trim().to_owned());
    let mut body = data[head_end..head_end + length].to_vec();
    if encoding.as_deref() == Some("gzip") {
        let mut inflated = Vec::new();
        flate2::read::GzDecoder::new(&body[..]).read_to_end(&mut inflated).unwrap();
        body = inflated;
    }
    Some(Seen { body, encoding })
}

/// A server that answers every request with what `answer` writes, and counts requests.
fn fake_server(answer: impl Fn(&Seen, &mut TcpStream) + Send + Sync + 'static) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let count = Arc::new(AtomicUsize::new(0));
    let counted = count.clone();
    let answer = Arc::new(answer);
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            counted.fetch_add(1, Ordering::SeqCst);
            let answer = answer.clone();
            std::thread::spawn(move || {
                let mut stream = stream;
                if let Some(seen) = read_request(&mut stream) {
                    answer(&seen, &mut stream);
                }
            });
        }
    });
    (url, count)
}

fn respond(stream: &mut TcpStream, status: &str, headers: &[(&str, String)], body: &[u8]) {
    let mut head = format!("HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n", body.len());
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(body);
}

/// An answer as a forger would write it: every field the client might believe, no lease.
fn forged_answer(seen: &Seen, server_time: DateTime<Utc>) -> Vec<u8> {
    #[derive(serde::Deserialize)]
    struct Req<'a> {
        #[serde(borrow)]
        telemetry: Option<&'a serde_json::value::RawValue>,
    }
    let req: Req = serde_json::from_slice(&seen.body).unwrap();
    let raw = req.telemetry.unwrap().get();
    let batch: Value = serde_json::from_str(raw).unwrap();
    let t = licensor::time::format(&server_time);
    serde_json::to_vec(&json!({
        "status": "malformed", "message": "forged",
        "next_check_in_at": t, "valid_until": t, "server_time": t,
        "telemetry": { "batch_id": batch["batch_id"], "accepted": true, "duplicate": false,
                       "digest": licensor::protocol::digest(raw.as_bytes()) }
    }))
    .unwrap()
}

fn pending_batch(data: &std::path::Path) -> Option<String> {
    LocalStore::open(data).unwrap().outbox().unwrap().map(|o| o.batch_id)
}

#[test]
fn an_unsigned_answer_changes_nothing() {
    let h = Harness::start(Db::Sqlite).unwrap();
    let data = h.dir.path().join("client");
    let key = h.license(Tier::Community, 1);
    let far = "2099-01-01T00:00:00Z".parse::<DateTime<Utc>>().unwrap();
    let (url, _) = fake_server(move |seen, stream| {
        let body = forged_answer(seen, far);
        respond(stream, "200 OK", &[("content-type", "application/json".into())], &body);
    });
    let l = Licensing::start(config(&h, &key, &url, &data)).unwrap();
    l.track_feature("export");
    let before = l.status();
    assert!(matches!(before, Status::Grace { .. }), "{before:?}");
    let CheckInOutcome::NoAnswer { error, retry } = block_on(l.check_in_now()) else {
        panic!("believed a forgery")
    };
    assert!(error.contains("no signed lease"), "{error}");
    assert!(retry <= Duration::from_secs(30), "retried with backoff, not at the forged time: {retry:?}");
    // The clock mark did not move to 2099, the batch was not moved to the ledger.
    assert_eq!(l.status(), before);
    l.shutdown();
    let store = LocalStore::open(&data).unwrap();
    assert!(store.ledger().unwrap().is_empty(), "an unsigned acknowledgement moved the batch");
    let pending = store.outbox().unwrap().expect("the batch waits for a signed acknowledgement");
    drop(store);

    // The same install, now reaching the real server, sends that very batch and is believed.
    let l = Licensing::start(config(&h, &key, &h.base, &data)).unwrap();
    let outcome = block_on(l.check_in_now());
    assert!(
        matches!(
            outcome,
            CheckInOutcome::Answered { status: CheckInStatus::Valid, batch_acknowledged: true, .. }
        ),
        "{outcome:?}"
    );
    assert_eq!(l.status(), Status::Valid);
    l.shutdown();
    let ledger = LocalStore::open(&data).unwrap().ledger().unwrap();
    assert_eq!(ledger.len(), 1);
    assert_eq!(ledger[0].batch_id, pending.batch_id);
}

#[test]
fn an_error_status_keeps_the_batch_and_retries_soon() {
    let h = Harness::start(Db::Sqlite).unwrap();
    let data = h.dir.path().join("client");
    let key = h.license(Tier::Pro, 1);
    let (url, requests) = fake_server(|_, stream| {
        let body = br#"{"error":{"code":"invalid_telemetry","message":"forged refusal"}}"#;
        respond(stream, "400 Bad Request", &[("content-type", "application/json".into())], body);
    });
    let l = Licensing::start(config(&h, &key, &url, &data)).unwrap();
    l.track_feature("export");
    let CheckInOutcome::NoAnswer { retry, .. } = block_on(l.check_in_now()) else { panic!() };
    assert!(retry <= Duration::from_secs(30), "a 4xx is a transport failure: retried soon ({retry:?})");
    let first = pending_batch(&data).expect("the batch is kept");
    let CheckInOutcome::NoAnswer { retry, .. } = block_on(l.check_in_now()) else { panic!() };
    assert!(retry <= Duration::from_secs(60), "{retry:?}");
    assert_eq!(pending_batch(&data), Some(first.clone()), "the same batch, same id, is retried");
    assert_eq!(requests.load(Ordering::SeqCst), 2);
    l.shutdown();
    let l = Licensing::start(config(&h, &key, &h.base, &data)).unwrap();
    assert!(matches!(block_on(l.check_in_now()), CheckInOutcome::Answered { batch_acknowledged: true, .. }));
    l.shutdown();
    let ledger = LocalStore::open(&data).unwrap().ledger().unwrap();
    assert_eq!(ledger[0].batch_id, first);
    assert!(ledger[0].payload.contains("\"export\""));
}

/// A check-in with telemetry travels gzipped; a server from before compression refuses the
/// encoding (415 `unsupported_encoding`) and gets the same bytes again as is, at once.
#[test]
fn telemetry_travels_gzipped_and_an_older_server_gets_it_plain() {
    let h = Harness::start(Db::Sqlite).unwrap();
    let data = h.dir.path().join("client");
    let key = h.license(Tier::Pro, 1);
    // Each request's encoding and (inflated) body.
    type Log = Arc<Mutex<Vec<(Option<String>, Vec<u8>)>>>;
    let seen: Log = Arc::default();
    let log = seen.clone();
    let (url, requests) = fake_server(move |request, stream| {
        log.lock().unwrap().push((request.encoding.clone(), request.body.clone()));
        if request.encoding.is_some() {
            let body = br#"{"error":{"code":"unsupported_encoding","message":"not here"}}"#;
            respond(
                stream,
                "415 Unsupported Media Type",
                &[("content-type", "application/json".into())],
                body,
            );
        } else {
            respond(stream, "503 Service Unavailable", &[], b"");
        }
    });
    let l = Licensing::start(config(&h, &key, &url, &data)).unwrap();
    for i in 0..40 {
        l.track_feature(&format!("feature_{i}"));
    }
    assert!(matches!(block_on(l.check_in_now()), CheckInOutcome::NoAnswer { .. }));
    l.shutdown();
    assert_eq!(requests.load(Ordering::SeqCst), 2);
    let seen = seen.lock().unwrap();
    assert_eq!(seen[0].0.as_deref(), Some("gzip"));
    assert_eq!(seen[1].0, None);
    assert_eq!(seen[0].1, seen[1].1, "the same bytes, compressed and not");
    let sent: serde_json::Value = serde_json::from_slice(&seen[1].1).unwrap();
    assert_eq!(sent["telemetry"]["usage"].as_array().unwrap().len(), 40);

    // The real server takes it gzipped, and acknowledges the digest of the bytes before
    // compression.
    let l = Licensing::start(config(&h, &key, &h.base, &data)).unwrap();
    assert!(matches!(block_on(l.check_in_now()), CheckInOutcome::Answered { batch_acknowledged: true, .. }));
    l.shutdown();
}

#[test]
fn a_huge_answer_is_cut_off() {
    let h = Harness::start(Db::Sqlite).unwrap();
    let key = h.license(Tier::Pro, 1);
    // Announced as 2 GiB.
    let (announced, _) = fake_server(|_, stream| {
        let _ = stream.write_all(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2147483648\r\n\r\n",
        );
        let _ = stream.write_all(&vec![b' '; 1 << 20]);
    });
    // Not announced: streamed until the client stops reading.
    let written = Arc::new(AtomicUsize::new(0));
    let counter = written.clone();
    let finished = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let done = finished.clone();
    let (streamed, _) = fake_server(move |_, stream| {
        let _ = stream
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: close\r\n\r\n");
        let chunk = vec![b' '; 64 * 1024];
        for _ in 0..(256 << 20) / chunk.len() {
            if stream.write_all(&chunk).is_err() {
                break;
            }
            counter.fetch_add(chunk.len(), Ordering::SeqCst);
        }
        done.store(true, Ordering::SeqCst);
    });
    for (n, url) in [announced, streamed].iter().enumerate() {
        let data = h.dir.path().join(format!("client-{n}"));
        let l = Licensing::start(config(&h, &key, url, &data)).unwrap();
        let CheckInOutcome::NoAnswer { error, .. } = block_on(l.check_in_now()) else { panic!() };
        assert!(error.contains("larger than 65536 bytes"), "{error}");
        l.shutdown();
    }
    // The streaming server stops once its writes fail (the client closed the connection), or
    // after writing all 256 MiB if the client read on.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !finished.load(Ordering::SeqCst) {
        assert!(std::time::Instant::now() < deadline, "the streaming server never stopped");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(written.load(Ordering::SeqCst) < 64 << 20, "the client stopped reading early");
}

#[test]
fn a_redirect_is_never_followed() {
    let h = Harness::start(Db::Sqlite).unwrap();
    let data = h.dir.path().join("client");
    let key = h.license(Tier::Pro, 1);
    let (elsewhere, reached) = fake_server(|_, stream| respond(stream, "200 OK", &[], b"{}"));
    let target = format!("{elsewhere}/v1/check-ins");
    let (url, _) = fake_server(move |_, stream| {
        respond(stream, "307 Temporary Redirect", &[("location", target.clone())], b"");
    });
    let l = Licensing::start(config(&h, &key, &url, &data)).unwrap();
    let CheckInOutcome::NoAnswer { error, .. } = block_on(l.check_in_now()) else { panic!() };
    assert!(error.contains("307"), "{error}");
    l.shutdown();
    assert_eq!(reached.load(Ordering::SeqCst), 0, "the license key and telemetry went to another origin");
}

#[test]
fn plain_http_to_another_host_is_refused_at_start() {
    let h = Harness::start(Db::Sqlite).unwrap();
    let key = h.license(Tier::Pro, 1);
    let data = h.dir.path().join("client");
    for url in ["http://licensing.example.com", "http://licensing.example.com:8080/base"] {
        let err = Licensing::start(config(&h, &key, url, &data)).unwrap_err();
        assert!(matches!(err, StartError::BadServerUrl(_)), "{err}");
        assert!(err.to_string().contains("LICENSOR_ALLOW_INSECURE_HTTP"), "{err}");
    }
    // Loopback, https, or an explicit allowance start (no connection is made at start).
    for (url, allow) in [
        ("http://127.0.0.1:9", false),
        ("http://[::1]:9", false),
        ("http://localhost:9", false),
        ("https://licensing.example.com", false),
        ("http://licensing.example.com", true),
    ] {
        let mut c = config(&h, &key, url, &data);
        c.allow_insecure_http = allow;
        Licensing::start(c).unwrap_or_else(|e| panic!("{url}: {e}")).shutdown();
    }
    let vars = |allow: Option<&'static str>| {
        move |k: &str| match k {
            "LICENSOR_SERVER_URL" => Some("http://licensing.example.com".to_owned()),
            "LICENSOR_ALLOW_INSECURE_HTTP" => allow.map(str::to_owned),
            _ => None,
        }
    };
    let err = Config::from_vars(vars(None), "1.0").unwrap_err();
    assert!(err.to_string().contains("LICENSOR_ALLOW_INSECURE_HTTP=true"), "{err}");
    assert!(Config::from_vars(vars(Some("true")), "1.0").unwrap().allow_insecure_http);
}

#[test]
fn a_clock_mark_set_far_ahead_recovers_at_the_next_genuine_answer() {
    let h = Harness::start(Db::Sqlite).unwrap();
    let data = h.dir.path().join("client");
    let key = h.license(Tier::Community, 1);
    // The client's clock is its own; the server's runs 30 days ahead for one check-in (a
    // server whose clock went wrong, or a stolen lease key).
    let client_clock = Arc::new(Mutex::new(common::t0()));
    let mut c = config(&h, &key, &h.base, &data);
    let read = client_clock.clone();
    c.clock = Arc::new(move || *read.lock().unwrap());
    h.advance(Days::days(30));
    let l = Licensing::start(c.clone()).unwrap();
    assert!(matches!(block_on(l.check_in_now()), CheckInOutcome::Answered { .. }));
    assert!(
        matches!(l.status(), Status::Invalid { reason: InvalidReason::ClockSetBack { .. } }),
        "{:?}",
        l.status()
    );
    // The server's clock is put right; its next answer corrects the mark.
    *h.clock.lock().unwrap() = common::t0() + Days::minutes(1);
    *client_clock.lock().unwrap() = common::t0() + Days::minutes(1);
    assert!(matches!(
        block_on(l.check_in_now()),
        CheckInOutcome::Answered { status: CheckInStatus::Valid, .. }
    ));
    assert_eq!(l.status(), Status::Valid);
    l.shutdown();
    // And the correction is what a restart reads.
    let l = Licensing::start(c).unwrap();
    assert_eq!(l.status(), Status::Valid);
    l.shutdown();
}

#[test]
fn a_deployment_releases_its_own_seat_with_a_signed_receipt() {
    let h = Harness::start(Db::Sqlite).unwrap();
    let key = h.license(Tier::Pro, 1);
    let (a_data, b_data) = (h.dir.path().join("a"), h.dir.path().join("b"));
    let a = Licensing::start(config(&h, &key, &h.base, &a_data)).unwrap();
    // Another install (another URL): a second process of the same one would share its seat.
    let mut b_config = config(&h, &key, &h.base, &b_data);
    b_config.instance_url = Some("https://other.example.com".into());
    let b = Licensing::start(b_config).unwrap();
    // Nothing to release before the first check-in.
    assert!(matches!(block_on(a.deactivate()), Err(DeactivateError::NeverCheckedIn)));
    assert!(matches!(
        block_on(a.check_in_now()),
        CheckInOutcome::Answered { status: CheckInStatus::Valid, .. }
    ));
    let CheckInOutcome::Answered { status, .. } = block_on(b.check_in_now()) else { panic!() };
    assert_eq!(status, CheckInStatus::SeatLimitExceeded);

    // A forged receipt, and a genuine one replayed, change nothing.
    let (forger, _) = fake_server(|_, stream| {
        let body = br#"{"receipt":"RECEIPT1.e30.AAAA","released":true}"#;
        respond(stream, "200 OK", &[("content-type", "application/json".into())], body);
    });
    let forged = Licensing::start(config(&h, &key, &forger, &a_data)).unwrap();
    assert!(matches!(block_on(forged.deactivate()), Err(DeactivateError::BadReceipt(_))));
    assert_eq!(forged.status(), Status::Valid);
    forged.shutdown();

    let deactivated = block_on(a.deactivate()).unwrap();
    assert_eq!(deactivated.instance_id, a.instance_id().unwrap());
    let receipt = licensor::receipt::verify(&deactivated.receipt, &h.ring).unwrap();
    assert_eq!(receipt.action, licensor::receipt::Action::Deactivated);
    assert_eq!(a.status(), Status::Invalid { reason: InvalidReason::Deactivated });
    assert!(matches!(block_on(a.check_in_now()), CheckInOutcome::NotApplicable(_)));
    // The seat is free at once for another instance.
    let CheckInOutcome::Answered { status, .. } = block_on(b.check_in_now()) else { panic!() };
    assert_eq!(status, CheckInStatus::Valid);
    b.shutdown();

    let replayed = deactivated.receipt.clone();
    let (replayer, _) = fake_server(move |_, stream| {
        let body = serde_json::to_vec(&json!({ "receipt": replayed, "released": true })).unwrap();
        respond(stream, "200 OK", &[("content-type", "application/json".into())], &body);
    });
    // A fresh start of the same install (its lease was forgotten) checks in anew, then meets
    // the replay.
    let again = Licensing::start(config(&h, &key, &h.base, &a_data)).unwrap();
    assert!(matches!(block_on(again.check_in_now()), CheckInOutcome::Answered { .. }));
    again.shutdown();
    let replay = Licensing::start(config(&h, &key, &replayer, &a_data)).unwrap();
    let err = block_on(replay.deactivate()).unwrap_err();
    assert!(err.to_string().contains("binds another request"), "{err}");
    replay.shutdown();
}

#[test]
fn the_server_releases_only_on_a_lease_it_signed_for_that_instance() {
    let h = Harness::start(Db::Sqlite).unwrap();
    let key = h.license(Tier::Pro, 5);
    let other_key = h.license(Tier::Pro, 5);
    let lease_of = |key: &str, instance: &str| {
        h.check_in(key, instance, Some(&common::batch(uuid::Uuid::new_v4(), 1, 1, 0).to_string()))["lease"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let (mine, theirs) = (lease_of(&key, "mine"), lease_of(&other_key, "theirs"));
    let other_instance = lease_of(&key, "other");
    let try_release = |license_key: &str, lease: &str| {
        let body = json!({ "license_key": license_key, "instance_id": "mine", "nonce": common::nonce(), "lease": lease });
        h.post_json("/v1/deactivations", &body)
    };
    for (lease, code) in [
        (theirs.as_str(), "lease_mismatch"),
        (other_instance.as_str(), "lease_mismatch"),
        ("LEASE1.e30.AAAA", "invalid_lease"),
    ] {
        let (status, v) = try_release(&key, lease);
        assert_eq!((status, v["error"]["code"].as_str()), (400, Some(code)), "{v}");
    }
    let (status, v) = try_release("garbage", &mine);
    assert_eq!((status, v["error"]["code"].as_str()), (400, Some("invalid_license")), "{v}");
    assert_eq!(h.store.licenses_of_instance("mine").unwrap().len(), 1, "nothing was released");
    let (status, v) = try_release(&key, &mine);
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["released"], true);
    assert!(h.store.licenses_of_instance("mine").unwrap().is_empty());
    // A retry after a lost answer gets a receipt too.
    let (status, v) = try_release(&key, &mine);
    assert_eq!((status, v["released"].as_bool()), (200, Some(false)));
}

/// A lease signed by the real lease key may still carry a key the deployment must not use: one
/// of another license, an older one of its own, or one signed by a license key it does not
/// trust. Each is ignored, and the answer otherwise counts.
#[test]
fn a_delivered_key_counts_only_when_it_is_a_newer_key_of_the_same_license() {
    use licensor::keys::{Role, Signer};
    use licensor::license::{self, Changes, LicensePayload};
    let h = Harness::start(Db::Sqlite).unwrap();
    let t0 = h.now();
    let key = h.license(Tier::Community, 3);
    let payload: LicensePayload = license::verify(&key, &h.ring, t0).unwrap();
    let another = license::verify(&h.license(Tier::Community, 50), &h.ring, t0).unwrap();
    let renewed = |p: &LicensePayload, signer: &Signer, at| {
        license::renew(signer, p, Changes { seats: Some(50), ..Default::default() }, at).unwrap().key
    };
    let stranger = Signer::generate("stranger", Role::License).unwrap();
    let hostile = [
        ("another license", renewed(&another, &h.vendor, t0)),
        (
            "an older key",
            license::issue(
                &h.vendor,
                license::LicenseRequest {
                    licensee: payload.licensee.clone(),
                    tier: payload.tier,
                    expiry: license::Expiry::Perpetual,
                    not_before: None,
                    seats: 50,
                    features: vec![],
                    check_in_interval: None,
                },
                t0 - Days::days(30),
            )
            .map(|mut i| {
                // The same license id, issued before the deployment's key.
                i.payload.license_id = payload.license_id;
                licensor::token::sign(&i.payload, h.vendor.signing_key())
            })
            .unwrap(),
        ),
        ("an untrusted signer", renewed(&payload, &stranger, t0)),
    ];
    let lease_signer =
        Arc::new(Signer::load(&h.dir.path().join("keys/lease-test.lease.private.pem")).unwrap());
    for (what, delivered) in hostile {
        let data = h.dir.path().join(format!("client-{}", what.replace(' ', "-")));
        let (signer, delivered, license_id) = (lease_signer.clone(), delivered.clone(), payload.license_id);
        let (url, _) = fake_server(move |seen, stream| {
            let request: Value = serde_json::from_slice(&seen.body).unwrap();
            #[derive(serde::Deserialize)]
            struct Req<'a> {
                #[serde(borrow)]
                telemetry: &'a serde_json::value::RawValue,
            }
            let raw: Req = serde_json::from_slice(&seen.body).unwrap();
            let batch: Value = serde_json::from_str(raw.telemetry.get()).unwrap();
            let ack = licensor::protocol::TelemetryAck {
                batch_id: serde_json::from_value(batch["batch_id"].clone()).unwrap(),
                accepted: true,
                duplicate: false,
                digest: licensor::protocol::digest(raw.telemetry.get().as_bytes()),
            };
            let payload = licensor::lease::LeasePayload {
                v: 1,
                kid: String::new(),
                status: CheckInStatus::Valid,
                license_id,
                instance_id: request["instance_id"].as_str().unwrap().into(),
                nonce: request["nonce"].as_str().unwrap().into(),
                server_time: t0,
                next_check_in_at: t0 + Days::hours(24),
                valid_until: t0 + Days::days(8),
                telemetry: Some(ack.clone()),
                license_key: Some(delivered.clone()),
                notice: None,
            };
            let t = |d| licensor::time::format(&d);
            let body = json!({
                "status": "valid", "message": "ok", "license_id": license_id,
                "lease": licensor::lease::sign(&signer, payload),
                "next_check_in_at": t(t0 + Days::hours(24)), "valid_until": t(t0 + Days::days(8)),
                "server_time": t(t0), "telemetry": ack, "license_key": delivered,
            });
            respond(
                stream,
                "200 OK",
                &[("content-type", "application/json".into())],
                body.to_string().as_bytes(),
            );
        });
        let l = Licensing::start(config(&h, &key, &url, &data)).unwrap();
        l.track_feature("reports");
        let outcome = block_on(l.check_in_now());
        assert!(
            matches!(
                outcome,
                CheckInOutcome::Answered { status: CheckInStatus::Valid, batch_acknowledged: true, .. }
            ),
            "{what}: the rest of the answer counts: {outcome:?}"
        );
        assert_eq!(l.status(), Status::Valid, "{what}");
        let info = l.license().unwrap();
        assert_eq!((info.license_id, info.seats), (payload.license_id, 3), "{what}: the key in force stays");
        // The store keeps the key in force (recorded at start for the operator's commands), never
        // the key the answer delivered.
        let stored = LocalStore::open(&data).unwrap().state().unwrap().unwrap().license_key;
        assert_eq!(stored.as_deref(), Some(key.as_str()), "{what}");
        l.shutdown();
    }
}
