//! The daily roll-up: what the insights views read, written from the day's raw telemetry and
//! check-ins (`Store::rollup_day`), in one transaction per day so that a re-run replaces the
//! day and never double-counts.

use chrono::{Duration, NaiveDate, NaiveDateTime};
use diesel::prelude::*;
use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::insights::{midnight, Install, InstallDay, RouteDay};
use super::telemetry::{count, merge_routes, UsageOnly};
use crate::protocol::{CheckInStatus, Environment, RoutePerformance};

/// A check-in as the roll-up reads it: license, instance, time, status, version, lease end.
type DayCheckIn = (Option<String>, String, NaiveDateTime, String, String, Option<NaiveDateTime>);
/// The installs that reported each (method, route).
type RouteInstalls = BTreeMap<(String, String), BTreeSet<Install>>;
use super::models::*;
use super::schema::*;
use super::{on_backend, DbConnection, Store, StoreError, ROWS_PER_STATEMENT};

impl Store {
    /// Rolls up `day` (UTC) into `telemetry_features` (usage per process, with its install),
    /// `install_days` (the
    /// installs active that day, carried forward from the day before), `route_days`
    /// (performance across installs) and `telemetry_aggregates` (fleet figures), replacing any
    /// earlier roll-up of that day in the same transaction, so a re-run never double-counts.
    /// Days are rolled up in order: a day's active installs start from the day before's.
    /// `audit` (a run an admin asked for) is written in the same transaction.
    pub fn rollup_day(&self, day: NaiveDate, audit: Option<&super::Audit>) -> Result<usize, StoreError> {
        let from: NaiveDateTime = day.and_hms_opt(0, 0, 0).expect("midnight exists");
        let to = from + chrono::Duration::days(1);
        self.transaction(|conn| {
            // A process is a license's instance (the same instance id under two licenses is two
            // processes); an install is one of a license's installs, whatever its processes.
            let events: Vec<(String, String, Vec<u8>)> = telemetry_payloads::table
                .inner_join(
                    telemetry_batches::table.on(telemetry_batches::batch_id.eq(telemetry_payloads::batch_id)),
                )
                .filter(telemetry_batches::received_at.ge(from))
                .filter(telemetry_batches::received_at.lt(to))
                // The same range on the payload's own column: one daily partition is read.
                .filter(telemetry_payloads::received_at.ge(from))
                .filter(telemetry_payloads::received_at.lt(to))
                .select((
                    telemetry_batches::license_id,
                    telemetry_batches::instance_id,
                    telemetry_payloads::body,
                ))
                .load(conn)?;
            type Process = (String, String);
            let mut per_instance: BTreeMap<(Process, String, String), i64> = BTreeMap::new();
            // Each process's install: from its row, or the record kept when its row went.
            let processes: BTreeSet<Process> = events.iter().map(|e| (e.0.clone(), e.1.clone())).collect();
            let install_of = super::installs::installs_of(conn, &processes)?;
            for (license_id, instance_id, body) in &events {
                let process = (license_id.clone(), instance_id.clone());
                for entry in super::payload::decode::<UsageOnly>(body)?.usage {
                    let sum = per_instance
                        .entry((process.clone(), entry.kind.as_str().to_owned(), entry.name))
                        .or_default();
                    *sum = sum.saturating_add(count(entry.count));
                }
            }
            let features: Vec<FeatureRow> = per_instance
                .iter()
                .map(|((process, kind, name), count)| FeatureRow {
                    license_id: process.0.clone(),
                    instance_id: process.1.clone(),
                    day,
                    kind: kind.clone(),
                    name: name.clone(),
                    count: *count,
                    install_id: install_of.get(process).filter(|i| **i != process.1).cloned(),
                })
                .collect();
            diesel::delete(telemetry_features::table.filter(telemetry_features::day.eq(day)))
                .execute(conn)?;
            on_backend!(&mut *conn, c => {
                for chunk in features.chunks(ROWS_PER_STATEMENT) {
                    diesel::insert_into(telemetry_features::table).values(chunk).execute(c)?;
                }
            });

            // Across processes: usage per kind and name, with how many installs used it.
            // (kind, name) -> (sum, the (license id, install id) that used it).
            type ByName<'a> = BTreeMap<(String, String), (i64, BTreeSet<(&'a str, &'a str)>)>;
            let mut by_name: ByName<'_> = BTreeMap::new();
            for ((process, kind, name), count) in &per_instance {
                let entry = by_name.entry((kind.clone(), name.clone())).or_default();
                entry.0 = entry.0.saturating_add(*count);
                let install = install_of.get(process).map_or(process.1.as_str(), String::as_str);
                entry.1.insert((&process.0, install));
            }
            let mut aggregates: Vec<AggregateRow> = by_name
                .into_iter()
                .map(|((kind, name), (count, installs))| {
                    let mut reach = crate::reach::Reach::default();
                    for (license_id, install_id) in &installs {
                        reach.add(license_id, install_id);
                    }
                    AggregateRow {
                        day,
                        metric: format!("usage.{kind}"),
                        dimension: name,
                        value: count as f64,
                        instances: installs.len() as i64,
                        reach: reach.encode(),
                    }
                })
                .collect();
            let (installs, figures) = rollup_installs(conn, day)?;
            aggregates.extend(figures);
            let routes = rollup_routes(conn, day)?;
            diesel::delete(telemetry_aggregates::table.filter(telemetry_aggregates::day.eq(day)))
                .execute(conn)?;
            on_backend!(&mut *conn, c => {
                for chunk in aggregates.chunks(ROWS_PER_STATEMENT) {
                    diesel::insert_into(telemetry_aggregates::table).values(chunk).execute(c)?;
                }
            });
            super::audit::write(conn, audit)?;
            Ok::<_, StoreError>(features.len() + aggregates.len() + installs + routes)
        })
    }
}

/// Rolls up the installs of `day`: which were active (their lease covered part of the day),
/// with what tier, version and environment, and the fleet figures derived from that. Reads the
/// previous day's rows (carried forward while their lease lasts), the day's check-ins and the
/// environments of the day's batches. Returns the rows written and the aggregates to add.
pub(super) fn rollup_installs(
    conn: &mut DbConnection,
    day: NaiveDate,
) -> Result<(usize, Vec<AggregateRow>), StoreError> {
    let (from, to) = (midnight(day), midnight(day) + Duration::days(1));
    let yesterday: Vec<InstallDay> = install_days::table
        .filter(install_days::day.eq(day - Duration::days(1)))
        .select(InstallDay::as_select())
        .load(conn)?;
    let was_active: BTreeSet<Install> =
        yesterday.iter().map(|r| (r.license_id.clone(), r.install_id.clone())).collect();
    let mut rows: BTreeMap<Install, InstallDay> = yesterday
        .into_iter()
        .map(|mut r| {
            r.day = day;
            r.checked_in = false;
            ((r.license_id.clone(), r.install_id.clone()), r)
        })
        .collect();

    // The day's check-ins in order: a valid one extends the install's lease (an install is
    // active while any of its processes' leases runs); a refusal that ends the seat (revoked,
    // expired, not yet valid: the license's, so every process's) ends it at that moment.
    let check_ins: Vec<DayCheckIn> = check_ins::table
        .filter(check_ins::at.ge(from))
        .filter(check_ins::at.lt(to))
        .order((check_ins::at, check_ins::id))
        .select((
            check_ins::license_id,
            check_ins::instance_id,
            check_ins::at,
            check_ins::status,
            check_ins::software_version,
            check_ins::valid_until,
        ))
        .load(conn)?;
    let license_ids: BTreeSet<&str> = check_ins.iter().filter_map(|c| c.0.as_deref()).collect();
    // Each process's install: from its row, or the record kept when its row went.
    let processes: BTreeSet<(String, String)> =
        check_ins.iter().filter_map(|c| c.0.clone().map(|l| (l, c.1.clone()))).collect();
    let mut install_of = super::installs::installs_of(conn, &processes)?;
    let mut tiers: HashMap<String, String> = HashMap::new();
    for chunk in license_ids.into_iter().collect::<Vec<_>>().chunks(ROWS_PER_STATEMENT) {
        let found: Vec<(String, String)> = licenses::table
            .filter(licenses::id.eq_any(chunk))
            .select((licenses::id, licenses::tier))
            .load(conn)?;
        tiers.extend(found);
    }
    let mut outcomes: BTreeMap<String, (i64, BTreeSet<Install>)> = BTreeMap::new();
    for (license_id, instance_id, at, status, version, valid_until) in check_ins {
        let Some(license_id) = license_id else { continue };
        let install_id = install_of[&(license_id.clone(), instance_id)].clone();
        let install = (license_id.clone(), install_id.clone());
        let outcome = outcomes.entry(status.clone()).or_default();
        outcome.0 += 1;
        outcome.1.insert(install.clone());
        match CheckInStatus::parse(&status) {
            Some(CheckInStatus::Valid) => {
                let Some(until) = valid_until else { continue };
                let tier = tiers.get(&license_id).cloned().unwrap_or_default();
                let row = rows.entry(install).or_insert_with(|| InstallDay {
                    day,
                    license_id,
                    install_id,
                    tier: String::new(),
                    software_version: String::new(),
                    lease_until: until,
                    checked_in: true,
                    user_count_range: String::new(),
                    os: String::new(),
                    arch: String::new(),
                    modules: "[]".into(),
                    uptime_hours: 0.0,
                    health: "{}".into(),
                });
                // The lease a revocation ended earlier that day is renewed by a valid answer.
                let lease_until = if row.checked_in { row.lease_until.max(until) } else { until };
                row.tier = tier;
                row.software_version = version;
                row.lease_until = lease_until;
                row.checked_in = true;
            }
            Some(CheckInStatus::Revoked | CheckInStatus::Expired | CheckInStatus::NotYetValid) => {
                if let Some(row) = rows.get_mut(&install) {
                    row.lease_until = row.lease_until.min(at);
                }
            }
            _ => {}
        }
    }

    // The environment each install reported last that day.
    let batches: Vec<(String, String, String, String)> = telemetry_batches::table
        .filter(telemetry_batches::received_at.ge(from))
        .filter(telemetry_batches::received_at.lt(to))
        .order((telemetry_batches::received_at, telemetry_batches::batch_id))
        .select((
            telemetry_batches::license_id,
            telemetry_batches::instance_id,
            telemetry_batches::user_count_range,
            telemetry_batches::environment,
        ))
        .load(conn)?;
    let unseen: BTreeSet<(String, String)> = batches
        .iter()
        .map(|b| (b.0.clone(), b.1.clone()))
        .filter(|key| !install_of.contains_key(key))
        .collect();
    install_of.extend(super::installs::installs_of(conn, &unseen)?);
    for (license_id, instance_id, users, environment) in batches {
        let install_id = install_of[&(license_id.clone(), instance_id)].clone();
        let Some(row) = rows.get_mut(&(license_id, install_id)) else { continue };
        let env: Environment = serde_json::from_str(&environment).map_err(|source| StoreError::Corrupt {
            what: "telemetry_batches.environment",
            source: source.into(),
        })?;
        row.user_count_range = users;
        row.os = env.os;
        row.arch = env.arch;
        row.modules = serde_json::to_string(&env.modules_enabled).expect("names serialise");
        row.uptime_hours = env.uptime_hours;
        row.health = serde_json::to_string(&env.health).expect("a map of names serialises");
    }

    // Active: the lease covers part of the day.
    let active: Vec<InstallDay> = rows.into_values().filter(|r| r.lease_until > from).collect();
    diesel::delete(install_days::table.filter(install_days::day.eq(day))).execute(conn)?;
    on_backend!(&mut *conn, c => {
        for chunk in active.chunks(ROWS_PER_STATEMENT) {
            diesel::insert_into(install_days::table).values(chunk).execute(c)?;
        }
    });

    let mut figures = Figures::new(day);
    figures.add("active", "all", active.len());
    let mut reach = crate::reach::Reach::default();
    for row in &active {
        reach.add(&row.license_id, &row.install_id);
    }
    figures.rows[0].reach = reach.encode();
    let by = |metric: &'static str, key: &dyn Fn(&InstallDay) -> &str| {
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for row in &active {
            *counts.entry(key(row)).or_default() += 1;
        }
        counts.into_iter().map(move |(k, n)| (metric, k.to_owned(), n)).collect::<Vec<_>>()
    };
    let mut rows_out: Vec<(&'static str, String, usize)> = Vec::new();
    rows_out.extend(by("active.tier", &|r| &r.tier));
    // Per license, for its peak over a period (the licenses view).
    rows_out.extend(by("license.active", &|r| &r.license_id));
    rows_out.extend(by("active.version", &|r| &r.software_version));
    let reporting: Vec<&InstallDay> = active.iter().filter(|r| !r.user_count_range.is_empty()).collect();
    let mut count_env = |metric: &'static str, values: &mut dyn Iterator<Item = String>| {
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        for v in values {
            *counts.entry(v).or_default() += 1;
        }
        rows_out.extend(counts.into_iter().map(|(k, n)| (metric, k, n)));
    };
    count_env("env.user_count_range", &mut reporting.iter().map(|r| r.user_count_range.clone()));
    count_env("env.os", &mut reporting.iter().map(|r| r.os.clone()));
    count_env("env.arch", &mut reporting.iter().map(|r| r.arch.clone()));
    let mut modules = Vec::new();
    let mut health = Vec::new();
    for r in &reporting {
        let list: BTreeSet<String> = serde_json::from_str(&r.modules)
            .map_err(|source| StoreError::Corrupt { what: "install_days.modules", source: source.into() })?;
        modules.extend(list);
        let checks: BTreeMap<String, String> = serde_json::from_str(&r.health)
            .map_err(|source| StoreError::Corrupt { what: "install_days.health", source: source.into() })?;
        health.extend(checks.into_iter().map(|(name, state)| format!("{name}:{state}")));
    }
    count_env("env.module", &mut modules.into_iter());
    count_env("env.health", &mut health.into_iter());
    for (metric, dimension, n) in rows_out {
        figures.add(metric, &dimension, n);
    }
    figures.add("env.reporting", "all", reporting.len());
    if !reporting.is_empty() {
        let mean = reporting.iter().map(|r| r.uptime_hours).sum::<f64>() / reporting.len() as f64;
        figures.push("env.uptime_hours", "mean", (mean * 100.0).round() / 100.0, reporting.len());
    }
    let now_active: BTreeSet<Install> =
        active.iter().map(|r| (r.license_id.clone(), r.install_id.clone())).collect();
    figures.add("instances.new", "all", now_active.difference(&was_active).count());
    figures.add("instances.lapsed", "all", was_active.difference(&now_active).count());
    for (status, (n, installs)) in outcomes {
        figures.push("check_ins", &status, n as f64, installs.len());
    }
    Ok((active.len(), figures.rows))
}

/// The aggregates of one day, as they are built.
struct Figures {
    day: NaiveDate,
    rows: Vec<AggregateRow>,
}

impl Figures {
    fn new(day: NaiveDate) -> Figures {
        Figures { day, rows: Vec::new() }
    }

    /// A count of installs.
    fn add(&mut self, metric: &str, dimension: &str, installs: usize) {
        self.push(metric, dimension, installs as f64, installs);
    }

    fn push(&mut self, metric: &str, dimension: &str, value: f64, installs: usize) {
        self.rows.push(AggregateRow {
            day: self.day,
            metric: metric.to_owned(),
            dimension: dimension.to_owned(),
            value,
            instances: installs as i64,
            reach: String::new(),
        });
    }
}

/// Rolls up the request performance received on `day` per route and software version, the
/// batches' sketches merged. Returns the rows written.
pub(super) fn rollup_routes(conn: &mut DbConnection, day: NaiveDate) -> Result<usize, StoreError> {
    let (from, to) = (midnight(day), midnight(day) + Duration::days(1));
    let batches: Vec<(String, String, String, Vec<u8>)> = telemetry_payloads::table
        .inner_join(telemetry_batches::table.on(telemetry_batches::batch_id.eq(telemetry_payloads::batch_id)))
        .filter(telemetry_batches::received_at.ge(from))
        .filter(telemetry_batches::received_at.lt(to))
        // The same range on the payload's own column: one daily partition is read.
        .filter(telemetry_payloads::received_at.ge(from))
        .filter(telemetry_payloads::received_at.lt(to))
        .select((
            telemetry_batches::license_id,
            telemetry_batches::instance_id,
            telemetry_batches::app_version,
            telemetry_payloads::body,
        ))
        .load(conn)?;
    let processes: BTreeSet<(String, String)> = batches.iter().map(|b| (b.0.clone(), b.1.clone())).collect();
    let install_of = super::installs::installs_of(conn, &processes)?;
    let mut by_version: BTreeMap<String, (Vec<RoutePerformance>, RouteInstalls)> = BTreeMap::new();
    for (license_id, instance_id, version, body) in batches {
        let install_id = install_of[&(license_id.clone(), instance_id)].clone();
        let routes = super::payload::decode::<super::telemetry::RoutesOnly>(&body)?.performance;
        let entry = by_version.entry(version).or_default();
        for r in &routes {
            entry
                .1
                .entry((r.method.clone(), r.route.clone()))
                .or_default()
                .insert((license_id.clone(), install_id.clone()));
        }
        entry.0.extend(routes);
    }
    let mut rows = Vec::new();
    for (version, (routes, installs)) in by_version {
        for (summary, sketch) in merge_routes(routes.into_iter()) {
            let n = installs.get(&(summary.method.clone(), summary.route.clone())).map_or(0, BTreeSet::len);
            rows.push(RouteDay {
                day,
                software_version: version.clone(),
                count: summary.count,
                errors: summary.errors,
                p50_ms: summary.p50_ms,
                p95_ms: summary.p95_ms,
                p99_ms: summary.p99_ms,
                max_ms: summary.max_ms,
                sketch: sketch.map(|s| s.encode()).unwrap_or_default(),
                installs: n as i64,
                method: summary.method,
                route: summary.route,
            });
        }
    }
    diesel::delete(route_days::table.filter(route_days::day.eq(day))).execute(conn)?;
    on_backend!(&mut *conn, c => {
        for chunk in rows.chunks(ROWS_PER_STATEMENT) {
            diesel::insert_into(route_days::table).values(chunk).execute(c)?;
        }
    });
    Ok(rows.len())
}
