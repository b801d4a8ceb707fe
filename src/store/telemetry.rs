//! Telemetry: storing accepted batches, per-instance summaries, erasure, retention and the
//! daily rollup.

use chrono::{DateTime, NaiveDateTime, Utc};
use diesel::prelude::*;
use diesel::upsert::excluded;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

use super::models::*;
use super::schema::*;
use super::{on_backend, DbConnection, Store, StoreError, ROWS_PER_STATEMENT};
use crate::protocol::{RoutePerformance, UsageCount};
use crate::sketch::Sketch;

/// Stores the batches of a group of check-ins, except those whose id was stored before, and
/// returns the ids stored now. `batches` must have distinct ids.
///
/// The batch rows go first with `ON CONFLICT DO NOTHING`: a retry, or a copy arriving at the
/// same moment through another replica (which waits on the first copy's uncommitted row),
/// inserts nothing, and so nothing else of it is stored either.
pub(super) fn insert_batches(
    conn: &mut DbConnection,
    batches: &[&StoredBatch],
) -> Result<BTreeSet<String>, StoreError> {
    let mut inserted = BTreeSet::new();
    match conn {
        DbConnection::Postgresql(c) => {
            for chunk in batches.chunks(ROWS_PER_STATEMENT) {
                let rows: Vec<&BatchRow> = chunk.iter().map(|b| &b.batch).collect();
                let ids: Vec<String> = diesel::insert_into(telemetry_batches::table)
                    .values(rows)
                    .on_conflict_do_nothing()
                    .returning(telemetry_batches::batch_id)
                    .get_results(c)?;
                inserted.extend(ids);
            }
        }
        // diesel runs a SQLite batch with RETURNING as one statement per row and expects a row
        // back from each; a batch already stored returns none (`NotFound`), so the rows go one
        // by one, counted by what each statement inserted. (In-process: no round trips.)
        DbConnection::Sqlite(c) => {
            for b in batches {
                let n = diesel::insert_into(telemetry_batches::table)
                    .values(&b.batch)
                    .on_conflict_do_nothing()
                    .execute(c)?;
                if n == 1 {
                    inserted.insert(b.batch.batch_id.clone());
                }
            }
        }
    }
    let stored: Vec<&StoredBatch> =
        batches.iter().copied().filter(|b| inserted.contains(&b.batch.batch_id)).collect();
    on_backend!(conn, c => {
        for chunk in stored.chunks(ROWS_PER_STATEMENT) {
            let payloads: Vec<&PayloadRow> = chunk.iter().map(|b| &b.payload).collect();
            diesel::insert_into(telemetry_payloads::table).values(payloads).execute(c)?;
        }
    });
    let errors: Vec<ErrorRow> = stored.iter().flat_map(|b| b.errors.iter().cloned()).collect();
    upsert_errors(conn, &merge_fingerprints(&errors))?;
    Ok(inserted)
}

/// Adds error groups to the deduplicated errors: counts add up, first and last seen widen,
/// the text is the latest. `rows` must have distinct (license, instance, fingerprint) keys.
fn upsert_errors(conn: &mut DbConnection, rows: &[ErrorRow]) -> Result<(), StoreError> {
    use diesel::dsl::case_when;
    use diesel::sql_types::BigInt;
    use diesel::IntoSql as _;
    use telemetry_errors::{count, error_type, first_seen, last_seen, message, stack};
    macro_rules! upsert {
        ($values:expr) => {
            diesel::insert_into(telemetry_errors::table)
                .values($values)
                .on_conflict((
                    telemetry_errors::license_id,
                    telemetry_errors::instance_id,
                    telemetry_errors::fingerprint,
                ))
                .do_update()
                .set((
                    // Saturates rather than overflowing: an overflow would fail the whole
                    // group's transaction on PostgreSQL and turn into a float on SQLite.
                    count.eq(case_when(
                        count.gt(i64::MAX.into_sql::<BigInt>() - excluded(count)),
                        i64::MAX.into_sql::<BigInt>(),
                    )
                    .otherwise(count + excluded(count))),
                    error_type.eq(excluded(error_type)),
                    message.eq(excluded(message)),
                    stack.eq(excluded(stack)),
                    first_seen.eq(case_when(excluded(first_seen).lt(first_seen), excluded(first_seen))
                        .otherwise(first_seen)),
                    last_seen.eq(case_when(excluded(last_seen).gt(last_seen), excluded(last_seen))
                        .otherwise(last_seen)),
                ))
        };
    }
    on_backend!(conn, c => {
        for chunk in rows.chunks(ROWS_PER_STATEMENT) {
            upsert!(chunk).execute(c)?;
        }
    });
    Ok(())
}

/// Merges error groups that share a fingerprint, so one upsert never touches a row twice.
fn merge_fingerprints(rows: &[ErrorRow]) -> Vec<ErrorRow> {
    let mut merged: BTreeMap<(&str, &str, &str), ErrorRow> = BTreeMap::new();
    for row in rows {
        merged
            .entry((row.license_id.as_str(), row.instance_id.as_str(), row.fingerprint.as_str()))
            .and_modify(|m| {
                m.count = m.count.saturating_add(row.count);
                m.first_seen = m.first_seen.min(row.first_seen);
                if row.last_seen >= m.last_seen {
                    m.last_seen = row.last_seen;
                    m.error_type.clone_from(&row.error_type);
                    m.message.clone_from(&row.message);
                    m.stack.clone_from(&row.stack);
                }
            })
            .or_insert_with(|| row.clone());
    }
    merged.into_values().collect()
}

/// One instance's telemetry over a window, as the admin API answers it.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct TelemetrySummary {
    pub instance_id: String,
    pub since: DateTime<Utc>,
    pub until: DateTime<Utc>,
    pub batches: i64,
    pub usage: Vec<FeatureSummary>,
    pub performance: Vec<RouteSummary>,
    pub errors: Vec<ErrorSummary>,
    pub sessions: SessionSummary,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct FeatureSummary {
    pub kind: String,
    pub name: String,
    pub count: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct RouteSummary {
    pub method: String,
    pub route: String,
    pub count: i64,
    pub errors: i64,
    /// Percentiles over the window (see `percentiles` for how they were found); `max_ms` is
    /// exact.
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub percentiles: Percentiles,
}

/// How a summary's percentiles were found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Percentiles {
    /// From the batches' sketches merged: within the sketch's 1% relative error.
    MergedSketches,
    /// Some batch carried no sketch this server reads: the batches' percentiles weighted by
    /// their request counts, an approximation.
    WeightedAverage,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ErrorSummary {
    pub fingerprint: String,
    #[serde(rename = "type")]
    pub error_type: String,
    pub message: String,
    pub stack: Vec<String>,
    pub count: i64,
    pub first_seen: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, utoipa::ToSchema)]
pub struct SessionSummary {
    pub count: i64,
    pub total_duration_s: i64,
    pub hourly: Vec<i64>,
}

/// How many rows an erasure or a retention pass removed, by table.
pub type Removed = BTreeMap<&'static str, usize>;

impl Store {
    /// One instance's telemetry received in `[since, until]`.
    pub fn telemetry_summary(
        &self,
        license_id: &str,
        instance_id: &str,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<TelemetrySummary, StoreError> {
        let (from, to) = (naive(since), naive(until));
        let mut conn = self.conn()?;
        let conn = &mut *conn;
        let in_window = telemetry_batches::table
            .filter(telemetry_batches::license_id.eq(license_id))
            .filter(telemetry_batches::instance_id.eq(instance_id))
            .filter(telemetry_batches::received_at.between(from, to))
            .select(telemetry_batches::batch_id);
        let batches: i64 = telemetry_batches::table
            .filter(telemetry_batches::license_id.eq(license_id))
            .filter(telemetry_batches::instance_id.eq(instance_id))
            .filter(telemetry_batches::received_at.between(from, to))
            .count()
            .get_result(conn)?;

        // The payloads are also filtered by their own received_at, so that on PostgreSQL only
        // the window's daily partitions are read.
        let bodies: Vec<Vec<u8>> = telemetry_payloads::table
            .filter(telemetry_payloads::received_at.between(from, to))
            .filter(telemetry_payloads::batch_id.eq_any(in_window))
            .select(telemetry_payloads::body)
            .load(conn)?;
        let payloads = bodies
            .iter()
            .map(|body| super::payload::decode::<Payload>(body))
            .collect::<Result<Vec<_>, _>>()?;
        let mut usage: BTreeMap<(String, String), i64> = BTreeMap::new();
        for entry in payloads.iter().flat_map(|p| &p.usage) {
            let sum = usage.entry((entry.kind.as_str().to_owned(), entry.name.clone())).or_default();
            *sum = sum.saturating_add(count(entry.count));
        }
        let mut usage: Vec<FeatureSummary> =
            usage.into_iter().map(|((kind, name), count)| FeatureSummary { kind, name, count }).collect();
        usage.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| (&a.kind, &a.name).cmp(&(&b.kind, &b.name))));
        let performance = merge_route_sketches(payloads.iter().flat_map(|p| p.performance.iter().cloned()));

        let errors: Vec<ErrorRow> = telemetry_errors::table
            .filter(telemetry_errors::license_id.eq(license_id))
            .filter(telemetry_errors::instance_id.eq(instance_id))
            .filter(telemetry_errors::last_seen.ge(from))
            .order(telemetry_errors::count.desc())
            .select(ErrorRow::as_select())
            .load(conn)?;
        let errors = errors
            .into_iter()
            .map(|e| -> Result<ErrorSummary, StoreError> {
                Ok(ErrorSummary {
                    fingerprint: e.fingerprint,
                    error_type: e.error_type,
                    message: e.message,
                    stack: parse_list(&e.stack, "telemetry_errors.stack")?,
                    count: e.count,
                    first_seen: utc(e.first_seen),
                    last_seen: utc(e.last_seen),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;

        let mut sessions = SessionSummary { hourly: vec![0; 24], ..Default::default() };
        for p in &payloads {
            sessions.count = sessions.count.saturating_add(count(p.sessions.count));
            sessions.total_duration_s =
                sessions.total_duration_s.saturating_add(count(p.sessions.total_duration_s));
            for (slot, n) in sessions.hourly.iter_mut().zip(&p.sessions.hourly) {
                *slot = slot.saturating_add(count(*n));
            }
        }
        Ok(TelemetrySummary {
            instance_id: instance_id.to_owned(),
            since,
            until,
            batches,
            usage,
            performance,
            errors,
            sessions,
        })
    }

    /// Erases everything stored from the telemetry of the instances named `instance_id` (of
    /// one license, or of every license that has one), in one transaction with `audit`.
    pub fn erase_telemetry(
        &self,
        instance_id: &str,
        license_id: Option<&str>,
        audit: Option<&super::Audit>,
    ) -> Result<Removed, StoreError> {
        // Every license's instance of that id when none is named: erasing more is the safe side.
        let licenses = || license_id.map_or_else(|| vec![None], |l| vec![Some(l)]);
        self.transaction(|conn| {
            let mut removed = delete_batch_children(conn, Batches::OfInstance { instance_id, license_id })?;
            let (mut batches, mut features, mut errors) = (0, 0, 0);
            for license in licenses() {
                let mut b = diesel::delete(telemetry_batches::table)
                    .filter(telemetry_batches::instance_id.eq(instance_id))
                    .into_boxed();
                let mut f = diesel::delete(telemetry_features::table)
                    .filter(telemetry_features::instance_id.eq(instance_id))
                    .into_boxed();
                let mut e = diesel::delete(telemetry_errors::table)
                    .filter(telemetry_errors::instance_id.eq(instance_id))
                    .into_boxed();
                if let Some(license) = license {
                    b = b.filter(telemetry_batches::license_id.eq(license));
                    f = f.filter(telemetry_features::license_id.eq(license));
                    e = e.filter(telemetry_errors::license_id.eq(license));
                }
                batches += b.execute(conn)?;
                features += f.execute(conn)?;
                errors += e.execute(conn)?;
            }
            removed.insert("telemetry_batches", batches);
            removed.insert("telemetry_features", features);
            removed.insert("telemetry_errors", errors);
            super::audit::write(conn, audit)?;
            Ok::<_, StoreError>(removed)
        })
    }

    /// Deletes raw telemetry and check-in history received before `cutoff`. Aggregated tables
    /// (features, errors, aggregates) are kept.
    pub fn purge_before(&self, cutoff: DateTime<Utc>) -> Result<Removed, StoreError> {
        let cutoff = naive(cutoff);
        self.transaction(|conn| {
            let mut removed = delete_batch_children(conn, Batches::ReceivedBefore(cutoff))?;
            removed.insert(
                "telemetry_batches",
                diesel::delete(telemetry_batches::table.filter(telemetry_batches::received_at.lt(cutoff)))
                    .execute(conn)?,
            );
            removed.insert(
                "check_ins",
                diesel::delete(check_ins::table.filter(check_ins::at.lt(cutoff))).execute(conn)?,
            );
            // The installs of released processes matter only to roll-ups of days whose
            // check-ins are still kept.
            removed.insert(
                "released_processes",
                diesel::delete(
                    super::schema::released_processes::table
                        .filter(super::schema::released_processes::released_at.lt(cutoff)),
                )
                .execute(conn)?,
            );
            // Webhook deliveries that are done (delivered or given up) go with the raw
            // telemetry; pending ones stay, however old.
            removed.insert(
                "webhook_deliveries",
                diesel::delete(
                    webhook_deliveries::table.filter(webhook_deliveries::created_at.lt(cutoff)).filter(
                        webhook_deliveries::delivered_at
                            .is_not_null()
                            .or(webhook_deliveries::gave_up_at.is_not_null()),
                    ),
                )
                .execute(conn)?,
            );
            Ok::<_, StoreError>(removed)
        })
    }

    #[cfg(feature = "test-support")]
    /// The daily aggregates of one day (tests; issue 12 reads them through the insights views).
    pub fn aggregates_of(&self, day: chrono::NaiveDate) -> Result<Vec<AggregateRow>, StoreError> {
        Ok(telemetry_aggregates::table
            .filter(telemetry_aggregates::day.eq(day))
            .order((telemetry_aggregates::metric, telemetry_aggregates::dimension))
            .select(AggregateRow::as_select())
            .load(&mut self.conn()?)?)
    }

    #[cfg(feature = "test-support")]
    /// Every stored text value of the telemetry tables, for the privacy tests.
    pub fn telemetry_text(&self) -> Result<Vec<String>, StoreError> {
        let mut conn = self.conn()?;
        let conn = &mut *conn;
        let mut out = Vec::new();
        let batches: Vec<BatchRow> = telemetry_batches::table.select(BatchRow::as_select()).load(conn)?;
        for b in batches {
            out.extend([b.app_version, b.user_count_range, b.environment, b.dropped, b.redactions]);
        }
        for body in telemetry_payloads::table.select(telemetry_payloads::body).load::<Vec<u8>>(conn)? {
            let payload: Payload = super::payload::decode(&body)?;
            out.push(serde_json::to_string(&payload).expect("a payload serialises"));
        }
        let errors: Vec<ErrorRow> = telemetry_errors::table.select(ErrorRow::as_select()).load(conn)?;
        out.extend(errors.into_iter().flat_map(|e| [e.fingerprint, e.error_type, e.message, e.stack]));
        let features: Vec<FeatureRow> =
            telemetry_features::table.select(FeatureRow::as_select()).load(conn)?;
        out.extend(features.into_iter().flat_map(|f| [f.kind, f.name]));
        let aggregates: Vec<AggregateRow> =
            telemetry_aggregates::table.select(AggregateRow::as_select()).load(conn)?;
        out.extend(aggregates.into_iter().flat_map(|a| [a.metric, a.dimension]));
        Ok(out)
    }

    #[cfg(feature = "test-support")]
    /// Every row of every table as text (a PostgreSQL row's text form; SQLite's `quote` of each
    /// column), with the deflated payloads inflated: what a privacy test searches, whatever
    /// table a later change adds.
    pub fn every_text(&self) -> Result<Vec<String>, StoreError> {
        #[derive(QueryableByName)]
        struct One {
            #[diesel(sql_type = diesel::sql_types::Text)]
            text: String,
        }
        let mut conn = self.conn()?;
        let mut out: Vec<String> = Vec::new();
        match &mut *conn {
            DbConnection::Postgresql(c) => {
                let tables: Vec<One> = diesel::sql_query(
                    "SELECT CAST(table_name AS TEXT) AS text FROM information_schema.tables \
                     WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'",
                )
                .load(c)?;
                for t in tables {
                    let rows: Vec<One> =
                        diesel::sql_query(format!("SELECT CAST(t AS TEXT) AS text FROM \"{}\" t", t.text))
                            .load(c)?;
                    out.extend(rows.into_iter().map(|r| r.text));
                }
            }
            DbConnection::Sqlite(c) => {
                let tables: Vec<One> = diesel::sql_query(
                    "SELECT name AS text FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'",
                )
                .load(c)?;
                for t in tables {
                    let columns: Vec<One> = diesel::sql_query(format!(
                        "SELECT name AS text FROM pragma_table_info('{}')",
                        t.text
                    ))
                    .load(c)?;
                    let row: Vec<String> =
                        columns.iter().map(|col| format!("COALESCE(quote(\"{}\"), '')", col.text)).collect();
                    let sql = format!(
                        "SELECT CAST({} AS TEXT) AS text FROM \"{}\"",
                        row.join(" || ' ' || "),
                        t.text
                    );
                    let rows: Vec<One> = diesel::sql_query(sql).load(c)?;
                    out.extend(rows.into_iter().map(|r| r.text));
                }
            }
        }
        drop(conn);
        out.extend(self.telemetry_text()?);
        Ok(out)
    }

    #[cfg(feature = "test-support")]
    /// How many rows each telemetry table holds for an instance, for tests.
    pub fn telemetry_counts(&self, instance_id: &str) -> Result<BTreeMap<&'static str, i64>, StoreError> {
        let mut conn = self.conn()?;
        let conn = &mut *conn;
        let mut out = BTreeMap::new();
        out.insert(
            "telemetry_batches",
            telemetry_batches::table
                .filter(telemetry_batches::instance_id.eq(instance_id))
                .count()
                .get_result(conn)?,
        );
        out.insert(
            "telemetry_payloads",
            telemetry_payloads::table
                .inner_join(
                    telemetry_batches::table.on(telemetry_batches::batch_id.eq(telemetry_payloads::batch_id)),
                )
                .filter(telemetry_batches::instance_id.eq(instance_id))
                .count()
                .get_result(conn)?,
        );
        out.insert(
            "telemetry_errors",
            telemetry_errors::table
                .filter(telemetry_errors::instance_id.eq(instance_id))
                .count()
                .get_result(conn)?,
        );
        out.insert(
            "telemetry_features",
            telemetry_features::table
                .filter(telemetry_features::instance_id.eq(instance_id))
                .count()
                .get_result(conn)?,
        );
        Ok(out)
    }
}

/// Which batches a deletion is about.
enum Batches<'a> {
    ReceivedBefore(NaiveDateTime),
    /// An instance's, of one license or of every license that has one of that id.
    OfInstance {
        instance_id: &'a str,
        license_id: Option<&'a str>,
    },
}

/// Deletes the raw payloads of some batches, before the batch rows themselves go. The same SQL
/// on both backends (`$n` placeholders work on both).
fn delete_batch_children(conn: &mut DbConnection, which: Batches<'_>) -> Result<Removed, StoreError> {
    use diesel::sql_types::{Text, Timestamp};
    let mut removed = Removed::new();
    {
        let table = "telemetry_payloads";
        let condition = match which {
            Batches::ReceivedBefore(_) => "received_at < $1",
            Batches::OfInstance { license_id: None, .. } => "instance_id = $1",
            Batches::OfInstance { license_id: Some(_), .. } => "instance_id = $1 AND license_id = $2",
        };
        let sql = format!(
            "DELETE FROM {table} WHERE batch_id IN (SELECT batch_id FROM telemetry_batches WHERE {condition})"
        );
        let n = match which {
            Batches::ReceivedBefore(t) => diesel::sql_query(sql).bind::<Timestamp, _>(t).execute(conn)?,
            Batches::OfInstance { instance_id, license_id: None } => {
                diesel::sql_query(sql).bind::<Text, _>(instance_id).execute(conn)?
            }
            Batches::OfInstance { instance_id, license_id: Some(license) } => {
                diesel::sql_query(sql).bind::<Text, _>(instance_id).bind::<Text, _>(license).execute(conn)?
            }
        };
        removed.insert(table, n);
    }
    Ok(removed)
}

/// A count as stored: batches carry at most `protocol::MAX_COUNT`, and anything larger (which
/// only an older build could have stored) saturates rather than wrapping to a negative.
pub(super) fn count(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Reads a JSON list stored by this module. Stored JSON is written only from validated
/// batches, so one that does not read back is damage or a bug: the read fails with
/// [`StoreError::Corrupt`] naming the column, rather than a plausible empty value standing in.
/// The usage of a stored payload, for the roll-up that reads nothing else.
#[derive(serde::Deserialize)]
pub(super) struct UsageOnly {
    pub usage: Vec<UsageCount>,
}

/// The request performance of a stored payload.
#[derive(serde::Deserialize)]
pub(super) struct RoutesOnly {
    pub performance: Vec<RoutePerformance>,
}

fn parse_list<T: serde::de::DeserializeOwned>(json: &str, what: &'static str) -> Result<Vec<T>, StoreError> {
    serde_json::from_str(json).map_err(|source| StoreError::Corrupt { what, source: source.into() })
}

/// Merges per-batch route figures: counts add up and `max_ms` is the maximum. Percentiles
/// come from the batches' sketches merged, exact within the sketch's 1% where every batch of
/// the route carries a dd1 sketch (what this crate's client sends); the protocol leaves the
/// sketch opaque and optional, so for a route where one is missing or of another kind the
/// percentiles are the batches' weighted by request count, an approximation, and say so.
fn merge_route_sketches(rows: impl Iterator<Item = RoutePerformance>) -> Vec<RouteSummary> {
    merge_routes(rows).into_iter().map(|(summary, _)| summary).collect()
}

/// [`merge_route_sketches`], with each route's merged sketch where there is one (every batch
/// of the route carried a dd1 sketch), for roll-ups that keep it to merge again.
pub(super) fn merge_routes(
    rows: impl Iterator<Item = RoutePerformance>,
) -> Vec<(RouteSummary, Option<Sketch>)> {
    let mut by_route: BTreeMap<(String, String), (RouteSummary, Option<Sketch>)> = BTreeMap::new();
    for p in rows {
        let (entry, merged) = by_route.entry((p.method.clone(), p.route.clone())).or_insert_with(|| {
            let summary = RouteSummary {
                method: p.method.clone(),
                route: p.route.clone(),
                count: 0,
                errors: 0,
                p50_ms: 0.0,
                p95_ms: 0.0,
                p99_ms: 0.0,
                max_ms: 0.0,
                percentiles: Percentiles::MergedSketches,
            };
            (summary, Some(Sketch::default()))
        });
        let (old, new) = (entry.count as f64, p.count as f64);
        let weigh = |a: f64, b: f64| if old + new > 0.0 { (a * old + b * new) / (old + new) } else { 0.0 };
        entry.p50_ms = weigh(entry.p50_ms, p.p50_ms);
        entry.p95_ms = weigh(entry.p95_ms, p.p95_ms);
        entry.p99_ms = weigh(entry.p99_ms, p.p99_ms);
        entry.max_ms = entry.max_ms.max(p.max_ms);
        entry.count = entry.count.saturating_add(count(p.count));
        entry.errors = entry.errors.saturating_add(count(p.errors));
        let sketch = (!p.sketch.is_empty()).then(|| Sketch::decode(&p.sketch).ok()).flatten();
        *merged = match (merged.take(), sketch) {
            (Some(mut m), Some(s)) => m.merge(&s).is_ok().then_some(m),
            _ => None,
        };
    }
    let mut out: Vec<(RouteSummary, Option<Sketch>)> = by_route
        .into_values()
        .map(|(mut summary, merged)| {
            match &merged {
                Some(sketch) => {
                    [summary.p50_ms, summary.p95_ms, summary.p99_ms] =
                        crate::protocol::percentiles_ms(sketch);
                }
                None => summary.percentiles = Percentiles::WeightedAverage,
            }
            (summary, merged)
        })
        .collect();
    out.sort_by_key(|(r, _)| std::cmp::Reverse(r.count));
    out
}
