//! The daily partitions of the raw payload table on PostgreSQL (see the migrations
//! `partition_raw_telemetry` and `one_payload_row_per_batch`): created ahead by the jobs,
//! dropped whole by retention.
//!
//! Invariants: a day's partition is never created when the default partition already holds rows
//! of that day (PostgreSQL would refuse, and those rows would be stranded); a partition is
//! dropped only when its whole day is before the cutoff. SQLite has no partitions: both are
//! no-ops there.

use chrono::{Duration, NaiveDate};
use diesel::connection::SimpleConnection as _;
use diesel::prelude::*;

use super::{DbConnection, Store, StoreError};

/// The partitioned tables.
pub const PARTITIONED: [&str; 1] = ["telemetry_payloads"];

#[derive(QueryableByName)]
struct Name {
    #[diesel(sql_type = diesel::sql_types::Text)]
    name: String,
}

#[derive(QueryableByName)]
struct Found {
    #[diesel(sql_type = diesel::sql_types::Bool)]
    found: bool,
}

/// The day a partition's name says (`<table>_pYYYYMMDD`).
fn day_of(table: &str, partition: &str) -> Option<NaiveDate> {
    let suffix = partition.strip_prefix(table)?.strip_prefix("_p")?;
    NaiveDate::parse_from_str(suffix, "%Y%m%d").ok()
}

impl Store {
    /// Creates the daily partitions of `from` and the `days - 1` days after it where missing;
    /// returns how many were created. A day the default partition already has rows of is
    /// skipped (its rows stay in the default partition, which retention empties by deleting).
    pub fn ensure_partitions(&self, from: NaiveDate, days: u32) -> Result<usize, StoreError> {
        let mut conn = self.conn()?;
        let DbConnection::Postgresql(c) = &mut *conn else { return Ok(0) };
        let mut created = 0;
        for table in PARTITIONED {
            for n in 0..i64::from(days) {
                let day = from + Duration::days(n);
                let name = format!("{table}_p{}", day.format("%Y%m%d"));
                let exists: Found = diesel::sql_query("SELECT to_regclass($1) IS NOT NULL AS found")
                    .bind::<diesel::sql_types::Text, _>(&name)
                    .get_result(c)?;
                if exists.found {
                    continue;
                }
                let stranded: Found = diesel::sql_query(format!(
                    "SELECT EXISTS (SELECT 1 FROM {table}_default WHERE received_at >= $1 AND received_at < $2) AS found"
                ))
                .bind::<diesel::sql_types::Date, _>(day)
                .bind::<diesel::sql_types::Date, _>(day + Duration::days(1))
                .get_result(c)?;
                if stranded.found {
                    continue;
                }
                // Another replica may create it at the same moment: IF NOT EXISTS makes that
                // harmless.
                c.batch_execute(&format!(
                    "CREATE TABLE IF NOT EXISTS {name} PARTITION OF {table} FOR VALUES FROM ('{day}') TO ('{}')",
                    day + Duration::days(1)
                ))?;
                created += 1;
            }
        }
        Ok(created)
    }

    /// Drops the daily partitions whose whole day is before `cutoff`: a day's raw payload goes
    /// at once, whatever its size. Returns the partitions dropped.
    pub fn drop_partitions_before(&self, cutoff: NaiveDate) -> Result<Vec<String>, StoreError> {
        let mut conn = self.conn()?;
        let DbConnection::Postgresql(c) = &mut *conn else { return Ok(Vec::new()) };
        let mut dropped = Vec::new();
        for table in PARTITIONED {
            let partitions: Vec<Name> = diesel::sql_query(
                "SELECT c.relname::text AS name FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
                 WHERE i.inhparent = to_regclass($1) ORDER BY 1",
            )
            .bind::<diesel::sql_types::Text, _>(table)
            .load(c)?;
            for Name { name } in partitions {
                if day_of(table, &name).is_some_and(|day| day + Duration::days(1) <= cutoff) {
                    c.batch_execute(&format!("DROP TABLE IF EXISTS {name}"))?;
                    dropped.push(name);
                }
            }
        }
        Ok(dropped)
    }

    #[cfg(feature = "test-support")]
    /// Which partition holds a batch's row of `table`, for tests.
    pub fn partition_of(&self, table: &str, batch_id: &str) -> Result<Option<String>, StoreError> {
        let mut conn = self.conn()?;
        let DbConnection::Postgresql(c) = &mut *conn else { return Ok(None) };
        let found: Option<Name> = diesel::sql_query(format!(
            "SELECT tableoid::regclass::text AS name FROM {table} WHERE batch_id = $1"
        ))
        .bind::<diesel::sql_types::Text, _>(batch_id)
        .get_result(c)
        .optional()?;
        Ok(found.map(|n| n.name))
    }
}
