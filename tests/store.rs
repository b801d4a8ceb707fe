//! The store under the server: migrations, schema, and the scheduled jobs with two replicas
//! on one database.

mod common;

use chrono::Duration;
use std::collections::BTreeSet;

use common::{batch, Harness};
use licensor::license::Tier;
use licensor::server::jobs::{run_retention, run_rollup, RunOutcome};
use licensor::store::Store;

fn versions(backend: &str) -> BTreeSet<String> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations").join(backend);
    std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().unwrap().is_dir())
        .map(|e| {
            for file in ["up.sql", "down.sql"] {
                assert!(e.path().join(file).is_file(), "{} lacks {file}", e.path().display());
            }
            e.file_name().to_string_lossy().into_owned()
        })
        .collect()
}

#[test]
fn the_two_migration_folders_list_the_same_versions() {
    let sqlite = versions("sqlite");
    let postgres = versions("postgres");
    assert!(!sqlite.is_empty());
    assert_eq!(sqlite, postgres);
}

on_both_backends!(
    schema_matches_the_migrated_database,
    jobs_run_once_across_replicas_and_roll_up_exactly,
    retention_removes_raw_rows_and_keeps_aggregates,
    the_payload_migration_moves_stored_batches_both_ways,
);

/// Every table of `schema.rs`, read through its row type: a column that is missing or of
/// another type in either backend's migrations fails here.
fn schema_matches_the_migrated_database(h: Harness) {
    let key = h.license(Tier::Pro, 1);
    h.check_in(&key, "schema", Some(&batch(uuid::Uuid::new_v4(), 2, 1, 1).to_string()));
    h.store.rollup_day(h.now().date_naive(), None).unwrap();
    let text = h.store.telemetry_text().unwrap();
    assert!(text.iter().any(|t| t == "feature_0"));
    assert_eq!(h.store.list_licenses(h.now(), &Default::default(), 10, None).unwrap().items.len(), 1);
    assert_eq!(h.store.list_instances(&Default::default(), 10, None).unwrap().items.len(), 1);
    assert_eq!(h.store.check_ins_of("schema").unwrap().len(), 1);
    assert!(!h.store.aggregates_of(h.now().date_naive()).unwrap().is_empty());
    assert!(h.store.job_runs("none").unwrap().is_empty());
    // Migrating an up-to-date database again is a no-op.
    Store::open(&h.database_url, 1).unwrap();
}

/// The migration that put a batch's usage, routes and sessions into one row copies what was
/// stored before, and its revert splits it again: a summary reads the same after a round trip
/// through the three old tables. The revert refuses while deflated bodies are stored (SQL cannot
/// inflate them), and changes nothing then.
fn the_payload_migration_moves_stored_batches_both_ways(h: Harness) {
    use diesel::{Connection as _, RunQueryDsl as _};
    use diesel_migrations::{FileBasedMigrations, MigrationHarness as _};
    #[derive(diesel::QueryableByName)]
    struct Count {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    let key = h.license(Tier::Pro, 1);
    let batches: Vec<(uuid::Uuid, serde_json::Value)> = (0..2)
        .map(|_| {
            let id = uuid::Uuid::new_v4();
            let telemetry = batch(id, 4, 3, 2);
            h.check_in(&key, "migrated", Some(&telemetry.to_string()));
            (id, telemetry)
        })
        .collect();
    let read = || {
        let (code, summary) =
            h.admin(reqwest::Method::GET, "/v1/admin/telemetry/summary?instance_id=migrated&hours=24", None);
        assert_eq!(code, 200, "{summary}");
        summary
    };
    let before = read();
    assert_eq!(before["batches"], 2);
    assert_eq!(before["usage"].as_array().unwrap().len(), 4);
    assert_eq!(before["performance"].as_array().unwrap().len(), 3);
    assert_eq!(before["sessions"]["count"], 28, "{before}");
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations").join(match h.db {
        common::Db::Sqlite => "sqlite",
        common::Db::Postgres => "postgres",
    });
    let migrations = FileBasedMigrations::from_path(dir).unwrap();
    macro_rules! round_trip {
        ($conn:expr, $bytes:literal) => {{
            let conn = &mut $conn;
            // The migrations after this one are reverted first, and applied again at the end.
            let mut later = 0;
            while conn.applied_migrations().unwrap().iter().map(|v| v.to_string()).max().unwrap() != "20261212000000" {
                conn.revert_last_migration(migrations.clone()).unwrap();
                later += 1;
            }
            let refused = conn.revert_last_migration(migrations.clone()).unwrap_err();
            assert!(refused.to_string().contains("deflated payloads"), "{refused}");
            // The bodies as the migration copies them from the old tables: plain JSON.
            for (id, telemetry) in &batches {
                let json = serde_json::json!({
                    "usage": telemetry["usage"], "performance": telemetry["performance"],
                    "sessions": telemetry["sessions"],
                });
                let n = diesel::sql_query(concat!("UPDATE telemetry_payloads SET body = ", $bytes, " WHERE batch_id = $2"))
                    .bind::<diesel::sql_types::Text, _>(json.to_string())
                    .bind::<diesel::sql_types::Text, _>(id.to_string())
                    .execute(conn)
                    .unwrap();
                assert_eq!(n, 1);
            }
            assert_eq!(read(), before, "plain bodies read as the deflated ones did");
            let reverted = conn.revert_last_migration(migrations.clone()).unwrap();
            assert_eq!(reverted.to_string(), "20261212000000");
            let counts = ["telemetry_events", "telemetry_performance", "telemetry_sessions"].map(|t| {
                diesel::sql_query(format!("SELECT COUNT(*) AS n FROM {t}")).get_result::<Count>(conn).unwrap().n
            });
            assert_eq!(counts, [2, 2, 2]);
            assert_eq!(conn.run_pending_migrations(migrations.clone()).unwrap().len(), 1 + later);
        }};
    }
    match h.db {
        common::Db::Sqlite => {
            let path = h.database_url.trim_start_matches("sqlite://").to_owned();
            round_trip!(diesel::SqliteConnection::establish(&path).unwrap(), "CAST($1 AS BLOB)")
        }
        common::Db::Postgres => {
            round_trip!(diesel::PgConnection::establish(&h.database_url).unwrap(), "convert_to($1, 'UTF8')")
        }
    }
    assert_eq!(read(), before);
}

/// On SQLite the roll-up (a transaction that reads, then writes) runs beside the check-in
/// writer without failing: a deferred transaction could not wait for the write lock once a
/// check-in had committed after its first read, and failed with "database is locked".
#[test]
fn a_roll_up_beside_check_ins_waits_for_the_lock_on_sqlite() {
    let Some(h) = Harness::start(common::Db::Sqlite) else { return };
    let key = h.license(Tier::Pro, 50);
    for i in 0..5 {
        h.check_in(&key, &format!("seed-{i}"), Some(&batch(uuid::Uuid::new_v4(), 20, 5, 2).to_string()));
    }
    let day = h.now().date_naive();
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut i = 0;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                h.check_in(
                    &key,
                    &format!("busy-{}", i % 40),
                    Some(&batch(uuid::Uuid::new_v4(), 20, 5, 2).to_string()),
                );
                i += 1;
            }
        });
        for _ in 0..30 {
            h.store.rollup_day(day, None).unwrap();
        }
        done.store(true, std::sync::atomic::Ordering::Relaxed);
    });
}

fn jobs_run_once_across_replicas_and_roll_up_exactly(h: Harness) {
    let key = h.license(Tier::Pro, 5);
    for instance in ["r1", "r2"] {
        h.check_in(&key, instance, Some(&batch(uuid::Uuid::new_v4(), 3, 1, 1).to_string()));
    }
    let replica = Store::open(&h.database_url, 2).unwrap();
    let tomorrow = h.now() + Duration::days(1);

    for job in ["rollup", "retention"] {
        let outcomes: Vec<RunOutcome> = std::thread::scope(|s| {
            let runs: Vec<_> = [&h.store, &replica]
                .into_iter()
                .map(|store| {
                    s.spawn(move || match job {
                        "rollup" => run_rollup(store, tomorrow).unwrap(),
                        _ => run_retention(store, tomorrow, 90).unwrap(),
                    })
                })
                .collect();
            runs.into_iter().map(|r| r.join().unwrap()).collect()
        });
        let ran = outcomes.iter().filter(|o| matches!(o, RunOutcome::Ran(_))).count();
        assert_eq!(ran, 1, "{job}: {outcomes:?}");
        assert!(outcomes.contains(&RunOutcome::Skipped), "{job}: {outcomes:?}");
        let runs = h.store.job_runs(job).unwrap();
        assert_eq!(runs.len(), 1, "{job}: {runs:?}");
        assert!(runs[0].1.as_deref().is_some_and(|o| !o.starts_with("failed")), "{runs:?}");
    }
    // A later run of the same day is skipped too.
    assert_eq!(run_rollup(&replica, tomorrow + Duration::hours(5)).unwrap(), RunOutcome::Skipped);

    let day = h.now().date_naive();
    let aggregates = h.store.aggregates_of(day).unwrap();
    let find = |metric: &str, dimension: &str| {
        aggregates
            .iter()
            .find(|a| a.metric == metric && a.dimension == dimension)
            .unwrap_or_else(|| panic!("{metric} {dimension} in {aggregates:?}"))
    };
    // Each instance sent feature_0 with count 10: summed once, by two installs.
    assert_eq!(find("usage.feature", "feature_0").value, 20.0);
    assert_eq!(find("usage.feature", "feature_0").instances, 2);
    assert_eq!(find("usage.api", "feature_1").value, 22.0);
    assert_eq!(find("active.tier", "pro").value, 2.0);
    assert_eq!(find("active", "all").value, 2.0);
    assert_eq!(aggregates.iter().filter(|a| a.metric.starts_with("usage.")).count(), 3);

    // Rolling the same day up again replaces it instead of adding to it.
    h.store.rollup_day(day, None).unwrap();
    assert_eq!(h.store.aggregates_of(day).unwrap(), aggregates);
}

fn retention_removes_raw_rows_and_keeps_aggregates(h: Harness) {
    let key = h.license(Tier::Pro, 5);
    let (old_batch, recent_batch) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
    h.check_in(&key, "old", Some(&batch(old_batch, 3, 2, 1).to_string()));
    h.store.rollup_day(h.now().date_naive(), None).unwrap();
    h.advance(Duration::days(89));
    h.check_in(&key, "recent", Some(&batch(recent_batch, 3, 2, 1).to_string()));
    if h.db == common::Db::Postgres {
        // A day with a partition (made at start for the server's day and the week after) gets
        // its rows there; a day without one, the default partition.
        {
            let table = "telemetry_payloads";
            let day = common::t0().format("%Y%m%d");
            assert_eq!(
                h.store.partition_of(table, &old_batch.to_string()).unwrap(),
                Some(format!("{table}_p{day}"))
            );
            assert_eq!(
                h.store.partition_of(table, &recent_batch.to_string()).unwrap(),
                Some(format!("{table}_default"))
            );
        }
    }

    // 90 days after the first batch, only it is old enough to go.
    let outcome =
        run_retention(&h.store, common::t0() + Duration::days(90) + Duration::seconds(1), 90).unwrap();
    // The cutoff falls inside the old batch's day: its rows are deleted, its day's partitions
    // (PostgreSQL) stay until the whole day is past the cutoff.
    let expected = "dropped 0 daily partitions and removed 3 rows";
    assert!(matches!(&outcome, RunOutcome::Ran(what) if what.starts_with(expected)), "{outcome:?}");
    let old = h.store.telemetry_counts("old").unwrap();
    assert_eq!(old["telemetry_batches"], 0);
    assert_eq!(old["telemetry_payloads"], 0);
    assert_eq!(old["telemetry_errors"], 1, "deduplicated errors are kept");
    assert_eq!(old["telemetry_features"], 3, "rolled-up features are kept");
    let recent = h.store.telemetry_counts("recent").unwrap();
    assert_eq!((recent["telemetry_batches"], recent["telemetry_payloads"]), (1, 1));
    // A day later the whole day is past: on PostgreSQL its partition is dropped; the rows were
    // gone already.
    let outcome =
        run_retention(&h.store, common::t0() + Duration::days(91) + Duration::seconds(1), 90).unwrap();
    let expected = match h.db {
        common::Db::Postgres => "dropped 1 daily partition and removed 0 rows",
        common::Db::Sqlite => "dropped 0 daily partitions and removed 0 rows",
    };
    assert!(matches!(&outcome, RunOutcome::Ran(what) if what.starts_with(expected)), "{outcome:?}");
    assert_eq!(h.store.telemetry_counts("recent").unwrap()["telemetry_payloads"], 1);
    if h.db == common::Db::Postgres {
        // The start made the partitions of the server's day and the seven after it.
        let later = h.store.drop_partitions_before((common::t0() + Duration::days(8)).date_naive()).unwrap();
        assert_eq!(later.len(), 7, "the seven later days' partitions: {later:?}");
        assert!(later.contains(&format!(
            "telemetry_payloads_p{}",
            (common::t0() + Duration::days(7)).format("%Y%m%d")
        )));
    }
    assert_eq!(h.store.check_ins_of("old").unwrap().len(), 0);
    assert_eq!(h.store.check_ins_of("recent").unwrap().len(), 1);
}

/// A batch's raw payload is stored deflated, on both backends, and PostgreSQL stores it as it
/// comes rather than trying to compress it again: the bench's batch shape (50 usage counters,
/// 20 routes) takes less than a fifth of its JSON.
#[test]
fn raw_telemetry_is_stored_deflated() {
    use diesel::{Connection as _, RunQueryDsl as _};
    #[derive(diesel::QueryableByName, Debug)]
    struct Sizes {
        #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
        method: Option<String>,
        #[diesel(sql_type = diesel::sql_types::Integer)]
        stored: i32,
        #[diesel(sql_type = diesel::sql_types::Integer)]
        first: i32,
    }
    #[derive(diesel::QueryableByName, Debug)]
    struct SqliteSizes {
        #[diesel(sql_type = diesel::sql_types::Integer)]
        stored: i32,
        #[diesel(sql_type = diesel::sql_types::Integer)]
        first: i32,
    }
    for db in [common::Db::Sqlite, common::Db::Postgres] {
        let Some(h) = Harness::start(db) else { continue };
        let key = h.license(Tier::Pro, 5);
        let telemetry = batch(uuid::Uuid::new_v4(), 50, 20, 0);
        let json = serde_json::json!({
            "usage": telemetry["usage"], "performance": telemetry["performance"], "sessions": telemetry["sessions"]
        })
        .to_string();
        assert_eq!(h.check_in(&key, "compressed-1", Some(&telemetry.to_string()))["status"], "valid");
        let (stored, first) = match db {
            common::Db::Postgres => {
                let mut conn = diesel::PgConnection::establish(&h.database_url).unwrap();
                // Every partition, the ones made later by the jobs included, stores it as is.
                let partitions: Vec<SqliteSizes> = diesel::sql_query(
                    "SELECT COUNT(*)::int AS stored, COUNT(*) FILTER (WHERE a.attstorage = 'e')::int AS first \
                     FROM pg_inherits i JOIN pg_attribute a ON a.attrelid = i.inhrelid AND a.attname = 'body' \
                     WHERE i.inhparent = 'telemetry_payloads'::regclass",
                )
                .load(&mut conn)
                .unwrap();
                assert!(partitions[0].stored >= 8, "{partitions:?}");
                assert_eq!(partitions[0].stored, partitions[0].first, "{partitions:?}");
                let sizes: Sizes = diesel::sql_query(
                    "SELECT pg_column_compression(body) AS method, pg_column_size(body) AS stored, \
                     get_byte(body, 0) AS first FROM telemetry_payloads",
                )
                .get_result(&mut conn)
                .unwrap();
                assert_eq!(sizes.method, None, "{sizes:?}");
                (sizes.stored, sizes.first)
            }
            common::Db::Sqlite => {
                let path = h.database_url.trim_start_matches("sqlite://").to_owned();
                let mut conn = diesel::SqliteConnection::establish(&path).unwrap();
                let sizes: SqliteSizes = diesel::sql_query(
                    "SELECT length(body) AS stored, unicode(CAST(substr(body, 1, 1) AS TEXT)) AS first \
                     FROM telemetry_payloads",
                )
                .get_result(&mut conn)
                .unwrap();
                (sizes.stored, sizes.first)
            }
        };
        assert_eq!(first, 1, "the deflated form's marker");
        assert!(
            (stored as usize) * 5 < json.len(),
            "{db:?}: {stored} bytes stored for {} of JSON",
            json.len()
        );
    }
}
