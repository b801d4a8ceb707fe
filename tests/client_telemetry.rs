//! Assembling a batch from what an instance tracked: exact figures, deduplicated errors,
//! sessions, drop and redaction counts, and nothing personal in the payload.

use chrono::{Duration, TimeZone as _, Utc};
use licensor::client::telemetry::{Limits, Telemetry};
use licensor::protocol::{self, BatchLimits, Environment, SyncStatus, UsageKind, UserCountRange};

fn environment() -> Environment {
    Environment {
        app_version: "1.4.2".into(),
        os: "linux".into(),
        arch: "x86_64".into(),
        user_count_range: UserCountRange::of(23),
        modules_enabled: vec!["signatures".into()],
        uptime_hours: 3.5,
        last_sync_status: SyncStatus::Success,
        health: Default::default(),
    }
}

#[derive(Debug)]
struct Failure(String, Option<Box<Failure>>);
impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for Failure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.1.as_deref().map(|e| e as _)
    }
}

#[test]
fn a_batch_carries_exactly_what_was_tracked_and_nothing_personal() {
    let t0 = Utc.with_ymd_and_hms(2026, 11, 21, 9, 30, 0).unwrap();
    let telemetry = Telemetry::new(&Limits::default());
    for _ in 0..3 {
        telemetry.counters.track_feature("export_pdf");
    }
    telemetry.counters.track_ui_action("clicked for jane.doe@example.com");
    telemetry.requests.track_request("GET", "/api/items/{id}", 200, std::time::Duration::from_millis(12));
    telemetry.requests.track_request("GET", "/api/items/{id}", 503, std::time::Duration::from_millis(40));
    for (i, when) in [(7, t0), (8, t0 + Duration::minutes(5))] {
        let error = Failure(
            format!("query {i} for jane.doe@example.com timed out"),
            Some(Box::new(Failure("pool exhausted at /home/jsmith/app/db.rs:42".into(), None))),
        );
        telemetry.track_error(&error, "database", when);
    }
    telemetry.track_error_parts("mail", "smtp refused", &["at mail::send (/srv/app/mail.rs:9)"], t0);
    telemetry.start_session(t0).end(t0 + Duration::minutes(30));
    // A session dropped without `end` ends then, by the system clock.
    let dropped_at = Utc::now();
    drop(telemetry.start_session(dropped_at));

    let id = uuid::Uuid::new_v4();
    let batch = telemetry.take_batch(id, (t0 - Duration::hours(24), t0), environment());
    assert_eq!(batch.schema, 1);
    assert_eq!(batch.batch_id, id);
    // The UI action's name carries an address: it is dropped and counted, never renamed.
    assert_eq!(batch.usage.len(), 1);
    assert_eq!(
        (batch.usage[0].kind, batch.usage[0].name.as_str(), batch.usage[0].count),
        (UsageKind::Feature, "export_pdf", 3)
    );
    assert_eq!(batch.redactions["dropped_name"], 1);
    let route = &batch.performance[0];
    assert_eq!((route.count, route.errors, route.max_ms), (2, 1, 40.0));
    assert!((route.p50_ms - 12.0).abs() <= 0.12 && (route.p99_ms - 40.0).abs() <= 0.4, "{route:?}");
    assert!(route.sketch.starts_with("dd1:"));

    assert_eq!(batch.errors.len(), 2, "the two timeouts share a fingerprint: {:?}", batch.errors);
    let db = batch.errors.iter().find(|e| e.error_type == "database").unwrap();
    assert_eq!(db.count, 2);
    assert_eq!((db.first_seen, db.last_seen), (t0, t0 + Duration::minutes(5)));
    assert_eq!(db.message, "query 7 for [EMAIL] timed out");
    assert_eq!(db.stack, ["caused by: pool exhausted at db.rs:42"]);
    let mail = batch.errors.iter().find(|e| e.error_type == "mail").unwrap();
    assert_eq!(mail.stack, ["at mail::send (mail.rs:9)"]);

    assert_eq!(batch.sessions.count, 2);
    assert!((1_800..1_805).contains(&batch.sessions.total_duration_s), "{:?}", batch.sessions);
    use chrono::Timelike as _;
    assert_eq!(batch.sessions.hourly.iter().sum::<u64>(), 2);
    assert!(batch.sessions.hourly[9] >= 1 && batch.sessions.hourly[dropped_at.hour() as usize] >= 1);
    // The two timeouts differ only in a number: one raw group, scrubbed once at the drain.
    assert_eq!(batch.redactions["email"], 1, "{:?}", batch.redactions);
    assert_eq!(batch.dropped.overflow, 0);

    let json = serde_json::to_string(&batch).unwrap();
    for secret in ["jane.doe", "example.com", "jsmith", "/home/", "/srv/app"] {
        assert!(!json.contains(secret), "{secret} left the collector: {json}");
    }
    // The server accepts what the client builds.
    let parsed = protocol::parse_batch(&json).unwrap();
    parsed.check(&BatchLimits::default()).unwrap();
    assert_eq!(parsed, batch);

    // Taken: the next batch is empty.
    let next = telemetry.take_batch(uuid::Uuid::new_v4(), (t0, t0 + Duration::hours(24)), environment());
    assert!(next.usage.is_empty() && next.performance.is_empty() && next.errors.is_empty());
    assert_eq!(next.sessions.count, 0);
}

#[test]
fn bounds_turn_into_overflow_counts() {
    let now = Utc::now();
    let telemetry = Telemetry::new(&Limits { max_keys: 1, max_routes: 1, max_errors: 1 });
    telemetry.counters.track_feature("a");
    telemetry.counters.track_feature("b");
    telemetry.requests.track_request("GET", "/a", 200, std::time::Duration::from_millis(1));
    telemetry.requests.track_request("GET", "/b", 200, std::time::Duration::from_millis(1));
    telemetry.track_error_parts::<&str>("x", "first", &[], now);
    telemetry.track_error_parts::<&str>("x", "second", &[], now);
    let batch = telemetry.take_batch(uuid::Uuid::new_v4(), (now, now), environment());
    assert_eq!(batch.dropped.overflow, 3);
}

#[test]
fn a_disabled_collector_yields_an_empty_batch() {
    let now = Utc::now();
    let telemetry = Telemetry::disabled();
    telemetry.counters.track_feature("a");
    telemetry.track_error_parts::<&str>("x", "y", &[], now);
    telemetry.start_session(now).end(now + Duration::minutes(1));
    let batch = telemetry.take_batch(uuid::Uuid::new_v4(), (now, now), environment());
    assert!(batch.usage.is_empty() && batch.errors.is_empty());
    assert_eq!(batch.sessions.count, 0);
}

#[test]
fn raw_paths_count_by_their_shape_and_patterns_stay() {
    let telemetry = Telemetry::new(&Limits::default());
    for path in
        ["/users/42/orders", "/users/43/orders?page=2", "/users/550e8400-e29b-41d4-a716-446655440000/orders"]
    {
        telemetry.requests.track_request("GET", path, 200, std::time::Duration::from_millis(3));
    }
    telemetry.requests.track_request("GET", "/items/{id}", 200, std::time::Duration::from_millis(3));
    let flush = telemetry.drain();
    let routes: Vec<(&str, u64)> = flush.performance.iter().map(|r| (r.route.as_str(), r.count)).collect();
    assert!(routes.contains(&("/items/{id}", 1)), "{routes:?}");
    assert_eq!(routes.iter().filter(|(r, _)| *r == "/users/:id/orders").count(), 1, "merged: {routes:?}");
    assert!(routes.contains(&("/users/:id/orders", 3)), "{routes:?}");
    assert!(routes.iter().all(|(r, _)| !r.contains("42") && !r.contains("550e8400")), "{routes:?}");
}

/// Errors reported from many threads at once add up exactly: the same error is one group
/// whatever thread saw it, and the bounds (distinct errors held, the throttle's events a
/// minute) hold across threads, every event left out counted.
#[test]
fn errors_from_many_threads_add_up_and_the_bounds_hold_across_them() {
    use licensor::client::telemetry::Sampling;
    let t0 = Utc.with_ymd_and_hms(2026, 11, 21, 9, 30, 0).unwrap();
    let telemetry = Telemetry::new(&Limits { max_errors: 3, ..Limits::default() });
    let names = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel"];
    std::thread::scope(|s| {
        for name in names {
            let telemetry = &telemetry;
            s.spawn(move || {
                for i in 0..1_000 {
                    // A minute earlier than the rest: the drain fills the batch's groups in order
                    // of first sight.
                    let earlier = t0 - Duration::minutes(1);
                    telemetry.track_error_parts(
                        "database",
                        &format!("timeout on row {i}"),
                        &["at db"],
                        earlier,
                    );
                }
                for _ in 0..10 {
                    telemetry.track_error_parts("mail", &format!("refused by {name}"), &["at mail"], t0);
                }
            });
        }
    });
    let batch = telemetry.take_batch(uuid::Uuid::new_v4(), (t0 - Duration::hours(1), t0), environment());
    let shared = batch.errors.iter().find(|e| e.error_type == "database").expect("the shared error");
    assert_eq!(shared.count, 8_000, "one group, every thread's events");
    // Three groups at most in the batch; the six distinct raw events held (2 per group) are the
    // shared one and five others; every other event is overflow.
    assert!(batch.errors.len() <= 3, "{:?}", batch.errors);
    let kept: u64 = batch.errors.iter().map(|e| e.count).sum();
    assert_eq!(kept + batch.dropped.overflow, 8_080);
    assert_eq!(batch.dropped.overflow, 8_080 - 8_000 - 2 * 10, "two more groups of 10 fit");

    let throttled = Telemetry::with_sampling(&Limits::default(), Sampling::Throttled { per_minute: 100 });
    std::thread::scope(|s| {
        for _ in 0..8 {
            s.spawn(|| {
                for _ in 0..50 {
                    throttled.track_error_parts("database", "timeout", &["at db"], t0);
                }
            });
        }
    });
    let batch = throttled.take_batch(uuid::Uuid::new_v4(), (t0 - Duration::hours(1), t0), environment());
    assert_eq!((batch.errors[0].count, batch.dropped.throttled), (100, 300), "100 a minute across threads");
}
