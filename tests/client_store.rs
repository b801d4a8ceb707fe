//! The client's local store: state across restarts, flushes, the outbox, the ledger and the
//! roll-up, on a real SQLite file per test.

use chrono::{DateTime, Duration, TimeZone as _, Utc};
use licensor::client::store::{CheckInRecord, LocalStore, FILE_NAME};
use licensor::client::telemetry::Figures;
use licensor::protocol::{
    self, BatchLimits, Dropped, Environment, ErrorGroup, Health, RoutePerformance, Sessions, SyncStatus,
    TelemetryBatch, UsageCount, UsageKind, UserCountRange,
};
use licensor::sketch::Sketch;

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 21, 10, 30, 0).unwrap()
}

fn environment() -> Environment {
    Environment {
        app_version: "2.0.0".into(),
        os: "linux".into(),
        arch: "x86_64".into(),
        user_count_range: UserCountRange::Over1000,
        modules_enabled: vec![],
        uptime_hours: 1.0,
        last_sync_status: SyncStatus::None,
        health: Default::default(),
    }
}

fn usage(kind: UsageKind, name: &str, count: u64) -> UsageCount {
    UsageCount { kind, name: name.into(), count }
}

fn route(route: &str, latencies: &[f64], errors: u64) -> RoutePerformance {
    let mut sketch = Sketch::default();
    for &ms in latencies {
        sketch.add(ms);
    }
    RoutePerformance {
        method: "GET".into(),
        route: route.into(),
        count: latencies.len() as u64,
        errors,
        p50_ms: 0.0,
        p95_ms: 0.0,
        p99_ms: 0.0,
        max_ms: latencies.iter().cloned().fold(0.0, f64::max),
        sketch: sketch.encode(),
    }
}

fn error(fingerprint: &str, count: u64, at: DateTime<Utc>) -> ErrorGroup {
    ErrorGroup {
        fingerprint: fingerprint.into(),
        error_type: "database".into(),
        message: "connection refused".into(),
        stack: vec!["caused by: timeout".into()],
        count,
        first_seen: at,
        last_seen: at,
    }
}

fn open() -> (tempfile::TempDir, LocalStore) {
    let dir = tempfile::TempDir::new().unwrap();
    let store = LocalStore::open(&dir.path().join("data")).unwrap();
    store.state_or_init(t0()).unwrap();
    (dir, store)
}

fn parse(payload: &str) -> TelemetryBatch {
    let batch = protocol::parse_batch(payload).unwrap();
    batch.check(&BatchLimits::default()).unwrap();
    batch
}

#[cfg(unix)]
#[test]
fn the_store_is_private_and_the_identity_survives_a_restart() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::TempDir::new().unwrap();
    let data = dir.path().join("data");
    let first = {
        let store = LocalStore::open(&data).unwrap();
        store.state_or_init(t0()).unwrap()
    };
    assert_eq!(std::fs::metadata(&data).unwrap().permissions().mode() & 0o777, 0o700);
    assert_eq!(std::fs::metadata(data.join(FILE_NAME)).unwrap().permissions().mode() & 0o777, 0o600);
    assert_eq!(first.salt.len(), 64);
    assert_eq!(first.salt_bytes().unwrap().len(), 32);
    uuid::Uuid::parse_str(&first.instance_id).unwrap();

    let store = LocalStore::open(&data).unwrap();
    let again = store.state_or_init(t0() + Duration::days(3)).unwrap();
    assert_eq!(again, first, "a restart keeps the instance id, salt and first start");
}

#[test]
fn flushes_add_up_and_a_batch_takes_everything_unsent_exactly_once() {
    let (_dir, store) = open();
    let limits = BatchLimits::default();
    let mut flush = Figures {
        usage: vec![usage(UsageKind::Feature, "export", 3), usage(UsageKind::Api, "GET /v1/items", 10)],
        performance: vec![route("/items/{id}", &[10.0, 20.0], 1)],
        errors: vec![error("f1", 2, t0())],
        sessions: Sessions { count: 1, total_duration_s: 60, hourly: [0; 24] },
        dropped: Dropped { sampled: 4, throttled: 0, overflow: 1 },
        users: vec!["u1".into(), "u2".into()],
        health: [("database".to_string(), Health::Degraded)].into(),
        ..Default::default()
    };
    flush.redactions.insert("email".into(), 2);
    store.record(&flush, t0(), &limits).unwrap();
    // A second flush in another hour: counts add, sketches merge, users are not counted twice.
    let second = Figures {
        usage: vec![usage(UsageKind::Feature, "export", 2)],
        performance: vec![route("/items/{id}", &[30.0, 40.0, 1000.0], 0)],
        errors: vec![error("f1", 1, t0() + Duration::hours(2))],
        users: vec!["u1".into()],
        ..Default::default()
    };
    store.record(&second, t0() + Duration::hours(2), &limits).unwrap();

    let now = t0() + Duration::hours(3);
    let out = store.next_batch(environment(), now, &limits).unwrap();
    assert_eq!(out.attempts, 1);
    assert_eq!(out.digest, protocol::digest(out.payload.as_bytes()));
    let batch = parse(&out.payload);
    assert_eq!(batch.batch_id.to_string(), out.batch_id);
    assert_eq!((batch.period_start, batch.period_end), (t0(), now));
    assert_eq!(
        batch.usage,
        vec![usage(UsageKind::Feature, "export", 5), usage(UsageKind::Api, "GET /v1/items", 10)]
    );
    let r = &batch.performance[0];
    assert_eq!((r.count, r.errors, r.max_ms), (5, 1, 1000.0));
    // Nearest rank over 10, 20, 30, 40, 1000 within the sketch's 1%.
    assert!((r.p50_ms - 30.0).abs() <= 0.3, "p50 {}", r.p50_ms);
    assert!((r.p99_ms - 1000.0).abs() <= 10.0, "p99 {}", r.p99_ms);
    assert_eq!(batch.errors.len(), 1);
    assert_eq!(batch.errors[0].count, 3);
    assert_eq!(batch.errors[0].last_seen, t0() + Duration::hours(2));
    assert_eq!(batch.sessions.count, 1);
    assert_eq!(batch.dropped, Dropped { sampled: 4, throttled: 0, overflow: 1 });
    assert_eq!(batch.redactions.get("email"), Some(&2));
    assert_eq!(batch.environment.user_count_range, UserCountRange::UpTo10);
    assert_eq!(batch.environment.health.get("database"), Some(&Health::Degraded));

    // Until acknowledged, every call gives the same batch, byte for byte.
    let retry = store.next_batch(environment(), now + Duration::minutes(5), &limits).unwrap();
    assert_eq!(
        (retry.batch_id.as_str(), retry.payload.as_str(), retry.attempts),
        (out.batch_id.as_str(), out.payload.as_str(), 2)
    );
    // Figures tracked meanwhile wait for the next batch.
    store
        .record(
            &Figures { usage: vec![usage(UsageKind::Command, "import", 7)], ..Default::default() },
            now,
            &limits,
        )
        .unwrap();

    store
        .record_check_in(
            &CheckInRecord {
                lease: Some("LEASE1.x.y".into()),
                server_time: Some(now),
                result: "valid".into(),
                next_check_in_at: Some(now + Duration::hours(24)),
                acknowledged: Some(out.batch_id.clone()),
                renewed_key: None,
                report_acknowledged: None,
            },
            now,
        )
        .unwrap();
    assert_eq!(store.outbox().unwrap(), None);
    let ledger = store.ledger().unwrap();
    assert_eq!(ledger.len(), 1);
    assert_eq!(
        (ledger[0].batch_id.as_str(), ledger[0].payload.as_str()),
        (out.batch_id.as_str(), out.payload.as_str())
    );
    let state = store.state().unwrap().unwrap();
    assert_eq!(state.lease.as_deref(), Some("LEASE1.x.y"));
    assert_eq!(state.last_result.as_deref(), Some("valid"));

    let next = parse(&store.next_batch(environment(), now + Duration::hours(1), &limits).unwrap().payload);
    assert_ne!(next.batch_id.to_string(), out.batch_id);
    assert_eq!(next.period_start, now);
    assert_eq!(next.usage, vec![usage(UsageKind::Command, "import", 7)]);
    assert!(next.performance.is_empty() && next.errors.is_empty());
    assert_eq!(next.dropped, Dropped::default(), "tallies are sent once");
    assert!(next.redactions.is_empty());
}

#[test]
fn a_failed_check_in_keeps_the_lease_and_the_outbox() {
    let (_dir, store) = open();
    let limits = BatchLimits::default();
    let out = store.next_batch(environment(), t0(), &limits).unwrap();
    store
        .record_check_in(
            &CheckInRecord {
                lease: Some("LEASE1.old".into()),
                server_time: Some(t0()),
                result: "valid".into(),
                ..Default::default()
            },
            t0(),
        )
        .unwrap();
    store
        .record_check_in(
            &CheckInRecord { result: "no answer: refused".into(), ..Default::default() },
            t0() + Duration::hours(1),
        )
        .unwrap();
    let state = store.state().unwrap().unwrap();
    assert_eq!(state.lease.as_deref(), Some("LEASE1.old"));
    assert_eq!(state.last_server_time, Some(t0().naive_utc()), "the latest server time is kept");
    assert_eq!(state.last_result.as_deref(), Some("no answer: refused"));
    assert_eq!(store.outbox().unwrap().unwrap().batch_id, out.batch_id);
}

/// A pinned batch (what a preview shows) is the one the next check-in sends, same id and bytes,
/// and counts no attempt; figures recorded after it wait for the batch after.
#[test]
fn a_pinned_batch_is_the_one_sent_next_and_later_figures_wait() {
    let (_dir, store) = open();
    let limits = BatchLimits::default();
    let record = |name: &str| {
        store
            .record(
                &Figures { usage: vec![usage(UsageKind::Feature, name, 1)], ..Default::default() },
                t0(),
                &limits,
            )
            .unwrap()
    };
    record("sso");
    let pinned = store.pin_batch(environment(), t0(), &limits).unwrap();
    assert_eq!(parse(&pinned.payload).usage, vec![usage(UsageKind::Feature, "sso", 1)]);
    assert_eq!(pinned.attempts, 0);
    assert_eq!(store.unbatched_rows().unwrap(), 0);
    record("later");
    assert_eq!(store.unbatched_rows().unwrap(), 1);
    assert_eq!(
        store.pin_batch(environment(), t0(), &limits).unwrap(),
        pinned,
        "pinning again changes nothing"
    );
    let sent = store.next_batch(environment(), t0(), &limits).unwrap();
    assert_eq!(
        (sent.batch_id.as_str(), sent.payload.as_str(), sent.attempts),
        (pinned.batch_id.as_str(), pinned.payload.as_str(), 1)
    );
}

#[test]
fn a_batch_keeps_within_the_servers_limits_and_counts_the_rest() {
    let (_dir, store) = open();
    let limits = BatchLimits { max_usage: 2, max_errors: 1, ..Default::default() };
    let flush = Figures {
        usage: vec![
            usage(UsageKind::Feature, "a", 5),
            usage(UsageKind::Feature, "b", 1),
            usage(UsageKind::Feature, "c", 9),
        ],
        errors: vec![error("e1", 4, t0()), error("e2", 1, t0())],
        ..Default::default()
    };
    store.record(&flush, t0(), &limits).unwrap();
    let batch = parse(&store.next_batch(environment(), t0(), &limits).unwrap().payload);
    assert_eq!(batch.usage, vec![usage(UsageKind::Feature, "a", 5), usage(UsageKind::Feature, "c", 9)]);
    assert_eq!(batch.errors.len(), 1);
    // "b" (1 event) was cut from the batch and e2 (1 event) was never stored: 2 dropped.
    assert_eq!(batch.dropped.overflow, 2);
}

#[test]
fn the_ledger_is_bounded_and_keeps_the_newest() {
    let (_dir, store) = open();
    let limits = BatchLimits::default();
    let mut ids = Vec::new();
    for i in 0..(licensor::client::store::LEDGER_MAX + 3) {
        let now = t0() + Duration::minutes(i);
        let out = store.next_batch(environment(), now, &limits).unwrap();
        store
            .record_check_in(
                &CheckInRecord {
                    result: "valid".into(),
                    acknowledged: Some(out.batch_id.clone()),
                    ..Default::default()
                },
                now,
            )
            .unwrap();
        ids.push(out.batch_id);
    }
    let ledger = store.ledger().unwrap();
    assert_eq!(ledger.len() as i64, licensor::client::store::LEDGER_MAX);
    assert_eq!(ledger[0].batch_id, *ids.last().unwrap(), "newest first");
    assert!(!ledger.iter().any(|e| ids[..3].contains(&e.batch_id)), "the three oldest were dropped");
}

#[test]
fn months_offline_roll_up_into_coarser_periods_without_losing_a_count() {
    let (_dir, store) = open();
    let limits = BatchLimits::default();
    // 100 days offline, a flush every hour: 2,400 hourly rows per key.
    let start = t0() - Duration::days(100);
    for h in 0..(100 * 24) {
        let flush = Figures {
            usage: vec![usage(UsageKind::Feature, "export", 1)],
            performance: vec![route("/items", &[h as f64 % 50.0 + 1.0], 0)],
            sessions: Sessions { count: 1, total_duration_s: 10, hourly: [0; 24] },
            ..Default::default()
        };
        store.record(&flush, start + Duration::hours(h), &limits).unwrap();
    }
    let before = store.export().unwrap();
    assert_eq!(before.events.len(), 2400);
    let rolled = store.roll_up(t0()).unwrap();
    assert_eq!(rolled.dropped, 0);
    let after = store.export().unwrap();
    // The last 48 hours stay hourly (49 buckets touch the window), 58 days become days, the
    // rest (before 60 days ago) months.
    assert!(after.events.len() < 150, "{} rows after the roll-up", after.events.len());
    assert_eq!(after.events.iter().map(|e| e.count).sum::<i64>(), 2400);
    assert_eq!(after.performance.iter().map(|r| r.count).sum::<i64>(), 2400);
    assert_eq!(after.sessions.iter().map(|s| s.count).sum::<i64>(), 2400);
    // Rolling up again changes nothing.
    assert_eq!(store.roll_up(t0()).unwrap().merged, 0);

    let batch = parse(&store.next_batch(environment(), t0(), &limits).unwrap().payload);
    assert_eq!(batch.usage, vec![usage(UsageKind::Feature, "export", 2400)]);
    assert_eq!(batch.performance[0].count, 2400);
    assert!((batch.performance[0].p50_ms - 25.0).abs() <= 0.5, "p50 {}", batch.performance[0].p50_ms);
    assert_eq!(batch.sessions.count, 2400);
}

#[test]
fn past_the_row_bound_the_oldest_go_sent_first_and_unsent_losses_are_counted() {
    let (_dir, store) = open();
    let limits = BatchLimits::default();
    for h in 0..6 {
        let flush =
            Figures { usage: vec![usage(UsageKind::Feature, &format!("f{h}"), 10)], ..Default::default() };
        store.record(&flush, t0() + Duration::hours(h), &limits).unwrap();
        if h == 1 {
            // The first two hours are sent and acknowledged.
            let out = store.next_batch(environment(), t0() + Duration::hours(h), &limits).unwrap();
            store
                .record_check_in(
                    &CheckInRecord {
                        result: "valid".into(),
                        acknowledged: Some(out.batch_id),
                        ..Default::default()
                    },
                    t0(),
                )
                .unwrap();
        }
    }
    let rolled = store.roll_up_within(t0() + Duration::hours(6), 3).unwrap();
    assert_eq!((rolled.removed, rolled.dropped), (3, 10));
    let left = store.export().unwrap();
    assert_eq!(left.events.iter().map(|e| e.name.as_str()).collect::<Vec<_>>(), ["f3", "f4", "f5"]);
    let batch = parse(&store.next_batch(environment(), t0() + Duration::hours(7), &limits).unwrap().payload);
    assert_eq!(batch.dropped.overflow, 10, "the lost unsent events are said in the batch");
}

/// Rows already sent are kept for local summaries for 400 days, in every time-bucketed table;
/// rows not yet sent are never expired, only rolled up.
#[test]
fn sent_rows_expire_after_their_keeping_time_and_unsent_rows_never_do() {
    let (_dir, store) = open();
    let limits = BatchLimits::default();
    let sent = Figures {
        usage: vec![usage(UsageKind::Feature, "sent", 3)],
        performance: vec![route("/sent", &[5.0, 7.0], 0)],
        errors: vec![error("00aa", 2, t0())],
        sessions: Sessions { count: 1, total_duration_s: 60, hourly: [0; 24] },
        ..Default::default()
    };
    store.record(&sent, t0(), &limits).unwrap();
    let out = store.next_batch(environment(), t0(), &limits).unwrap();
    let acknowledged =
        CheckInRecord { result: "valid".into(), acknowledged: Some(out.batch_id), ..Default::default() };
    store.record_check_in(&acknowledged, t0()).unwrap();
    let unsent = Figures { usage: vec![usage(UsageKind::Feature, "unsent", 4)], ..Default::default() };
    store.record(&unsent, t0(), &limits).unwrap();

    // Within the keeping time, nothing is removed. (A row rolled up into its month is dated by
    // the month's start, so the keeping time counts from there: up to a month less.)
    assert_eq!(store.roll_up(t0() + Duration::days(370)).unwrap().removed, 0);
    let rolled = store.roll_up(t0() + Duration::days(401)).unwrap();
    assert_eq!((rolled.removed, rolled.dropped), (4, 0), "one sent row in each of the four tables");
    let left = store.export().unwrap();
    assert_eq!(left.events.iter().map(|e| (e.name.as_str(), e.count)).collect::<Vec<_>>(), [("unsent", 4)]);
    assert!(left.performance.is_empty() && left.errors.is_empty() && left.sessions.is_empty());
}

#[test]
fn clear_removes_telemetry_but_not_the_identity() {
    let (_dir, store) = open();
    let limits = BatchLimits::default();
    let id = store.state().unwrap().unwrap().instance_id;
    store
        .record(
            &Figures { usage: vec![usage(UsageKind::Feature, "x", 1)], ..Default::default() },
            t0(),
            &limits,
        )
        .unwrap();
    let out = store.next_batch(environment(), t0(), &limits).unwrap();
    store
        .record_check_in(
            &CheckInRecord { result: "valid".into(), acknowledged: Some(out.batch_id), ..Default::default() },
            t0(),
        )
        .unwrap();
    store.clear(false).unwrap();
    let export = store.export().unwrap();
    assert!(export.events.is_empty() && export.outbox.is_none());
    assert_eq!(export.ledger.len(), 1, "the ledger stays unless asked");
    store.clear(true).unwrap();
    assert!(store.ledger().unwrap().is_empty());
    assert_eq!(store.state().unwrap().unwrap().instance_id, id);
}

/// A deployment's store written by the build before the tables got names of their own opens
/// with this build: the rename migration keeps every row, unsent figures and the ledger alike.
#[test]
fn a_store_from_before_the_table_renames_keeps_its_rows() {
    use diesel::connection::SimpleConnection as _;
    use diesel::Connection as _;
    let dir = tempfile::TempDir::new().unwrap();
    let path = dir.path().join(FILE_NAME);
    {
        let mut old = diesel::sqlite::SqliteConnection::establish(path.to_str().unwrap()).unwrap();
        old.batch_execute(include_str!("../migrations/local/2026-11-22-000000_local_store/up.sql")).unwrap();
        old.batch_execute(
            "CREATE TABLE __diesel_schema_migrations (version VARCHAR(50) PRIMARY KEY NOT NULL, \
                 run_on TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP);
             INSERT INTO __diesel_schema_migrations (version) VALUES ('20261122000000');
             INSERT INTO verifier_state (id, instance_id, salt, first_started_at, period_start)
                 VALUES (1, 'old-instance', '0a0b', '2026-11-21 10:00:00', '2026-11-21 10:00:00');
             INSERT INTO telemetry_events (period_start, kind, name, batch_id, count)
                 VALUES ('2026-11-21 10:00:00', 'feature', 'sso', '', 7);
             INSERT INTO telemetry_batches (batch_id, acknowledged_at, payload, digest)
                 VALUES ('b-1', '2026-11-21 09:00:00', '{}', 'd');",
        )
        .unwrap();
    }
    let store = LocalStore::open(dir.path()).unwrap();
    let state = store.state().unwrap().unwrap();
    assert_eq!((state.instance_id.as_str(), state.salt_bytes().unwrap()), ("old-instance", vec![10, 11]));
    let export = store.export().unwrap();
    assert_eq!(export.events.len(), 1);
    assert_eq!((export.events[0].name.as_str(), export.events[0].count), ("sso", 7));
    assert_eq!(export.ledger.iter().map(|e| e.batch_id.as_str()).collect::<Vec<_>>(), ["b-1"]);
    // And it goes on working: the unsent row goes into the next batch.
    let next = store.next_batch(environment(), t0(), &BatchLimits::default()).unwrap();
    let batch: TelemetryBatch = serde_json::from_str(&next.payload).unwrap();
    assert_eq!(batch.usage, [usage(UsageKind::Feature, "sso", 7)]);
}
