//! Keeps the local tables bounded: old rows roll up into coarser periods (counts summed,
//! sketches merged, so nothing unsent is lost by it), sent rows expire, and past the hard bound
//! the oldest go, unsent losses counted as dropped.

use chrono::{DateTime, NaiveDateTime, Utc};
use diesel::prelude::*;
use std::collections::BTreeMap;

use super::record::{add_tally, record_sessions};
use super::rows::{add_sessions, session_of};
use super::schema::*;
use super::{corrupt, day_of, decode_sketch, month_of, naive, LocalError, LocalStore};
use super::{RouteRow, SessionsRow, UsageRow};
use super::{ACTIVE_USERS_WINDOW, DAILY_FOR, HOURLY_FOR, MAX_ROWS, ROWS_PER_STATEMENT, SENT_KEPT_FOR};
use crate::protocol::Sessions;
use crate::sketch::Sketch;

/// What a roll-up did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RollUp {
    /// Rows merged into coarser periods.
    pub merged: u64,
    /// Rows removed (sent long ago, or past the bound).
    pub removed: u64,
    /// Unsent events removed past the bound, counted as dropped.
    pub dropped: u64,
}

impl LocalStore {
    /// Rolls old rows up into coarser periods (hourly rows older than two days into days, daily
    /// rows older than sixty days into months), removes sent rows older than
    /// [`SENT_KEPT_FOR`], and keeps each table within [`MAX_ROWS`], counting unsent events
    /// removed as dropped. Nothing unsent is lost by the roll-up itself: counts are summed and
    /// sketches merged.
    pub fn roll_up(&self, now: DateTime<Utc>) -> Result<RollUp, LocalError> {
        self.roll_up_within(now, MAX_ROWS)
    }

    /// [`LocalStore::roll_up`] with another bound on rows per table.
    pub fn roll_up_within(&self, now: DateTime<Utc>, max_rows: i64) -> Result<RollUp, LocalError> {
        let mut conn = self.conn();
        conn.immediate_transaction(|c| {
            let mut outcome = RollUp::default();
            let hourly_until = naive(now - HOURLY_FOR);
            let daily_until = naive(now - DAILY_FOR);
            // Decided by the day bucket, not the row's own time, so that rolling up again
            // moves nothing: a day bucket before the monthly line always becomes its month.
            let coarse = |t: NaiveDateTime| if day_of(t) < daily_until { month_of(t) } else { day_of(t) };

            // Events.
            let old: Vec<UsageRow> = usage_counts::table
                .filter(usage_counts::period_start.lt(hourly_until))
                .select(UsageRow::as_select())
                .load(c)?;
            let mut merged: BTreeMap<(NaiveDateTime, String, String, String), i64> = BTreeMap::new();
            for r in &old {
                *merged
                    .entry((coarse(r.period_start), r.kind.clone(), r.name.clone(), r.batch_id.clone()))
                    .or_default() += r.count;
            }
            if rewrite_needed(merged.len(), old.iter().map(|r| r.period_start), coarse) {
                outcome.merged += (old.len() - merged.len()) as u64;
                diesel::delete(usage_counts::table.filter(usage_counts::period_start.lt(hourly_until)))
                    .execute(c)?;
                let rows: Vec<UsageRow> = merged
                    .into_iter()
                    .map(|((period_start, kind, name, batch_id), count)| UsageRow {
                        period_start,
                        kind,
                        name,
                        batch_id,
                        count,
                    })
                    .collect();
                for chunk in rows.chunks(ROWS_PER_STATEMENT) {
                    diesel::insert_into(usage_counts::table).values(chunk).execute(c)?;
                }
            }

            // Routes: sketches merge exactly.
            let old: Vec<RouteRow> = route_latencies::table
                .filter(route_latencies::period_start.lt(hourly_until))
                .select(RouteRow::as_select())
                .load(c)?;
            let mut merged: BTreeMap<(NaiveDateTime, String, String, String), (RouteRow, Sketch)> =
                BTreeMap::new();
            for r in &old {
                let sketch = decode_sketch(&r.sketch)?;
                let key = (coarse(r.period_start), r.method.clone(), r.route.clone(), r.batch_id.clone());
                match merged.get_mut(&key) {
                    Some((m, s)) => {
                        m.count += r.count;
                        m.errors += r.errors;
                        m.max_ms = m.max_ms.max(r.max_ms);
                        s.merge(&sketch).map_err(|e| corrupt("sketch", e))?;
                    }
                    None => {
                        let mut row = r.clone();
                        row.period_start = key.0;
                        merged.insert(key, (row, sketch));
                    }
                }
            }
            if rewrite_needed(merged.len(), old.iter().map(|r| r.period_start), coarse) {
                outcome.merged += (old.len() - merged.len()) as u64;
                diesel::delete(route_latencies::table.filter(route_latencies::period_start.lt(hourly_until)))
                    .execute(c)?;
                for (_, (mut row, sketch)) in merged {
                    row.sketch = sketch.encode();
                    diesel::insert_into(route_latencies::table).values(&row).execute(c)?;
                }
            }

            // Sessions.
            let old: Vec<SessionsRow> = session_counts::table
                .filter(session_counts::period_start.lt(hourly_until))
                .select(SessionsRow::as_select())
                .load(c)?;
            let mut merged: BTreeMap<(NaiveDateTime, String), Sessions> = BTreeMap::new();
            for r in &old {
                let entry = merged.entry((coarse(r.period_start), r.batch_id.clone())).or_default();
                add_sessions(entry, &session_of(r)?);
            }
            if rewrite_needed(merged.len(), old.iter().map(|r| r.period_start), coarse) {
                outcome.merged += (old.len() - merged.len()) as u64;
                diesel::delete(session_counts::table.filter(session_counts::period_start.lt(hourly_until)))
                    .execute(c)?;
                for ((period_start, batch_id), s) in merged {
                    record_sessions(c, period_start, &batch_id, &s)?;
                }
            }

            // Sent long ago: kept no longer.
            let sent_until = naive(now - SENT_KEPT_FOR);
            for (table, time) in [
                ("usage_counts", "period_start"),
                ("route_latencies", "period_start"),
                ("session_counts", "period_start"),
                ("error_groups", "last_seen"),
            ] {
                let removed =
                    diesel::sql_query(format!("DELETE FROM {table} WHERE batch_id <> '' AND {time} < $1"))
                        .bind::<diesel::sql_types::Timestamp, _>(sent_until)
                        .execute(c)?;
                outcome.removed += removed as u64;
            }
            diesel::delete(
                seen_users::table.filter(seen_users::last_seen.lt(naive(now - ACTIVE_USERS_WINDOW))),
            )
            .execute(c)?;

            // The hard bound: the oldest rows go, sent ones first; unsent events lost are
            // counted.
            let events: i64 = usage_counts::table.count().get_result(c)?;
            if events > max_rows {
                let excess = events - max_rows;
                let victims: Vec<UsageRow> = usage_counts::table
                    .select(UsageRow::as_select())
                    .order(((usage_counts::batch_id.eq("")), usage_counts::period_start))
                    .limit(excess)
                    .load(c)?;
                let mut lost = 0;
                for v in &victims {
                    diesel::delete(usage_counts::table.find((v.period_start, &v.kind, &v.name, &v.batch_id)))
                        .execute(c)?;
                    if v.batch_id.is_empty() {
                        lost += v.count;
                    }
                }
                outcome.removed += victims.len() as u64;
                outcome.dropped += lost as u64;
                if lost > 0 {
                    add_tally(c, "dropped.overflow", lost)?;
                }
            }
            for table in ["route_latencies", "session_counts"] {
                let removed = diesel::sql_query(format!(
                    "DELETE FROM {table} WHERE rowid IN (SELECT rowid FROM {table} ORDER BY batch_id = '', \
                     period_start LIMIT max(0, (SELECT count(*) FROM {table}) - $1))"
                ))
                .bind::<diesel::sql_types::BigInt, _>(max_rows)
                .execute(c)?;
                outcome.removed += removed as u64;
            }
            Ok(outcome)
        })
    }
}

/// Whether rolled-up rows differ from the rows read: fewer of them, or any moved to a coarser
/// period.
fn rewrite_needed(
    merged: usize,
    starts: impl ExactSizeIterator<Item = NaiveDateTime>,
    coarse: impl Fn(NaiveDateTime) -> NaiveDateTime,
) -> bool {
    let read = starts.len();
    let mut starts = starts;
    merged < read || starts.any(|t| coarse(t) != t)
}
