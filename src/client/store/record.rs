//! Figures drained from the collector become rows, in the hour bucket of the flush: summed
//! with what the bucket already holds (sketches merged), each flush one transaction.

use chrono::{DateTime, NaiveDateTime, Utc};
use diesel::prelude::*;
use diesel::sqlite::SqliteConnection;
use diesel::upsert::excluded;

use super::rows::{add_sessions, session_of};
use super::schema::*;
use super::{clamp, corrupt, decode_sketch, hour_of, naive, LocalError, LocalStore};
use super::{ErrorGroupRow, RouteRow, SessionsRow, UsageRow};
use crate::client::telemetry::Figures;
use crate::protocol::{BatchLimits, ErrorGroup, RoutePerformance, Sessions};

impl LocalStore {
    /// Adds flushed figures to the tables, in the hour bucket of `now`.
    pub fn record(
        &self,
        figures: &Figures,
        now: DateTime<Utc>,
        limits: &BatchLimits,
    ) -> Result<(), LocalError> {
        if figures.is_empty() {
            return Ok(());
        }
        let bucket = hour_of(now);
        let mut conn = self.conn();
        conn.immediate_transaction(|c| {
            for u in &figures.usage {
                diesel::insert_into(usage_counts::table)
                    .values(UsageRow {
                        period_start: bucket,
                        kind: u.kind.as_str().into(),
                        name: u.name.clone(),
                        batch_id: String::new(),
                        count: clamp(u.count),
                    })
                    .on_conflict((
                        usage_counts::period_start,
                        usage_counts::kind,
                        usage_counts::name,
                        usage_counts::batch_id,
                    ))
                    .do_update()
                    .set(usage_counts::count.eq(usage_counts::count + excluded(usage_counts::count)))
                    .execute(c)?;
            }
            for r in &figures.performance {
                record_route(c, bucket, r)?;
            }
            let mut overflow = figures.dropped.overflow;
            for e in &figures.errors {
                overflow += record_error(c, e, limits.max_errors)?;
            }
            if figures.sessions.count > 0 {
                record_sessions(c, bucket, "", &figures.sessions)?;
            }
            let tallies = [
                ("dropped.sampled".to_string(), figures.dropped.sampled),
                ("dropped.throttled".to_string(), figures.dropped.throttled),
                ("dropped.overflow".to_string(), overflow),
            ];
            let redactions = figures.redactions.iter().map(|(rule, n)| (format!("redaction.{rule}"), *n));
            for (name, value) in tallies.into_iter().chain(redactions).filter(|(_, v)| *v > 0) {
                add_tally(c, &name, clamp(value))?;
            }
            for user in &figures.users {
                diesel::insert_into(seen_users::table)
                    .values((seen_users::user_hash.eq(user), seen_users::last_seen.eq(naive(now))))
                    .on_conflict(seen_users::user_hash)
                    .do_update()
                    .set(seen_users::last_seen.eq(naive(now)))
                    .execute(c)?;
            }
            for (name, health) in &figures.health {
                let status = health.as_str();
                diesel::insert_into(health_checks::table)
                    .values((
                        health_checks::name.eq(name),
                        health_checks::status.eq(status),
                        health_checks::checked_at.eq(naive(now)),
                    ))
                    .on_conflict(health_checks::name)
                    .do_update()
                    .set((health_checks::status.eq(status), health_checks::checked_at.eq(naive(now))))
                    .execute(c)?;
            }
            Ok(())
        })
    }
}

pub(super) fn add_tally(c: &mut SqliteConnection, name: &str, value: i64) -> QueryResult<usize> {
    diesel::insert_into(pending_tallies::table)
        .values((pending_tallies::name.eq(name), pending_tallies::value.eq(value)))
        .on_conflict(pending_tallies::name)
        .do_update()
        .set(pending_tallies::value.eq(pending_tallies::value + excluded(pending_tallies::value)))
        .execute(c)
}

fn record_route(
    c: &mut SqliteConnection,
    bucket: NaiveDateTime,
    r: &RoutePerformance,
) -> Result<(), LocalError> {
    let key = (bucket, r.method.as_str(), r.route.as_str(), "");
    let existing: Option<RouteRow> =
        route_latencies::table.find(key).select(RouteRow::as_select()).first(c).optional()?;
    let incoming = decode_sketch(&r.sketch)?;
    match existing {
        Some(row) => {
            let mut sketch = decode_sketch(&row.sketch)?;
            sketch.merge(&incoming).map_err(|e| corrupt("sketch", e))?;
            diesel::update(route_latencies::table.find(key))
                .set((
                    route_latencies::count.eq(row.count + clamp(r.count)),
                    route_latencies::errors.eq(row.errors + clamp(r.errors)),
                    route_latencies::max_ms.eq(row.max_ms.max(r.max_ms)),
                    route_latencies::sketch.eq(sketch.encode()),
                ))
                .execute(c)?;
        }
        None => {
            diesel::insert_into(route_latencies::table)
                .values(RouteRow {
                    period_start: bucket,
                    method: r.method.clone(),
                    route: r.route.clone(),
                    batch_id: String::new(),
                    count: clamp(r.count),
                    errors: clamp(r.errors),
                    max_ms: r.max_ms,
                    sketch: incoming.encode(),
                })
                .execute(c)?;
        }
    }
    Ok(())
}

/// Adds an error group; returns the events not kept because the bound on distinct unsent
/// groups was reached.
fn record_error(c: &mut SqliteConnection, e: &ErrorGroup, max_errors: usize) -> Result<u64, LocalError> {
    let key = (e.fingerprint.as_str(), "");
    let existing: Option<ErrorGroupRow> =
        error_groups::table.find(key).select(ErrorGroupRow::as_select()).first(c).optional()?;
    match existing {
        Some(row) => {
            diesel::update(error_groups::table.find(key))
                .set((
                    error_groups::count.eq(row.count + clamp(e.count)),
                    error_groups::first_seen.eq(row.first_seen.min(naive(e.first_seen))),
                    error_groups::last_seen.eq(row.last_seen.max(naive(e.last_seen))),
                ))
                .execute(c)?;
        }
        None => {
            let unsent: i64 =
                error_groups::table.filter(error_groups::batch_id.eq("")).count().get_result(c)?;
            if unsent as usize >= max_errors {
                return Ok(e.count);
            }
            diesel::insert_into(error_groups::table)
                .values(ErrorGroupRow {
                    fingerprint: e.fingerprint.clone(),
                    batch_id: String::new(),
                    error_type: e.error_type.clone(),
                    message: e.message.clone(),
                    stack: serde_json::to_string(&e.stack).map_err(|err| corrupt("stack", err))?,
                    count: clamp(e.count),
                    first_seen: naive(e.first_seen),
                    last_seen: naive(e.last_seen),
                })
                .execute(c)?;
        }
    }
    Ok(0)
}

pub(super) fn record_sessions(
    c: &mut SqliteConnection,
    bucket: NaiveDateTime,
    batch_id: &str,
    s: &Sessions,
) -> Result<(), LocalError> {
    let key = (bucket, batch_id);
    let existing: Option<SessionsRow> =
        session_counts::table.find(key).select(SessionsRow::as_select()).first(c).optional()?;
    let mut total = match &existing {
        Some(row) => session_of(row)?,
        None => Sessions::default(),
    };
    add_sessions(&mut total, s);
    let row = SessionsRow {
        period_start: bucket,
        batch_id: batch_id.into(),
        count: clamp(total.count),
        total_duration_s: clamp(total.total_duration_s),
        hourly: serde_json::to_string(&total.hourly).map_err(|e| corrupt("session hours", e))?,
    };
    if existing.is_some() {
        diesel::update(session_counts::table.find(key))
            .set((
                session_counts::count.eq(row.count),
                session_counts::total_duration_s.eq(row.total_duration_s),
                session_counts::hourly.eq(&row.hourly),
            ))
            .execute(c)?;
    } else {
        diesel::insert_into(session_counts::table).values(&row).execute(c)?;
    }
    Ok(())
}
