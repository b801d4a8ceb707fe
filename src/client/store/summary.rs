//! What the store holds, read for people: the summary of recent hours the host application's
//! telemetry scope serves, the full export `licensor telemetry export` prints, and `clear`.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use serde::Serialize;
use std::collections::BTreeMap;

use super::rows::{merge_error_rows, merge_route_rows, sum_sessions, sum_usage};
use super::schema::*;
use super::{hour_of, naive, LedgerEntry, LocalError, LocalStore, Outgoing};
use super::{ErrorGroupRow, RouteRow, SessionsRow, UsageRow};
use crate::protocol::{ErrorGroup, Sessions, UsageCount};

/// Everything the store holds about telemetry, for `licensor telemetry export`.
#[derive(Debug, Clone, Serialize)]
pub struct Export {
    pub events: Vec<UsageRow>,
    pub performance: Vec<RouteRow>,
    pub errors: Vec<ErrorGroupRow>,
    pub sessions: Vec<SessionsRow>,
    pub tallies: BTreeMap<String, i64>,
    pub outbox: Option<Outgoing>,
    pub ledger: Vec<LedgerEntry>,
}

/// A route's figures over a window, sketches merged.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RouteLatency {
    pub method: String,
    pub route: String,
    pub count: u64,
    pub errors: u64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// The local figures over time, for the dashboard's charts.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct LocalSeries {
    /// Each point's period start, oldest first.
    pub periods: Vec<DateTime<Utc>>,
    /// Usage counts (features, API calls, commands, UI actions) in the period.
    pub usage: Vec<u64>,
    /// Requests tracked in the period, and how many of them failed.
    pub requests: Vec<u64>,
    pub errors: Vec<u64>,
    /// The 95th percentile of request latency across routes, from the merged sketches.
    pub p95_ms: Vec<Option<f64>>,
}

/// What the store holds for the last hours, for the host application's summary route.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LocalSummary {
    #[serde(with = "crate::time::rfc3339")]
    pub since: DateTime<Utc>,
    pub usage: Vec<UsageCount>,
    pub performance: Vec<RouteLatency>,
    pub errors: Vec<ErrorGroup>,
    pub sessions: Sessions,
}

impl LocalStore {
    /// Everything held about telemetry.
    pub fn export(&self) -> Result<Export, LocalError> {
        let mut conn = self.conn();
        conn.transaction(|c| {
            Ok(Export {
                events: usage_counts::table
                    .select(UsageRow::as_select())
                    .order((usage_counts::period_start, usage_counts::kind, usage_counts::name))
                    .load(c)?,
                performance: route_latencies::table
                    .select(RouteRow::as_select())
                    .order((route_latencies::period_start, route_latencies::route))
                    .load(c)?,
                errors: error_groups::table
                    .select(ErrorGroupRow::as_select())
                    .order(error_groups::first_seen)
                    .load(c)?,
                sessions: session_counts::table
                    .select(SessionsRow::as_select())
                    .order(session_counts::period_start)
                    .load(c)?,
                tallies: pending_tallies::table
                    .select((pending_tallies::name, pending_tallies::value))
                    .load::<(String, i64)>(c)?
                    .into_iter()
                    .collect(),
                outbox: outbox::table.select(Outgoing::as_select()).first(c).optional()?,
                ledger: ledger::table
                    .select(LedgerEntry::as_select())
                    .order(ledger::acknowledged_at.desc())
                    .load(c)?,
            })
        })
    }

    /// Deletes every telemetry figure held (and the outbox), and with `ledger` the ledger too.
    /// The verifier's state (instance id, lease) stays. Returns the rows deleted.
    pub fn clear(&self, ledger: bool) -> Result<usize, LocalError> {
        self.delete_unsent(true, ledger)
    }

    /// Deletes the usage details collected and not yet sent (usage, request figures, errors,
    /// sessions) and the waiting batch, keeping health checks and the ledger: what switching
    /// to the basic level discards. Returns the rows deleted.
    pub fn clear_details(&self) -> Result<usize, LocalError> {
        self.delete_unsent(false, false)
    }

    fn delete_unsent(&self, health: bool, ledger: bool) -> Result<usize, LocalError> {
        let mut conn = self.conn();
        conn.immediate_transaction(|c| {
            let mut n = diesel::delete(usage_counts::table).execute(c)?;
            n += diesel::delete(route_latencies::table).execute(c)?;
            n += diesel::delete(error_groups::table).execute(c)?;
            n += diesel::delete(session_counts::table).execute(c)?;
            n += diesel::delete(pending_tallies::table).execute(c)?;
            n += diesel::delete(seen_users::table).execute(c)?;
            n += diesel::delete(outbox::table).execute(c)?;
            if health {
                n += diesel::delete(health_checks::table).execute(c)?;
            }
            if ledger {
                n += diesel::delete(ledger::table).execute(c)?;
            }
            Ok(n)
        })
    }

    /// The figures of the last `hours` over time, one point per stored period (an hour, or a
    /// day for rows rolled up), sent or not: what the local dashboard draws.
    pub fn series(&self, hours: u32, now: DateTime<Utc>) -> Result<LocalSeries, LocalError> {
        let from = hour_of(now - chrono::Duration::hours(i64::from(hours)));
        let mut conn = self.conn();
        let (usage, routes) = conn.transaction(|c| {
            let usage: Vec<(chrono::NaiveDateTime, i64)> = usage_counts::table
                .filter(usage_counts::period_start.ge(from))
                .select((usage_counts::period_start, usage_counts::count))
                .load(c)?;
            let routes: Vec<RouteRow> = route_latencies::table
                .filter(route_latencies::period_start.ge(from))
                .select(RouteRow::as_select())
                .load(c)?;
            Ok::<_, LocalError>((usage, routes))
        })?;
        #[derive(Default)]
        struct Point {
            usage: u64,
            requests: u64,
            errors: u64,
            sketch: Option<crate::sketch::Sketch>,
        }
        let mut points: BTreeMap<chrono::NaiveDateTime, Point> = BTreeMap::new();
        for (at, count) in usage {
            points.entry(at).or_default().usage += count.max(0) as u64;
        }
        for r in &routes {
            let point = points.entry(r.period_start).or_default();
            point.requests += r.count.max(0) as u64;
            point.errors += r.errors.max(0) as u64;
            let sketch = super::decode_sketch(&r.sketch)?;
            match &mut point.sketch {
                Some(s) => s.merge(&sketch).map_err(|e| super::corrupt("sketch", e))?,
                None => point.sketch = Some(sketch),
            }
        }
        let mut series = LocalSeries::default();
        for (at, p) in points {
            series.periods.push(super::utc(at));
            series.usage.push(p.usage);
            series.requests.push(p.requests);
            series.errors.push(p.errors);
            series.p95_ms.push(p.sketch.and_then(|s| s.quantile(0.95)));
        }
        Ok(series)
    }

    /// The figures of the last `hours` (by hour bucket, so up to an hour more), sent or not.
    pub fn summary(&self, hours: u32, now: DateTime<Utc>) -> Result<LocalSummary, LocalError> {
        let since = now - chrono::Duration::hours(i64::from(hours));
        let from = hour_of(since);
        let mut conn = self.conn();
        conn.transaction(|c| {
            let events: Vec<UsageRow> = usage_counts::table
                .filter(usage_counts::period_start.ge(from))
                .select(UsageRow::as_select())
                .load(c)?;
            let routes: Vec<RouteRow> = route_latencies::table
                .filter(route_latencies::period_start.ge(from))
                .select(RouteRow::as_select())
                .load(c)?;
            let errors: Vec<ErrorGroupRow> = error_groups::table
                .filter(error_groups::last_seen.ge(naive(since)))
                .select(ErrorGroupRow::as_select())
                .load(c)?;
            let sessions: Vec<SessionsRow> = session_counts::table
                .filter(session_counts::period_start.ge(from))
                .select(SessionsRow::as_select())
                .load(c)?;
            let mut usage = sum_usage(&events)?;
            usage.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.name.cmp(&b.name)));
            let performance = merge_route_rows(&routes)?
                .into_iter()
                .map(|r| RouteLatency {
                    method: r.method,
                    route: r.route,
                    count: r.count,
                    errors: r.errors,
                    p50_ms: r.p50_ms,
                    p95_ms: r.p95_ms,
                    p99_ms: r.p99_ms,
                    max_ms: r.max_ms,
                })
                .collect();
            Ok(LocalSummary {
                since,
                usage,
                performance,
                errors: merge_error_rows(&errors)?,
                sessions: sum_sessions(&sessions)?,
            })
        })
    }
}
