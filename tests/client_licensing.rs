//! The verifier as an application embeds it (`Licensing::start`), against a real server over
//! HTTP (in-process, with the test's clock shared by server and client), and against
//! listeners that count connections or never answer.

mod common;

use chrono::Duration as Days;
use std::io::Read as _;
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Db, Harness};
use licensor::client::licensing::CheckInOutcome;
use licensor::client::store::LocalStore;
use licensor::client::{Config, InvalidReason, Level, Licensing, Mode, Status};
use licensor::license::{Expiry, Tier};
use licensor::protocol::CheckInStatus;
use licensor::Verdict;

use common::{block_on, client_config as config};

/// A listener that counts the connections made to it and never answers any.
struct Silent {
    url: String,
    connections: Arc<AtomicUsize>,
}

fn silent_listener() -> Silent {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let connections = Arc::new(AtomicUsize::new(0));
    let counted = connections.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            counted.fetch_add(1, Ordering::SeqCst);
            // Read what comes and never answer.
            std::thread::spawn(move || {
                let mut stream = stream;
                let mut buf = [0u8; 4096];
                while matches!(stream.read(&mut buf), Ok(n) if n > 0) {}
            });
        }
    });
    Silent { url, connections }
}

#[derive(Debug)]
struct Oops(String);
impl std::fmt::Display for Oops {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for Oops {}

fn telemetry_sent_once_and_acknowledged(h: Harness) {
    let data = h.dir.path().join("client");
    let key = h.license(Tier::Community, 5);
    let l = Licensing::start(config(&h, &key, &data)).unwrap();
    assert_eq!(l.mode(), &Mode::FULL);
    assert!(matches!(l.status(), Status::Grace { .. }), "before the first check-in: {:?}", l.status());
    for _ in 0..3 {
        l.track_feature("export");
    }
    l.track_request("GET", "/items/{id}", 200, Duration::from_millis(12));
    l.track_request("GET", "/items/{id}", 503, Duration::from_millis(40));
    l.track_error(&Oops("mail to jane.doe@example.com failed".into()), "mail");
    l.start_session(Some("jane.doe@example.com")).end(h.now() + Days::minutes(5));

    let outcome = block_on(l.check_in_now());
    let CheckInOutcome::Answered { status, batch_acknowledged, .. } = outcome else { panic!("{outcome:?}") };
    assert_eq!((status, batch_acknowledged), (CheckInStatus::Valid, true));
    assert_eq!(l.status(), Status::Valid);
    let instance = l.instance_id().unwrap();
    let counts = h.store.telemetry_counts(&instance).unwrap();
    assert_eq!(counts["telemetry_batches"], 1);
    let license = h.store.licenses_of_instance(&instance).unwrap().remove(0);
    let summary = h.store.telemetry_summary(&license, &instance, h.now() - Days::hours(24), h.now()).unwrap();
    assert_eq!(summary.usage.len(), 1);
    assert_eq!((summary.usage[0].name.as_str(), summary.usage[0].count), ("export", 3));
    assert_eq!((summary.performance[0].count, summary.performance[0].errors), (2, 1));
    assert_eq!(summary.errors[0].message, "mail to [EMAIL] failed");
    assert_eq!(summary.sessions.count, 1);

    // The next check-in sends a new batch with only what was tracked since.
    l.track_feature("export");
    h.advance(Days::hours(1));
    assert!(matches!(block_on(l.check_in_now()), CheckInOutcome::Answered { batch_acknowledged: true, .. }));
    let license = h.store.licenses_of_instance(&instance).unwrap().remove(0);
    let summary = h.store.telemetry_summary(&license, &instance, h.now() - Days::hours(24), h.now()).unwrap();
    assert_eq!(summary.batches, 2);
    assert_eq!(summary.usage[0].count, 4, "each event counted once");
    l.shutdown();

    let store = LocalStore::open(&data).unwrap();
    assert_eq!(store.outbox().unwrap(), None);
    let ledger = store.ledger().unwrap();
    assert_eq!(ledger.len(), 2);
    // The ledger holds what the server stored, byte for byte: the digests agree.
    assert!(ledger[1].payload.contains("\"export\""));
    assert_eq!(ledger[1].digest, licensor::protocol::digest(ledger[1].payload.as_bytes()));
}

fn restart_offline_on_the_cached_lease_then_grace_then_invalid_then_clock_set_back(mut h: Harness) {
    let data = h.dir.path().join("client");
    let key = h.license(Tier::Community, 5);
    let first = Licensing::start(config(&h, &key, &data)).unwrap();
    assert!(matches!(block_on(first.check_in_now()), CheckInOutcome::Answered { .. }));
    let instance = first.instance_id();
    first.shutdown();
    h.stop_server();

    // A restart needs no network: the lease comes from the store and verifies offline.
    let l = Licensing::start(config(&h, &key, &data)).unwrap();
    assert_eq!(l.instance_id(), instance);
    assert_eq!(l.status(), Status::Valid);
    let CheckInOutcome::NoAnswer { .. } = block_on(l.check_in_now()) else { panic!("the server is down") };
    assert_eq!(l.status(), Status::Valid, "a failed check-in changes nothing while the lease is current");

    // Community: check in every 24 hours, 7 days of grace.
    h.advance(Days::hours(25));
    let Status::Grace { until } = l.status() else { panic!("{:?}", l.status()) };
    assert_eq!(until, common::t0() + Days::hours(24) + Days::days(7));
    h.advance(Days::days(7));
    assert_eq!(l.status(), Status::Invalid { reason: InvalidReason::LeaseExpired { at: until } });

    // The clock set back before the last server time seen: reported, not silently valid.
    *h.clock.lock().unwrap() = common::t0() - Days::hours(2);
    let Status::Invalid { reason: InvalidReason::ClockSetBack { server, .. } } = l.status() else {
        panic!("{:?}", l.status())
    };
    assert_eq!(server, common::t0());
    l.shutdown();
}

fn community_with_telemetry_disabled_still_sends(h: Harness) {
    let key = h.license(Tier::Community, 5);
    let vars = [("TELEMETRY_DISABLED", "true"), ("DO_NOT_TRACK", "1")];
    let mut c =
        Config::from_vars(|k| vars.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string()), "1.0").unwrap();
    let base = config(&h, &key, &h.dir.path().join("client"));
    c.license = base.license.clone();
    c.keys = base.keys.clone();
    c.server_url = base.server_url.clone();
    c.instance_url = base.instance_url.clone();
    c.data_dir = base.data_dir.clone();
    c.clock = base.clock.clone();
    c.first_check_in_after = base.first_check_in_after;
    let l = Licensing::start(c).unwrap();
    assert_eq!(l.mode(), &Mode::FULL);
    assert!(
        l.notices().iter().any(|n| n.contains("is not honoured on the community tier")),
        "{:?}",
        l.notices()
    );
    l.track_feature("export");
    let outcome = block_on(l.check_in_now());
    assert!(
        matches!(
            outcome,
            CheckInOutcome::Answered { status: CheckInStatus::Valid, batch_acknowledged: true, .. }
        ),
        "{outcome:?}"
    );
    l.shutdown();
}

fn a_revoked_license_turns_invalid_at_the_next_check_in(h: Harness) {
    let key = h.license(Tier::Pro, 5);
    let l = Licensing::start(config(&h, &key, &h.dir.path().join("client"))).unwrap();
    assert!(matches!(
        block_on(l.check_in_now()),
        CheckInOutcome::Answered { status: CheckInStatus::Valid, .. }
    ));
    assert!(l.has_feature("reports"));
    let id = l.license().unwrap().license_id;
    let (code, _) = h.admin(
        reqwest::Method::POST,
        &format!("/v1/admin/licenses/{id}/revoke"),
        Some(&serde_json::json!({"reason": "unpaid"})),
    );
    assert_eq!(code, 200);
    let outcome = block_on(l.check_in_now());
    assert!(
        matches!(outcome, CheckInOutcome::Answered { status: CheckInStatus::Revoked, .. }),
        "{outcome:?}"
    );
    assert_eq!(l.status(), Status::Invalid { reason: InvalidReason::Refused(CheckInStatus::Revoked) });
    assert!(!l.has_feature("reports"));
    l.shutdown();
}

on_both_backends!(
    telemetry_sent_once_and_acknowledged,
    restart_offline_on_the_cached_lease_then_grace_then_invalid_then_clock_set_back,
    community_with_telemetry_disabled_still_sends,
    a_revoked_license_turns_invalid_at_the_next_check_in,
);

#[test]
fn the_first_check_in_happens_by_itself_shortly_after_start() {
    let h = Harness::start(Db::Sqlite).unwrap();
    let key = h.license(Tier::Community, 5);
    let mut c = config(&h, &key, &h.dir.path().join("client"));
    c.first_check_in_after = Duration::from_millis(200);
    let l = Licensing::start(c).unwrap();
    l.track_feature("scheduled");
    let instance = l.instance_id().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    // The server stores the batch before the client has read and verified its answer: wait
    // for both.
    while h.store.telemetry_counts(&instance).unwrap()["telemetry_batches"] == 0
        || l.status() != Status::Valid
    {
        assert!(Instant::now() < deadline, "no verified check-in within 20 s: {:?}", l.status());
        std::thread::sleep(Duration::from_millis(100));
    }
    l.shutdown();
}

#[test]
fn enterprise_air_gap_makes_no_connection_and_enforces_expiry_offline() {
    let h = Harness::start(Db::Sqlite).unwrap();
    let silent = silent_listener();
    let key = h.license_with(Tier::Enterprise, 5, |r| r.expiry = Expiry::At(common::t0() + Days::days(30)));
    let mut c = config(&h, &key, &h.dir.path().join("client"));
    c.server_url = Some(silent.url.clone());
    c.switches.telemetry_disabled = true;
    c.first_check_in_after = Duration::from_millis(1);
    c.health_every = Duration::from_millis(20);
    let l = Licensing::start(c).unwrap();
    assert_eq!(l.mode(), &Mode::AirGapped { level: Level::Full });
    assert_eq!(l.status(), Status::Valid);
    // The worker's health loop counts its runs: the signal that the worker is running, long
    // past the moment its first check-in would have been due.
    let runs = Arc::new(AtomicUsize::new(0));
    let counted = runs.clone();
    l.register_health_check("ticks", move || {
        counted.fetch_add(1, Ordering::SeqCst);
        licensor::protocol::Health::Healthy
    });
    l.track_feature("export");
    l.track_request("GET", "/", 200, Duration::from_millis(1));
    assert!(matches!(block_on(l.check_in_now()), CheckInOutcome::NotApplicable(_)));
    let deadline = Instant::now() + Duration::from_secs(20);
    while runs.load(Ordering::SeqCst) < 5 {
        assert!(Instant::now() < deadline, "the worker's health loop never ran");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(silent.connections.load(Ordering::SeqCst), 0, "air-gapped means no connection at all");
    h.advance(Days::days(31));
    assert_eq!(l.status(), Status::Invalid { reason: InvalidReason::License(Verdict::Expired) });
    l.shutdown();
    // The figures stay on this machine, for a signed usage report carried by hand.
    let store = LocalStore::open(&h.dir.path().join("client")).unwrap();
    let export = store.export().unwrap();
    assert_eq!(
        export.events.iter().map(|e| (e.name.as_str(), e.count, e.batch_id.as_str())).collect::<Vec<_>>(),
        [("export", 1, "")]
    );
    assert_eq!(store.outbox().unwrap(), None);
}

/// Air-gapped at the basic level (`disable --level basic`): nothing is collected, the signed
/// report carries the environment alone, and the server imports it; a receipt goes only to the
/// report it answers, and a deployment that checks in has no signed reports at all.
#[test]
fn an_air_gapped_basic_report_carries_health_only_and_its_receipt_applies_once() {
    let h = Harness::start(Db::Sqlite).unwrap();
    let key = h.license(Tier::Enterprise, 5);
    let data = h.dir.path().join("client");
    let mut c = config(&h, &key, &data);
    c.switches.choice = Some(licensor::client::Choice::DisabledBasic);
    let l = Licensing::start(c).unwrap();
    assert_eq!(l.mode(), &Mode::AirGapped { level: Level::Basic });
    l.track_feature("export");
    let report = l.export_usage_report().unwrap();
    let signed = licensor::usage_report::read_report(&report.text).unwrap();
    assert_eq!(signed.body.level, licensor::usage_report::ReportLevel::Basic);
    let batch: serde_json::Value = serde_json::from_str(signed.body.telemetry.get()).unwrap();
    assert_eq!(batch["usage"], serde_json::json!([]), "nothing is collected at the basic level");
    assert_eq!(batch["environment"]["os"], std::env::consts::OS);
    // The install key is the one made at the first start: the same in the next report.
    assert_eq!(signed.body.install_key, {
        let key = LocalStore::open(&data).unwrap().install_key().unwrap();
        licensor::usage_report::encode_install_key(&key.verifying_key())
    });
    let response = h
        .http
        .post(h.url("/v1/admin/usage-imports"))
        .bearer_auth(common::ADMIN_TOKEN)
        .header("content-type", "application/json")
        .body(report.text.clone())
        .send()
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let receipt = response.text().unwrap();
    // Truncated, and signed by a server this deployment does not trust: refused, nothing changes.
    let err = l.import_usage_receipt(&receipt[..receipt.len() - 20]).unwrap_err().to_string();
    assert!(err.contains("is not complete JSON"), "{err}");
    let stranger = licensor::Signer::generate("lease-stranger", licensor::keys::Role::Lease).unwrap();
    let file = licensor::usage_report::read_receipt(&receipt).unwrap();
    let mut forged = licensor::receipt::verify(&file.receipt, &h.ring).unwrap();
    forged.kid = "lease-stranger".into();
    let forged =
        licensor::usage_report::write_receipt(licensor::receipt::sign(&stranger, forged), file.lease.clone());
    let err = l.import_usage_receipt(&forged).unwrap_err().to_string();
    assert!(
        err.contains(
            "the RECEIPT1. token in the receipt file does not verify against this deployment's trusted keys"
        ),
        "{err}"
    );
    assert_eq!(LocalStore::open(&data).unwrap().report_chain().unwrap().sequence, 0);
    // The outbox cleared while the report was out: the ledger keeps the bytes the report carried.
    LocalStore::open(&data).unwrap().clear(false).unwrap();
    match l.import_usage_receipt(&receipt).unwrap() {
        licensor::client::ReceiptOutcome::Applied {
            sequence: 1,
            status: CheckInStatus::Valid,
            accepted: true,
            duplicate: false,
            renewed: None,
        } => {}
        other => panic!("{other:?}"),
    }
    let ledger = LocalStore::open(&data).unwrap().ledger().unwrap();
    assert_eq!(ledger.len(), 1);
    assert_eq!(ledger[0].payload, signed.body.telemetry.get());
    assert_eq!(
        l.import_usage_receipt(&receipt).unwrap(),
        licensor::client::ReceiptOutcome::AlreadyApplied { sequence: 1 }
    );
    let next = l.export_usage_report().unwrap();
    assert_eq!((next.sequence, next.again), (2, false));
    // The local dashboard says where the chain stands.
    let page = licensor::client::dashboard::render(&l.dashboard().unwrap());
    assert!(
        page.contains("Signed usage reports: 1 acknowledged by the vendor; report 2 exported and waiting for its receipt."),
        "{page}"
    );
    // The receipt of report 1 is no receipt for report 2.
    let err = l.import_usage_receipt(&receipt).unwrap_err().to_string();
    assert!(err.contains("acknowledges report 1") && err.contains("not report 2"), "{err}");
    l.shutdown();

    // A deployment that checks in has no signed reports.
    let connected =
        Licensing::start(config(&h, &h.license(Tier::Enterprise, 5), &h.dir.path().join("online"))).unwrap();
    let err = connected.export_usage_report().unwrap_err().to_string();
    assert!(err.contains("for air-gapped Enterprise deployments"), "{err}");
    connected.shutdown();
}

#[test]
fn a_server_that_never_answers_slows_neither_tracking_nor_shutdown() {
    let h = Harness::start(Db::Sqlite).unwrap();
    let silent = silent_listener();
    let key = h.license(Tier::Community, 5);
    let data = h.dir.path().join("client");
    let mut c = config(&h, &key, &data);
    c.server_url = Some(silent.url.clone());
    c.first_check_in_after = Duration::from_millis(1);
    let l = Licensing::start(c).unwrap();
    // The background check-in is now waiting on the silent server.
    let deadline = Instant::now() + Duration::from_secs(10);
    while silent.connections.load(Ordering::SeqCst) == 0 {
        assert!(Instant::now() < deadline, "the check-in never connected");
        std::thread::sleep(Duration::from_millis(20));
    }
    for _ in 0..100_000 {
        l.track_feature("while-waiting");
    }
    // The first grace: one Community interval, a day.
    assert_eq!(l.status(), Status::Grace { until: common::t0() + Days::days(1) });
    let started = Instant::now();
    l.shutdown();
    let took = started.elapsed();
    assert!(took < Duration::from_secs(1), "shutdown took {took:?}");
    // What was tracked reached the store, and the unsent batch waits in the outbox.
    let store = LocalStore::open(&data).unwrap();
    let export = store.export().unwrap();
    let outbox = export.outbox.expect("the batch in flight stays in the outbox");
    let unsent: i64 = export.events.iter().filter(|e| e.batch_id.is_empty()).map(|e| e.count).sum();
    assert_eq!(unsent, 100_000);
    assert_eq!(outbox.attempts, 1);
}

#[test]
fn debug_mode_prints_instead_of_sending() {
    let h = Harness::start(Db::Sqlite).unwrap();
    let silent = silent_listener();
    let key = h.license(Tier::Pro, 5);
    let mut c = config(&h, &key, &h.dir.path().join("client"));
    c.server_url = Some(silent.url.clone());
    c.switches.debug = true;
    let l = Licensing::start(c).unwrap();
    assert_eq!(l.mode(), &Mode::Telemetry { debug: true, level: licensor::client::Level::Full });
    l.track_feature("export");
    // The check-in has returned: whatever it would have sent was sent by then.
    assert_eq!(block_on(l.check_in_now()), CheckInOutcome::Printed);
    assert_eq!(silent.connections.load(Ordering::SeqCst), 0);
    l.shutdown();
}

#[test]
fn start_up_errors_are_specific() {
    let h = Harness::start(Db::Sqlite).unwrap();
    let key = h.license(Tier::Community, 5);
    let mut c = config(&h, &key, &h.dir.path().join("client"));
    c.server_url = None;
    let e = Licensing::start(c).unwrap_err();
    assert_eq!(e.to_string(), "the community tier checks in with a license server: set LICENSOR_SERVER_URL");

    let mut c = config(&h, &key, &h.dir.path().join("client"));
    c.license = None;
    assert_eq!(
        Licensing::start(c).unwrap_err().to_string(),
        "no license: set LICENSOR_LICENSE_KEY or LICENSOR_LICENSE_FILE"
    );

    let e = Config::from_vars(|k| (k == "TELEMETRY_DISABLED").then(|| "maybe".to_string()), "1").unwrap_err();
    assert!(e.to_string().contains("TELEMETRY_DISABLED=\"maybe\" is not a boolean"), "{e}");
    let e =
        Config::from_vars(|k| (k == "LICENSOR_SERVER_URL").then(|| "ftp://x".to_string()), "1").unwrap_err();
    assert!(e.to_string().contains("must be an http:// or https:// URL"), "{e}");
    let e = Config::from_vars(
        |k| (k == "LICENSOR_PUBLIC_INSIGHTS_URL").then(|| "vendor.example".to_string()),
        "1",
    )
    .unwrap_err();
    assert!(e.to_string().contains("LICENSOR_PUBLIC_INSIGHTS_URL=\"vendor.example\" must be an http"), "{e}");

    // A forged key is not a start-up error: the application starts and is told.
    let forged = format!("{}x", &key[..key.len() - 1]);
    let l = Licensing::start(config(&h, &forged, &h.dir.path().join("forged"))).unwrap();
    assert!(matches!(l.status(), Status::Invalid { reason: InvalidReason::License(_) }), "{:?}", l.status());
    assert!(!l.has_feature("reports"));
    assert!(l.license().is_none());
}

#[test]
fn health_checks_run_on_their_schedule_and_a_panic_counts_as_unhealthy() {
    let h = Harness::start(Db::Sqlite).unwrap();
    let key = h.license(Tier::Community, 5);
    let data = h.dir.path().join("client");
    let mut c = config(&h, &key, &data);
    c.health_every = Duration::from_millis(100);
    let l = Licensing::start(c).unwrap();
    let runs = Arc::new(AtomicUsize::new(0));
    let (database, mail) = (runs.clone(), runs.clone());
    l.register_health_check("database", move || {
        database.fetch_add(1, Ordering::SeqCst);
        licensor::protocol::Health::Degraded
    });
    l.register_health_check("mail", move || {
        mail.fetch_add(1, Ordering::SeqCst);
        panic!("the check itself fails")
    });
    // Both checks ran at least twice on their schedule (the panicking one did not stop it).
    let deadline = Instant::now() + Duration::from_secs(20);
    while runs.load(Ordering::SeqCst) < 4 {
        assert!(Instant::now() < deadline, "the health checks did not run on their schedule");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(matches!(block_on(l.check_in_now()), CheckInOutcome::Answered { batch_acknowledged: true, .. }));
    l.shutdown();
    let ledger = LocalStore::open(&data).unwrap().ledger().unwrap();
    let batch: serde_json::Value = serde_json::from_str(&ledger[0].payload).unwrap();
    assert_eq!(
        batch["environment"]["health"],
        serde_json::json!({"database": "degraded", "mail": "unhealthy"})
    );
}

#[test]
fn sampling_keeps_what_it_should_and_counts_the_rest() {
    use licensor::client::telemetry::{Limits, Sampling, Telemetry};
    let now = common::t0();
    let throttled = Telemetry::with_sampling(&Limits::default(), Sampling::Throttled { per_minute: 2 });
    for i in 0..5 {
        throttled.track_error_parts::<&str>("db", &format!("timeout {i}"), &[], now);
    }
    // The next minute has its own allowance.
    throttled.track_error_parts::<&str>("db", "timeout 9", &[], now + Days::minutes(1));
    let flush = throttled.drain();
    assert_eq!(flush.errors.iter().map(|e| e.count).sum::<u64>(), 3);
    assert_eq!((flush.dropped.throttled, flush.dropped.sampled), (3, 0));

    let none = Telemetry::with_sampling(&Limits::default(), Sampling::Probabilistic(0.0));
    let all = Telemetry::with_sampling(&Limits::default(), Sampling::Probabilistic(1.0));
    for _ in 0..10 {
        none.track_error_parts::<&str>("db", "timeout", &[], now);
        all.track_error_parts::<&str>("db", "timeout", &[], now);
    }
    assert_eq!((none.drain().dropped.sampled, all.drain().dropped.sampled), (10, 0));
    let half = Telemetry::with_sampling(&Limits::default(), Sampling::Probabilistic(0.5));
    for _ in 0..10_000 {
        half.track_error_parts::<&str>("db", "timeout", &[], now);
    }
    let flush = half.drain();
    let kept = flush.errors.iter().map(|e| e.count).sum::<u64>();
    assert_eq!(kept + flush.dropped.sampled, 10_000);
    assert!((4_000..6_000).contains(&kept), "{kept} of 10,000 kept at p = 0.5");
}

fn renew(h: &Harness, license_id: uuid::Uuid, body: serde_json::Value) -> String {
    let (status, answer) =
        h.admin(reqwest::Method::PATCH, &format!("/v1/admin/licenses/{license_id}"), Some(&body));
    assert_eq!(status, 200, "{answer}");
    answer["license_key"].as_str().unwrap().to_owned()
}

/// The vendor renews and adds a feature; the deployment receives the new key in its next
/// check-in, uses it at once (expiry, seats, features) and keeps it across a restart, while
/// its configuration still names the old key.
#[test]
fn a_renewed_key_is_adopted_at_the_next_check_in_and_kept_across_restarts() {
    let h = Harness::start(Db::Sqlite).unwrap();
    let t0 = h.now();
    let old = h.license_with(Tier::Community, 2, |r| r.expiry = Expiry::At(t0 + Days::days(3)));
    let data = h.dir.path().join("client");
    let l = Licensing::start(config(&h, &old, &data)).unwrap();
    l.track_feature("reports");
    assert!(matches!(
        block_on(l.check_in_now()),
        CheckInOutcome::Answered { status: CheckInStatus::Valid, .. }
    ));
    let license_id = l.license().unwrap().license_id;
    let new_expiry = t0 + Days::days(400);
    let new_key = renew(
        &h,
        license_id,
        serde_json::json!({ "expires_at": licensor::time::format(&new_expiry), "seats": 7,
                            "features": ["reports", "export"] }),
    );
    assert!(!l.has_feature("export"), "not before the deployment has the key");
    assert!(matches!(
        block_on(l.check_in_now()),
        CheckInOutcome::Answered { status: CheckInStatus::Valid, .. }
    ));
    let info = l.license().unwrap();
    assert_eq!((info.license_id, info.seats, info.expires_at), (license_id, 7, Some(new_expiry)));
    assert!(l.has_feature("export"));
    assert_eq!(
        LocalStore::open(&data).unwrap().state().unwrap().unwrap().license_key.as_deref(),
        Some(&*new_key)
    );
    // The next check-in presents the new key, and nothing more is delivered.
    assert!(matches!(
        block_on(l.check_in_now()),
        CheckInOutcome::Answered { status: CheckInStatus::Valid, .. }
    ));
    let last = h.store.check_ins_of(&l.instance_id().unwrap()).unwrap();
    assert_eq!(last.len(), 3);
    l.shutdown();

    // Past the old key's expiry, restarted with the old key still configured: the renewal
    // stands (the old key alone would be invalid now).
    h.advance(Days::days(5));
    let l = Licensing::start(config(&h, &old, &data)).unwrap();
    assert_eq!(l.license().unwrap().expires_at, Some(new_expiry));
    assert!(!matches!(l.status(), Status::Invalid { .. }), "{:?}", l.status());
    assert!(l.has_feature("export"));
    l.shutdown();

    // A key the customer pastes that is newer than the stored renewal wins over it.
    let newest = renew(&h, license_id, serde_json::json!({ "seats": 9 }));
    let l = Licensing::start(config(&h, &newest, &data)).unwrap();
    assert_eq!(l.license().unwrap().seats, 9);
    l.shutdown();
}

/// A deployment whose license expired before it restarted still checks in, which is how its
/// renewal reaches it.
#[test]
fn an_expired_deployment_receives_its_renewal() {
    let h = Harness::start(Db::Sqlite).unwrap();
    let t0 = h.now();
    let old = h.license_with(Tier::Community, 1, |r| r.expiry = Expiry::At(t0 + Days::days(1)));
    h.advance(Days::days(2));
    let l = Licensing::start(config(&h, &old, &h.dir.path().join("client"))).unwrap();
    assert_eq!(l.mode(), &Mode::FULL);
    assert_eq!(l.status(), Status::Invalid { reason: InvalidReason::License(Verdict::Expired) });
    assert!(matches!(
        block_on(l.check_in_now()),
        CheckInOutcome::Answered { status: CheckInStatus::Expired, .. }
    ));
    renew(&h, l.license().unwrap().license_id, serde_json::json!({ "perpetual": true }));
    assert_eq!(l.status(), Status::Invalid { reason: InvalidReason::License(Verdict::Expired) });
    assert!(matches!(
        block_on(l.check_in_now()),
        CheckInOutcome::Answered { status: CheckInStatus::Valid, .. }
    ));
    assert_eq!(l.status(), Status::Valid);
    assert_eq!(l.license().unwrap().expires_at, None);
    l.shutdown();
}

/// Start-up's notices reach stderr once each without any tracing subscriber, unless the host
/// turns that off (it has them on the handle either way). The test runs itself again as a
/// child process, whose stderr it reads.
#[test]
fn start_up_notices_are_printed_once_unless_the_host_says_otherwise() {
    const NAME: &str = "start_up_notices_are_printed_once_unless_the_host_says_otherwise";
    if let Ok(print) = std::env::var("LICENSOR_TEST_NOTICE_CHILD") {
        let h = Harness::start(Db::Sqlite).unwrap();
        let key = h.license(Tier::Community, 1);
        let dir = tempfile::TempDir::new().unwrap();
        let mut c = config(&h, &key, dir.path());
        c.switches.telemetry_disabled = true;
        c.print_notices = print == "1";
        let l = Licensing::start(c).unwrap();
        assert!(
            l.notices().iter().any(|n| n.contains("TELEMETRY_DISABLED=true is not honoured")),
            "{:?}",
            l.notices()
        );
        l.shutdown();
        return;
    }
    for (print, expected) in [("1", 1), ("0", 0)] {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", NAME, "--nocapture", "--test-threads=1"])
            .env("LICENSOR_TEST_NOTICE_CHILD", print)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        assert!(String::from_utf8_lossy(&out.stdout).contains("1 passed"), "the child ran the test");
        let said = "licensor: TELEMETRY_DISABLED=true is not honoured on the community tier";
        assert_eq!(stderr.matches(said).count(), expected, "print_notices = {print}: {stderr}");
    }
}

/// The host's executor never runs the client's store work: a check-in asked for from a
/// single-threaded runtime, while another process holds the local store's write lock for
/// 600 ms, waits for it without stalling the runtime's other tasks; and `shutdown`, called from
/// async code as the host does after its server stops, releases the process without needing a
/// runtime of its own on that thread.
#[test]
fn the_hosts_executor_never_waits_on_the_store() {
    use diesel::connection::SimpleConnection as _;
    use diesel::Connection as _;
    let Some(h) = Harness::start(Db::Sqlite) else { return };
    let key = h.license(Tier::Pro, 1);
    let data = h.dir.path().join("host");
    let l = Licensing::start(config(&h, &key, &data)).unwrap();
    assert!(matches!(
        block_on(l.check_in_now()),
        CheckInOutcome::Answered { status: CheckInStatus::Valid, .. }
    ));
    l.track_feature("export");

    let path = data.join(licensor::client::store::FILE_NAME);
    let mut other = diesel::SqliteConnection::establish(path.to_str().unwrap()).unwrap();
    other.batch_execute("BEGIN IMMEDIATE").unwrap();
    let holder = std::thread::spawn(move || {
        // Another process of the host, holding the store's write lock for a while.
        std::thread::sleep(Duration::from_millis(600));
        other.batch_execute("COMMIT").unwrap();
    });
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let longest = Arc::new(std::sync::Mutex::new(Duration::ZERO));
    let (outcome, waited) = runtime.block_on(async {
        let gaps = longest.clone();
        let ticker = tokio::spawn(async move {
            let mut last = Instant::now();
            loop {
                tokio::time::sleep(Duration::from_millis(5)).await;
                let mut longest = gaps.lock().unwrap();
                *longest = (*longest).max(last.elapsed());
                last = Instant::now();
            }
        });
        // The ticker runs before the check-in starts, and once more after it ends.
        tokio::time::sleep(Duration::from_millis(20)).await;
        let started = Instant::now();
        let outcome = l.check_in_now().await;
        let waited = started.elapsed();
        tokio::time::sleep(Duration::from_millis(20)).await;
        ticker.abort();
        // Called as a host calls it once its server has stopped: from async code.
        l.shutdown();
        (outcome, waited)
    });
    holder.join().unwrap();
    assert!(matches!(outcome, CheckInOutcome::Answered { status: CheckInStatus::Valid, .. }), "{outcome:?}");
    assert!(waited >= Duration::from_millis(500), "the check-in waited for the lock: {waited:?}");
    let longest = *longest.lock().unwrap();
    assert!(longest < Duration::from_millis(200), "the host's runtime stalled for {longest:?}");
    assert!(h.instances_of(&key).is_empty(), "shutdown released the process");
}
