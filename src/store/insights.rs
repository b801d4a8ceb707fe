//! The vendor's insights: the daily roll-ups they read (`install_days`, `route_days` and the
//! fleet figures in `telemetry_aggregates`), and the views themselves.
//!
//! Invariants: the views read roll-ups (and the deduplicated error groups, the licenses and
//! their instances), never raw batches, so their cost grows with installs x days rather than
//! with events; a roll-up of a day replaces that day's rows in the caller's transaction, so a
//! re-run never double-counts. An install is one deployment under a license (the id its check-ins
//! and batches name, or its process's instance id for a client before installs): every process
//! of it counts once.

use chrono::{DateTime, Duration, NaiveDate, NaiveDateTime, Utc};
use diesel::prelude::*;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::models::*;
use super::schema::*;
use super::telemetry::{merge_routes, Percentiles, RouteSummary};
use super::{naive, on_backend, utc, DbConnection, Store, StoreError, ROWS_PER_STATEMENT};
use crate::license::Tier;
use crate::protocol::{CheckInStatus, RoutePerformance};
use crate::reach::Reach;

/// An install: (license id, install id).
pub(super) type Install = (String, String);

/// One install's row for one day.
#[derive(Debug, Clone, PartialEq, Queryable, Selectable, Insertable)]
#[diesel(table_name = install_days)]
pub struct InstallDay {
    pub day: NaiveDate,
    pub license_id: String,
    /// The install (its process's instance id for a client before installs).
    pub install_id: String,
    pub tier: String,
    pub software_version: String,
    pub lease_until: NaiveDateTime,
    pub checked_in: bool,
    pub user_count_range: String,
    pub os: String,
    pub arch: String,
    pub modules: String,
    pub uptime_hours: f64,
    pub health: String,
}

/// Performance of one route and version on one day, across installs.
#[derive(Debug, Clone, PartialEq, Queryable, Selectable, Insertable)]
#[diesel(table_name = route_days)]
pub struct RouteDay {
    pub day: NaiveDate,
    pub method: String,
    pub route: String,
    pub software_version: String,
    pub count: i64,
    pub errors: i64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub sketch: String,
    pub installs: i64,
}

pub(super) fn midnight(day: NaiveDate) -> NaiveDateTime {
    day.and_hms_opt(0, 0, 0).expect("midnight exists")
}

/// The installs behind `rows` (one figure's days) as one reach; `None` when a day has none
/// (rolled up before reach was kept).
pub(super) fn merged_reach<'a>(
    rows: impl Iterator<Item = &'a AggregateRow>,
) -> Result<Option<Reach>, StoreError> {
    let mut merged = Reach::default();
    for row in rows {
        if row.reach.is_empty() {
            return Ok(None);
        }
        let reach = Reach::decode(&row.reach)
            .map_err(|e| StoreError::Corrupt { what: "telemetry_aggregates.reach", source: e.into() })?;
        merged.merge(&reach);
    }
    Ok(Some(merged))
}

/// The days a view covers: the `days` whole UTC days before `today` (the roll-ups hold whole
/// days, rolled up after they end).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Period {
    /// The first day (inclusive).
    pub from: NaiveDate,
    /// The day after the last (exclusive): today.
    pub until: NaiveDate,
    pub days: u32,
}

impl Period {
    /// The `days` days before `now`'s day.
    pub fn ending(now: DateTime<Utc>, days: u32) -> Period {
        let until = now.date_naive();
        Period { from: until - Duration::days(i64::from(days)), until, days }
    }

    /// The period of the same length just before this one.
    pub fn previous(&self) -> Period {
        Period { from: self.from - Duration::days(i64::from(self.days)), until: self.from, days: self.days }
    }
}

/// The overview: installs active per day, by tier and version, new and lapsed, and check-in
/// outcomes.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Overview {
    pub period: Period,
    pub days: Vec<OverviewDay>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, utoipa::ToSchema)]
pub struct OverviewDay {
    pub day: NaiveDate,
    pub active: i64,
    pub by_tier: BTreeMap<String, i64>,
    pub by_version: BTreeMap<String, i64>,
    /// Active that day and not the day before: a first activation or a return.
    pub new: i64,
    /// Active the day before and not that day.
    pub lapsed: i64,
    /// Check-ins that day, by status.
    pub check_ins: BTreeMap<String, i64>,
}

/// Usage of one kind (features, API calls, commands or UI actions) across installs.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Usage {
    pub period: Period,
    pub kind: String,
    /// Distinct installs active during the period.
    pub active_installs: i64,
    pub names: Vec<NameUsage>,
    /// The names whose count grew most against the previous period: what to build next.
    pub rising: Vec<NameUsage>,
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct NameUsage {
    pub name: String,
    pub count: i64,
    /// Distinct installs that used it during the period.
    pub installs: i64,
    /// `installs` over the period's active installs.
    pub share: f64,
    pub previous_count: i64,
    /// The relative change against the previous period (0.25 for +25%); `null` when the
    /// previous period had none.
    pub change: Option<f64>,
}

/// Request performance per route, overall and by version.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Performance {
    pub period: Period,
    pub routes: Vec<RoutePerformanceView>,
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct RoutePerformanceView {
    #[serde(flatten)]
    pub overall: RouteFigures,
    pub by_version: BTreeMap<String, RouteFigures>,
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct RouteFigures {
    pub method: String,
    pub route: String,
    pub requests: i64,
    pub errors: i64,
    pub error_rate: f64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub percentiles: Percentiles,
}

impl From<RouteSummary> for RouteFigures {
    fn from(s: RouteSummary) -> RouteFigures {
        RouteFigures {
            error_rate: ratio(s.errors, s.count),
            method: s.method,
            route: s.route,
            requests: s.count,
            errors: s.errors,
            p50_ms: s.p50_ms,
            p95_ms: s.p95_ms,
            p99_ms: s.p99_ms,
            max_ms: s.max_ms,
            percentiles: s.percentiles,
        }
    }
}

/// Error groups across installs.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Errors {
    pub period: Period,
    /// When given: only the groups first seen since this version first ran anywhere.
    pub since_version: Option<String>,
    pub groups: Vec<ErrorGroupView>,
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ErrorGroupView {
    pub fingerprint: String,
    #[serde(rename = "type")]
    pub error_type: String,
    /// Scrubbed, as stored; the latest text of the group.
    pub message: String,
    pub installs: i64,
    pub count: i64,
    pub first_seen: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
    /// The versions the affected installs run now.
    pub versions: Vec<String>,
    /// The newest version that had appeared (anywhere) by the group's first sighting.
    pub first_seen_version: Option<String>,
}

/// The fleet's environment on the period's last rolled-up day.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct EnvironmentView {
    pub period: Period,
    /// The day the figures are of (`null` when nothing was rolled up in the period).
    pub day: Option<NaiveDate>,
    /// Installs that reported an environment.
    pub installs: i64,
    pub user_count_ranges: Vec<Share>,
    pub modules: Vec<Share>,
    pub os: Vec<Share>,
    pub arch: Vec<Share>,
    /// `name:state` of each health check.
    pub health: Vec<Share>,
    pub uptime_hours_mean: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Share {
    pub name: String,
    pub installs: i64,
    pub share: f64,
}

/// Seat use per license and the licenses that need attention.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct LicensesView {
    pub period: Period,
    pub licenses: Vec<SeatUse>,
    pub at_risk: AtRisk,
    /// Licenses expiring in each of the next 12 weeks (weeks start on the view's day).
    pub expirations_per_week: Vec<WeekExpirations>,
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct SeatUse {
    pub license_id: String,
    pub licensee: String,
    pub tier: String,
    pub revoked: bool,
    pub expires_at: Option<DateTime<Utc>>,
    pub seats: i64,
    pub in_use: i64,
    /// The most installs active on one day of the period.
    pub peak: i64,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, utoipa::ToSchema)]
pub struct AtRisk {
    /// Licenses with instances past their check-in time.
    pub overdue: Vec<RiskEntry>,
    /// Of those instances, the ones still running on their grace period (seat still held).
    pub in_grace: Vec<RiskEntry>,
    /// Licenses expiring within 30 days.
    pub expiring: Vec<RiskEntry>,
    /// Licenses with every seat in use.
    pub at_seat_limit: Vec<RiskEntry>,
    /// Licenses with check-ins refused for missing telemetry during the period.
    pub telemetry_refused: Vec<RiskEntry>,
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct RiskEntry {
    pub license_id: String,
    pub licensee: String,
    /// What the risk counts: instances (overdue, in grace), seats in use (at the limit),
    /// refused check-ins; for `expiring`, the days left.
    pub count: i64,
    pub expires_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct WeekExpirations {
    pub week_start: NaiveDate,
    pub licenses: i64,
    /// The same, per tier (tiers with none are left out).
    pub by_tier: BTreeMap<String, i64>,
}

fn ratio(part: i64, whole: i64) -> f64 {
    if whole <= 0 {
        0.0
    } else {
        ((part as f64 / whole as f64) * 10_000.0).round() / 10_000.0
    }
}

#[derive(QueryableByName)]
struct NameRow {
    #[diesel(sql_type = diesel::sql_types::Text)]
    name: String,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    installs: i64,
}

/// The most error groups the errors view lists (the most widespread first).
pub const MAX_ERROR_GROUPS: usize = 500;

#[derive(QueryableByName)]
struct GroupSums {
    #[diesel(sql_type = diesel::sql_types::Text)]
    fingerprint: String,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    installs: i64,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    total: i64,
    #[diesel(sql_type = diesel::sql_types::Timestamp)]
    first_seen: NaiveDateTime,
    #[diesel(sql_type = diesel::sql_types::Timestamp)]
    last_seen: NaiveDateTime,
}

#[derive(QueryableByName)]
struct CountRow {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    n: i64,
}

#[derive(QueryableByName)]
struct LicenseCount {
    #[diesel(sql_type = diesel::sql_types::Text)]
    license_id: String,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    n: i64,
}

impl Store {
    #[cfg(feature = "test-support")]
    /// Empties every figure's reach, as days rolled up before reach was kept have it (tests).
    pub fn forget_reach(&self) -> Result<usize, StoreError> {
        Ok(diesel::update(telemetry_aggregates::table)
            .set(telemetry_aggregates::reach.eq(""))
            .execute(&mut self.conn()?)?)
    }

    #[cfg(feature = "test-support")]
    /// Deletes one metric's daily figures, as days rolled up before it was kept lack it (tests).
    pub fn forget_figures(&self, metric: &str) -> Result<usize, StoreError> {
        Ok(diesel::delete(telemetry_aggregates::table.filter(telemetry_aggregates::metric.eq(metric)))
            .execute(&mut self.conn()?)?)
    }

    /// The aggregates of `metrics` on the days of `period`.
    fn aggregates_in(
        conn: &mut DbConnection,
        period: &Period,
        metrics: &[&str],
    ) -> Result<Vec<AggregateRow>, StoreError> {
        Ok(telemetry_aggregates::table
            .filter(telemetry_aggregates::day.ge(period.from))
            .filter(telemetry_aggregates::day.lt(period.until))
            .filter(telemetry_aggregates::metric.eq_any(metrics))
            .order((telemetry_aggregates::day, telemetry_aggregates::metric, telemetry_aggregates::dimension))
            .select(AggregateRow::as_select())
            .load(conn)?)
    }

    /// Distinct installs active during `period`: the days' reach merged, or, where a day was
    /// rolled up before reach was kept, a distinct count over the period's install-days.
    fn active_installs(conn: &mut DbConnection, period: &Period) -> Result<i64, StoreError> {
        let rows = Self::aggregates_in(conn, period, &["active"])?;
        if let Some(reach) = merged_reach(rows.iter())? {
            return Ok(reach.estimate());
        }
        let sql = "SELECT COUNT(*) AS n FROM (SELECT DISTINCT license_id, install_id FROM install_days \
                   WHERE day >= $1 AND day < $2) AS t";
        let row: CountRow = on_backend!(conn, c => {
            diesel::sql_query(sql)
                .bind::<diesel::sql_types::Date, _>(period.from)
                .bind::<diesel::sql_types::Date, _>(period.until)
                .get_result(c)?
        });
        Ok(row.n)
    }

    /// The overview of `period`.
    pub fn insights_overview(&self, period: Period) -> Result<Overview, StoreError> {
        let mut conn = self.conn()?;
        let rows = Self::aggregates_in(
            &mut conn,
            &period,
            &["active", "active.tier", "active.version", "instances.new", "instances.lapsed", "check_ins"],
        )?;
        let mut days: BTreeMap<NaiveDate, OverviewDay> = BTreeMap::new();
        let mut day = period.from;
        while day < period.until {
            days.insert(day, OverviewDay { day, ..Default::default() });
            day += Duration::days(1);
        }
        for row in rows {
            let Some(d) = days.get_mut(&row.day) else { continue };
            let n = row.value as i64;
            match row.metric.as_str() {
                "active" => d.active = n,
                "active.tier" => _ = d.by_tier.insert(row.dimension, n),
                "active.version" => _ = d.by_version.insert(row.dimension, n),
                "instances.new" => d.new = n,
                "instances.lapsed" => d.lapsed = n,
                _ => _ = d.check_ins.insert(row.dimension, n),
            }
        }
        Ok(Overview { period, days: days.into_values().collect() })
    }

    /// Usage of `kind` (`feature`, `api`, `command`, `ui_action`) during `period`, against the
    /// period before.
    pub fn insights_usage(&self, period: Period, kind: &str) -> Result<Usage, StoreError> {
        let mut conn = self.conn()?;
        let metric = format!("usage.{kind}");
        // The counts alone: the reach sketches (up to 5.5 KB a row) are read once, below.
        let totals = |conn: &mut DbConnection, p: &Period| -> Result<BTreeMap<String, i64>, StoreError> {
            let rows: Vec<(String, f64)> = telemetry_aggregates::table
                .filter(telemetry_aggregates::day.ge(p.from))
                .filter(telemetry_aggregates::day.lt(p.until))
                .filter(telemetry_aggregates::metric.eq(&metric))
                .select((telemetry_aggregates::dimension, telemetry_aggregates::value))
                .load(conn)?;
            let mut out: BTreeMap<String, i64> = BTreeMap::new();
            for (name, value) in rows {
                let sum = out.entry(name).or_default();
                *sum = sum.saturating_add(value as i64);
            }
            Ok(out)
        };
        let now = totals(&mut conn, &period)?;
        let before = totals(&mut conn, &period.previous())?;
        let rows = Self::aggregates_in(&mut conn, &period, &[metric.as_str()])?;
        let mut by_name: BTreeMap<&str, Vec<&AggregateRow>> = BTreeMap::new();
        for row in &rows {
            by_name.entry(row.dimension.as_str()).or_default().push(row);
        }
        let mut installs: HashMap<String, i64> = HashMap::new();
        let mut complete = true;
        for (name, days) in &by_name {
            match merged_reach(days.iter().copied())? {
                Some(reach) => _ = installs.insert((*name).to_owned(), reach.estimate()),
                None => complete = false,
            }
        }
        if !complete {
            // Days rolled up before reach was kept: a distinct count over the install-days.
            let sql = "SELECT name, COUNT(*) AS installs FROM (SELECT DISTINCT name, license_id, \
                       COALESCE(install_id, instance_id) AS install \
                       FROM telemetry_features WHERE kind = $1 AND day >= $2 AND day < $3) AS t GROUP BY name";
            let found: Vec<NameRow> = on_backend!(&mut *conn, c => {
                diesel::sql_query(sql)
                    .bind::<diesel::sql_types::Text, _>(kind)
                    .bind::<diesel::sql_types::Date, _>(period.from)
                    .bind::<diesel::sql_types::Date, _>(period.until)
                    .load(c)?
            });
            installs = found.into_iter().map(|r| (r.name, r.installs)).collect();
        }
        let active_installs = Self::active_installs(&mut conn, &period)?;
        let mut names: Vec<NameUsage> = now
            .into_iter()
            .map(|(name, count)| {
                let previous_count = before.get(&name).copied().unwrap_or(0);
                let n = installs.get(&name).copied().unwrap_or(0);
                NameUsage {
                    count,
                    installs: n,
                    share: ratio(n, active_installs),
                    previous_count,
                    change: (previous_count > 0).then(|| ratio(count - previous_count, previous_count)),
                    name,
                }
            })
            .collect();
        names.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.name.cmp(&b.name)));
        let mut rising: Vec<NameUsage> =
            names.iter().filter(|n| n.count > n.previous_count).cloned().collect();
        rising.sort_by(|a, b| {
            (b.count - b.previous_count).cmp(&(a.count - a.previous_count)).then_with(|| a.name.cmp(&b.name))
        });
        rising.truncate(10);
        Ok(Usage { period, kind: kind.to_owned(), active_installs, names, rising })
    }

    /// Request performance per route during `period`, overall and by version.
    pub fn insights_performance(&self, period: Period) -> Result<Performance, StoreError> {
        let rows: Vec<RouteDay> = route_days::table
            .filter(route_days::day.ge(period.from))
            .filter(route_days::day.lt(period.until))
            .select(RouteDay::as_select())
            .load(&mut self.conn()?)?;
        let as_batch = |r: &RouteDay| RoutePerformance {
            method: r.method.clone(),
            route: r.route.clone(),
            count: r.count.max(0) as u64,
            errors: r.errors.max(0) as u64,
            p50_ms: r.p50_ms,
            p95_ms: r.p95_ms,
            p99_ms: r.p99_ms,
            max_ms: r.max_ms,
            sketch: r.sketch.clone(),
        };
        let overall = merge_routes(rows.iter().map(as_batch));
        let mut by_version: BTreeMap<(String, String), BTreeMap<String, RouteFigures>> = BTreeMap::new();
        let versions: BTreeSet<&str> = rows.iter().map(|r| r.software_version.as_str()).collect();
        for version in versions {
            let of_version = rows.iter().filter(|r| r.software_version == version).map(as_batch);
            for (summary, _) in merge_routes(of_version) {
                by_version
                    .entry((summary.method.clone(), summary.route.clone()))
                    .or_default()
                    .insert(version.to_owned(), summary.into());
            }
        }
        let routes = overall
            .into_iter()
            .map(|(summary, _)| {
                let key = (summary.method.clone(), summary.route.clone());
                RoutePerformanceView {
                    overall: summary.into(),
                    by_version: by_version.remove(&key).unwrap_or_default(),
                }
            })
            .collect();
        Ok(Performance { period, routes })
    }

    /// Error groups seen during `period` across installs; with `since_version`, only those
    /// first seen since that version first ran.
    pub fn insights_errors(&self, period: Period, since_version: Option<&str>) -> Result<Errors, StoreError> {
        let mut conn = self.conn()?;
        let from = midnight(period.from);
        // Per group, summed in the database: the rows are one per install and group, far too
        // many to carry out at fleet scale. Sums saturate, as stored counts do.
        let sum = match &*conn {
            DbConnection::Postgresql(_) => "CAST(LEAST(SUM(count), 9223372036854775807) AS BIGINT)",
            DbConnection::Sqlite(_) => "CAST(MIN(TOTAL(count), 9223372036854775807.0) AS BIGINT)",
        };
        let sql = format!(
            "SELECT fingerprint, COUNT(*) AS installs, {sum} AS total, MIN(first_seen) AS first_seen, \
             MAX(last_seen) AS last_seen FROM telemetry_errors WHERE last_seen >= $1 GROUP BY fingerprint"
        );
        let mut sums: Vec<GroupSums> = on_backend!(&mut *conn, c => {
            diesel::sql_query(&sql).bind::<diesel::sql_types::Timestamp, _>(from).load(c)?
        });
        sums.sort_by(|a, b| {
            (b.installs, b.total).cmp(&(a.installs, a.total)).then_with(|| a.fingerprint.cmp(&b.fingerprint))
        });
        // When each version first ran anywhere, from the daily figures.
        let firsts: Vec<(String, Option<NaiveDate>)> = telemetry_aggregates::table
            .filter(telemetry_aggregates::metric.eq("active.version"))
            .group_by(telemetry_aggregates::dimension)
            .select((telemetry_aggregates::dimension, diesel::dsl::min(telemetry_aggregates::day)))
            .load(&mut *conn)?;
        let firsts: Vec<(NaiveDate, String)> =
            firsts.into_iter().filter_map(|(v, d)| d.map(|d| (d, v))).collect();
        let appeared = |version: &str| firsts.iter().find(|(_, v)| v == version).map(|(d, _)| *d);
        // A version that never ran has no error groups that appeared since.
        let floor = since_version.map(|v| appeared(v).unwrap_or(NaiveDate::MAX));
        // The filter comes before the cut: the groups new since a version are listed even when
        // older ones are more widespread.
        if let Some(floor) = floor {
            sums.retain(|g| g.first_seen.date() >= floor);
        }
        sums.truncate(MAX_ERROR_GROUPS);
        let fingerprints: Vec<&str> = sums.iter().map(|g| g.fingerprint.as_str()).collect();
        let mut versions: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for chunk in fingerprints.chunks(ROWS_PER_STATEMENT) {
            let found: Vec<(String, String)> = telemetry_errors::table
                .inner_join(
                    instances::table.on(instances::id
                        .eq(telemetry_errors::instance_id)
                        .and(instances::license_id.eq(telemetry_errors::license_id))),
                )
                .filter(telemetry_errors::last_seen.ge(from))
                .filter(telemetry_errors::fingerprint.eq_any(chunk))
                .select((telemetry_errors::fingerprint, instances::software_version))
                .distinct()
                .load(&mut *conn)?;
            for (fingerprint, version) in found {
                versions.entry(fingerprint).or_default().insert(version);
            }
        }
        let mut out = Vec::with_capacity(sums.len());
        for g in sums {
            // The group's text as its latest sighting has it (the key's index finds it).
            let (error_type, message): (String, String) = telemetry_errors::table
                .filter(telemetry_errors::fingerprint.eq(&g.fingerprint))
                .filter(telemetry_errors::last_seen.eq(g.last_seen))
                .select((telemetry_errors::error_type, telemetry_errors::message))
                .first(&mut *conn)?;
            let first_day = g.first_seen.date();
            out.push(ErrorGroupView {
                error_type,
                message,
                installs: g.installs,
                count: g.total,
                first_seen: utc(g.first_seen),
                last_seen: utc(g.last_seen),
                versions: versions.remove(&g.fingerprint).unwrap_or_default().into_iter().collect(),
                first_seen_version: firsts
                    .iter()
                    .filter(|(d, _)| *d <= first_day)
                    .max_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.cmp(&b.1)))
                    .map(|(_, v)| v.clone()),
                fingerprint: g.fingerprint,
            });
        }
        // `sums` was sorted (most installs, then most occurrences), and `out` keeps its order.
        Ok(Errors { period, since_version: since_version.map(str::to_owned), groups: out })
    }

    /// The environment of the fleet on the period's last rolled-up day.
    pub fn insights_environment(&self, period: Period) -> Result<EnvironmentView, StoreError> {
        let mut conn = self.conn()?;
        let day: Option<NaiveDate> = telemetry_aggregates::table
            .filter(telemetry_aggregates::metric.eq("env.reporting"))
            .filter(telemetry_aggregates::day.ge(period.from))
            .filter(telemetry_aggregates::day.lt(period.until))
            .select(diesel::dsl::max(telemetry_aggregates::day))
            .first(&mut *conn)?;
        let mut view = EnvironmentView {
            period,
            day,
            installs: 0,
            user_count_ranges: Vec::new(),
            modules: Vec::new(),
            os: Vec::new(),
            arch: Vec::new(),
            health: Vec::new(),
            uptime_hours_mean: None,
        };
        let Some(day) = day else { return Ok(view) };
        let rows: Vec<AggregateRow> = telemetry_aggregates::table
            .filter(telemetry_aggregates::day.eq(day))
            .filter(telemetry_aggregates::metric.like("env.%"))
            .select(AggregateRow::as_select())
            .load(&mut *conn)?;
        view.installs = rows.iter().find(|r| r.metric == "env.reporting").map_or(0, |r| r.instances);
        let total = view.installs;
        for row in rows {
            let share =
                Share { share: ratio(row.instances, total), installs: row.instances, name: row.dimension };
            match row.metric.as_str() {
                "env.user_count_range" => view.user_count_ranges.push(share),
                "env.module" => view.modules.push(share),
                "env.os" => view.os.push(share),
                "env.arch" => view.arch.push(share),
                "env.health" => view.health.push(share),
                "env.uptime_hours" => view.uptime_hours_mean = Some(row.value),
                _ => {}
            }
        }
        let order = crate::protocol::UserCountRange::ALL.map(|r| r.as_str());
        view.user_count_ranges.sort_by_key(|s| order.iter().position(|o| *o == s.name));
        for list in [&mut view.modules, &mut view.os, &mut view.arch, &mut view.health] {
            list.sort_by(|a, b| b.installs.cmp(&a.installs).then_with(|| a.name.cmp(&b.name)));
        }
        Ok(view)
    }

    /// Seat use per license (at most `limit`, fullest first) and the licenses at risk at `now`.
    pub fn insights_licenses(
        &self,
        period: Period,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<LicensesView, StoreError> {
        let mut conn = self.conn()?;
        let rows: Vec<LicenseRow> =
            licenses::table.filter(licenses::kid.ne("")).select(LicenseRow::as_select()).load(&mut *conn)?;
        let instances: Vec<(String, NaiveDateTime, Option<NaiveDateTime>)> = instances::table
            .select((instances::license_id, instances::last_check_in_at, instances::seat_until))
            .load(&mut *conn)?;
        let refused_sql = "SELECT license_id, COUNT(*) AS n FROM check_ins WHERE status = $1 AND at >= $2 \
                           AND license_id IS NOT NULL GROUP BY license_id";
        let refused: Vec<LicenseCount> = on_backend!(&mut *conn, c => {
            diesel::sql_query(refused_sql)
                .bind::<diesel::sql_types::Text, _>(CheckInStatus::TelemetryRequired.as_str())
                .bind::<diesel::sql_types::Timestamp, _>(midnight(period.from))
                .load(c)?
        });
        // Peaks from the daily per-license figures; where a day was rolled up before they were
        // kept, from the period's install-days.
        let per_license: Vec<(NaiveDate, String, f64)> = telemetry_aggregates::table
            .filter(telemetry_aggregates::metric.eq("license.active"))
            .filter(telemetry_aggregates::day.ge(period.from))
            .filter(telemetry_aggregates::day.lt(period.until))
            .select((telemetry_aggregates::day, telemetry_aggregates::dimension, telemetry_aggregates::value))
            .load(&mut *conn)?;
        let rolled_days: Vec<NaiveDate> = telemetry_aggregates::table
            .filter(telemetry_aggregates::metric.eq("active"))
            .filter(telemetry_aggregates::day.ge(period.from))
            .filter(telemetry_aggregates::day.lt(period.until))
            .filter(telemetry_aggregates::value.gt(0.0))
            .select(telemetry_aggregates::day)
            .load(&mut *conn)?;
        let days_with_peaks: BTreeSet<NaiveDate> = per_license.iter().map(|(d, _, _)| *d).collect();
        let peaks: Vec<LicenseCount> = if rolled_days.iter().all(|d| days_with_peaks.contains(d)) {
            let mut max: HashMap<String, i64> = HashMap::new();
            for (_, license_id, n) in per_license {
                let peak = max.entry(license_id).or_default();
                *peak = (*peak).max(n as i64);
            }
            max.into_iter().map(|(license_id, n)| LicenseCount { license_id, n }).collect()
        } else {
            let peak_sql = "SELECT license_id, MAX(n) AS n FROM (SELECT license_id, day, COUNT(*) AS n \
                            FROM install_days WHERE day >= $1 AND day < $2 GROUP BY license_id, day) AS t \
                            GROUP BY license_id";
            on_backend!(&mut *conn, c => {
                diesel::sql_query(peak_sql)
                    .bind::<diesel::sql_types::Date, _>(period.from)
                    .bind::<diesel::sql_types::Date, _>(period.until)
                    .load(c)?
            })
        };
        let peaks: HashMap<String, i64> = peaks.into_iter().map(|r| (r.license_id, r.n)).collect();
        let now_naive = naive(now);
        let by_id: HashMap<&str, &LicenseRow> = rows.iter().map(|r| (r.id.as_str(), r)).collect();
        let mut in_use: HashMap<&str, i64> = HashMap::new();
        let mut overdue: BTreeMap<&str, i64> = BTreeMap::new();
        let mut in_grace: BTreeMap<&str, i64> = BTreeMap::new();
        for (license_id, last, seat_until) in &instances {
            let Some(license) = by_id.get(license_id.as_str()) else { continue };
            let holds = seat_until.is_some_and(|u| u > now_naive);
            if holds {
                *in_use.entry(license.id.as_str()).or_default() += 1;
            }
            let interval = match license.check_in_interval_s {
                Some(s) => Duration::seconds(s),
                None => license.tier.parse::<Tier>().map_or(Duration::days(1), Tier::check_in_interval),
            };
            if *last + interval < now_naive && license.revoked_at.is_none() {
                *overdue.entry(license.id.as_str()).or_default() += 1;
                if holds {
                    *in_grace.entry(license.id.as_str()).or_default() += 1;
                }
            }
        }
        let entry = |id: &str, count: i64| {
            let l = by_id[id];
            RiskEntry {
                license_id: l.id.clone(),
                licensee: l.licensee.clone(),
                count,
                expires_at: l.expires_at.map(utc),
            }
        };
        let by_count = |map: BTreeMap<&str, i64>| {
            let mut list: Vec<RiskEntry> = map.into_iter().map(|(id, n)| entry(id, n)).collect();
            list.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.license_id.cmp(&b.license_id)));
            list
        };
        let live = |l: &&LicenseRow| l.revoked_at.is_none() && l.expires_at.is_none_or(|e| e > now_naive);
        let mut expiring: Vec<RiskEntry> = rows
            .iter()
            .filter(live)
            .filter(|l| l.expires_at.is_some_and(|e| e <= now_naive + Duration::days(30)))
            .map(|l| {
                let left = l.expires_at.map_or(0, |e| (e - now_naive).num_days());
                entry(&l.id, left)
            })
            .collect();
        expiring
            .sort_by(|a, b| a.expires_at.cmp(&b.expires_at).then_with(|| a.license_id.cmp(&b.license_id)));
        let at_limit: BTreeMap<&str, i64> = rows
            .iter()
            .filter(live)
            .filter_map(|l| {
                let used = in_use.get(l.id.as_str()).copied().unwrap_or(0);
                (used >= i64::from(l.seats)).then_some((l.id.as_str(), used))
            })
            .collect();
        let refused: BTreeMap<&str, i64> = refused
            .iter()
            .filter_map(|r| by_id.get(r.license_id.as_str()).map(|l| (l.id.as_str(), r.n)))
            .collect();
        let today = now.date_naive();
        let expirations_per_week = (0..12)
            .map(|w| {
                let start = today + Duration::weeks(w);
                let (a, b) = (midnight(start), midnight(start + Duration::weeks(1)));
                let mut by_tier: BTreeMap<String, i64> = BTreeMap::new();
                for l in rows
                    .iter()
                    .filter(|l| l.revoked_at.is_none())
                    .filter(|l| l.expires_at.is_some_and(|e| e >= a.max(now_naive) && e < b))
                {
                    *by_tier.entry(l.tier.clone()).or_default() += 1;
                }
                WeekExpirations { week_start: start, licenses: by_tier.values().sum(), by_tier }
            })
            .collect();
        let mut licenses: Vec<SeatUse> = rows
            .iter()
            .map(|l| SeatUse {
                license_id: l.id.clone(),
                licensee: l.licensee.clone(),
                tier: l.tier.clone(),
                revoked: l.revoked_at.is_some(),
                expires_at: l.expires_at.map(utc),
                seats: i64::from(l.seats),
                in_use: in_use.get(l.id.as_str()).copied().unwrap_or(0),
                peak: peaks.get(&l.id).copied().unwrap_or(0),
            })
            .collect();
        licenses.sort_by(|a, b| {
            (b.in_use * a.seats.max(1))
                .cmp(&(a.in_use * b.seats.max(1)))
                .then_with(|| b.in_use.cmp(&a.in_use))
                .then_with(|| a.license_id.cmp(&b.license_id))
        });
        licenses.truncate(limit);
        Ok(LicensesView {
            period,
            licenses,
            at_risk: AtRisk {
                overdue: by_count(overdue),
                in_grace: by_count(in_grace),
                expiring,
                at_seat_limit: by_count(at_limit),
                telemetry_refused: by_count(refused),
            },
            expirations_per_week,
        })
    }
}

/// One license as the vendor's console shows it.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct LicenseDetail {
    pub license: super::LicenseRecord,
    /// The payload of the license's newest key, when this server holds one.
    pub payload: Option<crate::license::LicensePayload>,
    /// `valid`, `revoked`, `expired`, `not_yet_valid`, or `not_seen` (revoked by id before any
    /// check-in showed the license).
    pub status: String,
    /// Its instances (processes), the most recently seen first (at most 1,000).
    pub instances: Vec<super::InstanceRecord>,
    /// The same processes under their installs (seats count installs), the install seen most
    /// recently first.
    pub installs: Vec<super::InstallSummary>,
    /// Its latest check-ins (at most 100), newest first.
    pub history: Vec<HistoryEntry>,
    pub telemetry: LicenseTelemetry,
    /// The keys its air-gapped installs' usage reports are pinned to, resets shown.
    pub install_keys: Vec<super::InstallKeyRecord>,
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct HistoryEntry {
    pub at: DateTime<Utc>,
    pub instance_id: String,
    pub status: String,
    pub software_version: String,
    /// For an air-gapped install: the sequence of the usage report carried by hand that this
    /// entry imported (`null` for a check-in over the network).
    pub imported_report: Option<i64>,
}

/// A license's telemetry over a period, from the roll-ups.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct LicenseTelemetry {
    pub period: Period,
    /// Usage per kind and name across the license's installs, the most used first (at most 100).
    pub usage: Vec<super::FeatureSummary>,
    /// Distinct error groups seen during the period, and their occurrences.
    pub error_groups: i64,
    pub errors: i64,
}

impl Store {
    /// One license: its record, payload, status, instances, history and telemetry; `None`
    /// when this server does not know it.
    pub fn license_detail(
        &self,
        id: &str,
        now: DateTime<Utc>,
        period: Period,
    ) -> Result<Option<LicenseDetail>, StoreError> {
        let Some(row) = self.license(id)? else { return Ok(None) };
        let filter = super::LicenseFilter { id: Some(id.to_owned()), ..Default::default() };
        let Some(license) = self.list_licenses(now, &filter, 1, None)?.items.pop() else { return Ok(None) };
        let payload = row
            .license_key
            .as_deref()
            .map(|key| crate::token::decode::<crate::license::LicensePayload>(key).map(|d| d.claims))
            .transpose()
            .map_err(|e| StoreError::Corrupt { what: "licenses.license_key", source: e.into() })?;
        let status = if row.revoked_at.is_some() {
            "revoked".to_owned()
        } else if row.kid.is_empty() {
            "not_seen".to_owned()
        } else if row.expires_at.is_some_and(|e| e <= naive(now)) {
            "expired".to_owned()
        } else if row.not_before > naive(now) {
            "not_yet_valid".to_owned()
        } else {
            "valid".to_owned()
        };
        let filter = super::InstanceFilter { license_id: Some(id.to_owned()), status: None };
        let instances = self.list_instances(&filter, 1_000, None)?.items;
        let mut conn = self.conn()?;
        let history = check_ins::table
            .filter(check_ins::license_id.eq(id))
            .order((check_ins::at.desc(), check_ins::id.desc()))
            .limit(100)
            .select((
                check_ins::at,
                check_ins::instance_id,
                check_ins::status,
                check_ins::software_version,
                check_ins::imported_report,
            ))
            .load::<(NaiveDateTime, String, String, String, Option<i64>)>(&mut *conn)?
            .into_iter()
            .map(|(at, instance_id, status, software_version, imported_report)| HistoryEntry {
                at: utc(at),
                instance_id,
                status,
                software_version,
                imported_report,
            })
            .collect();
        // One license's rows (its installs x days x names) are few: summed here, which also
        // spares the backends' different types for a SUM of BIGINT.
        let rows: Vec<(String, String, i64)> = telemetry_features::table
            .filter(telemetry_features::license_id.eq(id))
            .filter(telemetry_features::day.ge(period.from))
            .filter(telemetry_features::day.lt(period.until))
            .select((telemetry_features::kind, telemetry_features::name, telemetry_features::count))
            .load(&mut *conn)?;
        let mut sums: BTreeMap<(String, String), i64> = BTreeMap::new();
        for (kind, name, count) in rows {
            let sum = sums.entry((kind, name)).or_default();
            *sum = sum.saturating_add(count);
        }
        let mut usage: Vec<super::FeatureSummary> = sums
            .into_iter()
            .map(|((kind, name), count)| super::FeatureSummary { kind, name, count })
            .collect();
        usage.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| (&a.kind, &a.name).cmp(&(&b.kind, &b.name))));
        usage.truncate(100);
        let errors: Vec<(String, i64)> = telemetry_errors::table
            .filter(telemetry_errors::license_id.eq(id))
            .filter(telemetry_errors::last_seen.ge(midnight(period.from)))
            .select((telemetry_errors::fingerprint, telemetry_errors::count))
            .load(&mut *conn)?;
        let groups: BTreeSet<&str> = errors.iter().map(|(f, _)| f.as_str()).collect();
        let telemetry = LicenseTelemetry {
            period,
            usage,
            error_groups: groups.len() as i64,
            errors: errors.iter().fold(0i64, |sum, (_, n)| sum.saturating_add(*n)),
        };
        let installs = super::group_installs(&instances);
        let install_keys = self.install_keys_of(id)?;
        Ok(Some(LicenseDetail {
            license,
            payload,
            status,
            instances,
            installs,
            history,
            telemetry,
            install_keys,
        }))
    }
}
