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
);

/// Every table of `schema.rs`, read through its row type: a column that is missing or of
/// another type in either backend's migrations fails here.
fn schema_matches_the_migrated_database(h: Harness) {
    let key = h.license(Tier::Pro, 1);
    h.check_in(&key, "schema", Some(&batch(uuid::Uuid::new_v4(), 2, 1, 1).to_string()));
    h.store.rollup_day(h.now().date_naive()).unwrap();
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
    h.store.rollup_day(day).unwrap();
    assert_eq!(h.store.aggregates_of(day).unwrap(), aggregates);
}

fn retention_removes_raw_rows_and_keeps_aggregates(h: Harness) {
    let key = h.license(Tier::Pro, 5);
    let (old_batch, recent_batch) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
    h.check_in(&key, "old", Some(&batch(old_batch, 3, 2, 1).to_string()));
    h.store.rollup_day(h.now().date_naive()).unwrap();
    h.advance(Duration::days(89));
    h.check_in(&key, "recent", Some(&batch(recent_batch, 3, 2, 1).to_string()));
    if h.db == common::Db::Postgres {
        // A day with a partition (made at start for the server's day and the week after) gets
        // its rows there; a day without one, the default partition.
        for table in ["telemetry_events", "telemetry_performance", "telemetry_sessions"] {
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
    let expected = "dropped 0 daily partitions and removed 5 rows";
    assert!(matches!(&outcome, RunOutcome::Ran(what) if what.starts_with(expected)), "{outcome:?}");
    let old = h.store.telemetry_counts("old").unwrap();
    assert_eq!(old["telemetry_batches"], 0);
    assert_eq!(old["telemetry_events"], 0);
    assert_eq!(old["telemetry_performance"], 0);
    assert_eq!(old["telemetry_sessions"], 0);
    assert_eq!(old["telemetry_errors"], 1, "deduplicated errors are kept");
    assert_eq!(old["telemetry_features"], 3, "rolled-up features are kept");
    let recent = h.store.telemetry_counts("recent").unwrap();
    assert_eq!((recent["telemetry_batches"], recent["telemetry_events"]), (1, 1));
    // A day later the whole day is past: on PostgreSQL its partitions (one per payload table)
    // are dropped; the rows were gone already.
    let outcome =
        run_retention(&h.store, common::t0() + Duration::days(91) + Duration::seconds(1), 90).unwrap();
    let expected = match h.db {
        common::Db::Postgres => "dropped 3 daily partitions and removed 0 rows",
        common::Db::Sqlite => "dropped 0 daily partitions and removed 0 rows",
    };
    assert!(matches!(&outcome, RunOutcome::Ran(what) if what.starts_with(expected)), "{outcome:?}");
    assert_eq!(h.store.telemetry_counts("recent").unwrap()["telemetry_events"], 1);
    if h.db == common::Db::Postgres {
        // The start made the partitions of the server's day and the seven after it.
        let later = h.store.drop_partitions_before((common::t0() + Duration::days(8)).date_naive()).unwrap();
        assert_eq!(later.len(), 3 * 7, "the seven later days' partitions of three tables: {later:?}");
        assert!(later
            .contains(&format!("telemetry_events_p{}", (common::t0() + Duration::days(7)).format("%Y%m%d"))));
    }
    assert_eq!(h.store.check_ins_of("old").unwrap().len(), 0);
    assert_eq!(h.store.check_ins_of("recent").unwrap().len(), 1);
}

/// On PostgreSQL the raw telemetry JSON is stored compressed with lz4 (the migration's point:
/// a batch's usage and routes take a fraction of their text).
#[test]
fn raw_telemetry_is_stored_compressed_on_postgres() {
    use diesel::{Connection as _, RunQueryDsl as _};
    #[derive(diesel::QueryableByName, Debug)]
    struct Sizes {
        #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
        method: Option<String>,
        #[diesel(sql_type = diesel::sql_types::Integer)]
        raw: i32,
        #[diesel(sql_type = diesel::sql_types::Integer)]
        stored: i32,
    }
    let Some(h) = Harness::start(common::Db::Postgres) else { return };
    let key = h.license(Tier::Pro, 5);
    let body = batch(uuid::Uuid::new_v4(), 50, 20, 0).to_string();
    assert_eq!(h.check_in(&key, "compressed-1", Some(&body))["status"], "valid");
    let mut conn = diesel::PgConnection::establish(&h.database_url).unwrap();
    for (table, column) in [("telemetry_events", "usage"), ("telemetry_performance", "routes")] {
        let sizes: Sizes = diesel::sql_query(format!(
            "SELECT pg_column_compression({column}) AS method, octet_length({column}) AS raw, \
             pg_column_size({column}) AS stored FROM {table}"
        ))
        .get_result(&mut conn)
        .unwrap();
        assert_eq!(sizes.method.as_deref(), Some("lz4"), "{table}.{column}: {sizes:?}");
        assert!(sizes.stored * 2 < sizes.raw, "{table}.{column}: {sizes:?}");
    }
}
