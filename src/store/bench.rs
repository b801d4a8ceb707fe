//! Seeding for `licensor bench insights`: a realistic fleet written straight into the roll-up
//! tables (and one day of raw telemetry for the roll-up's own timing), deterministic for a seed,
//! on PostgreSQL. Not used by the server; it lives here because only `store` knows diesel.

use chrono::{Duration, NaiveDate, NaiveDateTime, Utc};
use diesel::prelude::*;
use rand::{rngs::StdRng, Rng as _, SeedableRng as _};
use std::collections::{BTreeMap, BTreeSet};

use super::insights::{InstallDay, RouteDay};
use super::models::*;
use super::schema::*;
use super::{naive, DbConnection, Store, StoreError, ROWS_PER_STATEMENT};
use crate::protocol::{
    Environment, Health, RoutePerformance, SyncStatus, UsageCount, UsageKind, UserCountRange,
};
use crate::sketch::Sketch;

/// What to seed.
#[derive(Debug, Clone)]
pub struct SeedPlan {
    pub installs: usize,
    pub days: u32,
    pub installs_per_license: usize,
    /// The last seeded day is the day before this.
    pub today: NaiveDate,
    pub seed: u64,
}

/// How much was written, by table.
pub type Seeded = BTreeMap<&'static str, usize>;

const VERSIONS: [&str; 6] = ["1.0.0", "1.1.0", "1.2.0", "1.3.0", "2.0.0", "2.1.0"];
const OS: [&str; 3] = ["linux", "windows", "macos"];
const MODULES: [&str; 6] = ["billing", "sso", "audit", "reports", "chat", "export"];
const ROUTES: usize = 20;
const NAMES_PER_KIND: usize = 40;

fn tier_of(license: usize) -> &'static str {
    match license % 10 {
        0 => "enterprise",
        1..=3 => "pro",
        _ => "community",
    }
}

/// The day's version of an install: installs upgrade in waves over the period.
fn version_of(install: usize, day: u32, days: u32) -> &'static str {
    let wave = (u64::from(day) * VERSIONS.len() as u64 / u64::from(days.max(1))) as usize;
    let lag = install % 3;
    VERSIONS[wave.saturating_sub(lag).min(VERSIONS.len() - 1)]
}

/// Whether an install reports usage on a day: Community daily, Pro weekly, Enterprise monthly.
fn reports_on(tier: &str, install: usize, day: u32) -> bool {
    let d = day as usize;
    match tier {
        "community" => true,
        "pro" => d % 7 == install % 7,
        _ => d % 30 == install % 30,
    }
}

/// A Zipf-like pick among `n` names: a few names carry most of the use.
fn pick(rng: &mut StdRng, n: usize) -> usize {
    let u: f64 = rng.gen_range(0.0..1.0);
    ((n as f64).powf(u) - 1.0) as usize % n
}

fn insert<T>(
    conn: &mut DbConnection,
    rows: &[T],
    write: impl Fn(&mut diesel::PgConnection, &[T]) -> QueryResult<usize>,
) -> Result<usize, StoreError> {
    let DbConnection::Postgresql(c) = conn else {
        return Err(StoreError::PostgresOnly("seeding the insights benchmark"));
    };
    let mut n = 0;
    for chunk in rows.chunks(ROWS_PER_STATEMENT) {
        n += write(c, chunk)?;
    }
    Ok(n)
}

impl Store {
    /// Seeds the plan's fleet; `progress` hears each finished step. The database must be
    /// empty of licenses (the bench checks).
    pub fn seed_insights(
        &self,
        plan: &SeedPlan,
        mut progress: impl FnMut(&str),
    ) -> Result<Seeded, StoreError> {
        let mut seeded = Seeded::new();
        let mut rng = StdRng::seed_from_u64(plan.seed);
        let first = plan.today - Duration::days(i64::from(plan.days));
        let licenses = plan.installs.div_ceil(plan.installs_per_license.max(1));
        let now = naive(Utc::now());
        let mut conn = self.conn()?;

        let license_rows: Vec<LicenseRow> = (0..licenses)
            .map(|l| LicenseRow {
                id: format!("00000000-0000-4000-8000-{l:012}"),
                kid: "bench".into(),
                licensee: format!("Bench Customer {l}"),
                tier: tier_of(l).into(),
                seats: (plan.installs_per_license + 2) as i32,
                features: "[\"reports\"]".into(),
                issued_at: NaiveDateTime::from(first) - Duration::days(30),
                not_before: NaiveDateTime::from(first) - Duration::days(30),
                expires_at: Some(NaiveDateTime::from(plan.today) + Duration::days((l % 120) as i64)),
                check_in_interval_s: None,
                license_key: None,
                revoked_at: None,
                revoked_reason: None,
                first_seen_at: NaiveDateTime::from(first),
                last_check_in_at: Some(now),
                issued_here: false,
            })
            .collect();
        seeded.insert(
            "licenses",
            insert(&mut conn, &license_rows, |c, rows| {
                diesel::insert_into(licenses::table).values(rows).execute(c)
            })?,
        );
        let install = |i: usize| {
            (
                license_rows[i / plan.installs_per_license.max(1)].id.clone(),
                format!("be0c0000-0000-4000-8000-{i:012}"),
            )
        };
        let instance_rows: Vec<InstanceRow> = (0..plan.installs)
            .map(|i| {
                let (license_id, id) = install(i);
                let tier = tier_of(i / plan.installs_per_license.max(1));
                // One in twenty is overdue, so the licenses view has risks to find.
                let last = if i % 20 == 0 {
                    now - Duration::days(40)
                } else {
                    now - Duration::hours((i % 20) as i64)
                };
                InstanceRow {
                    id: id.clone(),
                    license_id,
                    software_version: version_of(i, plan.days - 1, plan.days).into(),
                    first_seen_at: NaiveDateTime::from(first),
                    last_check_in_at: last,
                    last_status: "valid".into(),
                    seat_until: Some(
                        last + crate::license::Tier::Community.grace()
                            + Duration::days(if tier == "community" { 1 } else { 7 }),
                    ),
                    exemption: None,
                    install_id: Some(id.clone()),
                    install_source: None,
                    machine: None,
                }
            })
            .collect();
        seeded.insert(
            "instances",
            insert(&mut conn, &instance_rows, |c, rows| {
                diesel::insert_into(instances::table).values(rows).execute(c)
            })?,
        );
        progress(&format!("{licenses} licenses, {} instances", plan.installs));

        // Errors: two groups per install from a pool of fifty.
        let error_rows: Vec<ErrorRow> = (0..plan.installs)
            .flat_map(|i| {
                let (license_id, instance_id) = install(i);
                let a = i % 50;
                [a, (a * 7 + 3) % 50].into_iter().collect::<BTreeSet<_>>().into_iter().map(move |g| {
                    ErrorRow {
                        license_id: license_id.clone(),
                        instance_id: instance_id.clone(),
                        fingerprint: format!("{g:016x}"),
                        error_type: ["database", "timeout", "validation", "io"][g % 4].into(),
                        message: format!("query {g} failed after [N] ms"),
                        stack: "[\"at db::query\",\"at handler\"]".into(),
                        count: 1 + (i % 9) as i64,
                        first_seen: NaiveDateTime::from(first)
                            + Duration::days((g % plan.days as usize) as i64),
                        last_seen: NaiveDateTime::from(plan.today) - Duration::hours(3),
                    }
                })
            })
            .collect();
        seeded.insert(
            "telemetry_errors",
            insert(&mut conn, &error_rows, |c, rows| {
                diesel::insert_into(telemetry_errors::table).values(rows).execute(c)
            })?,
        );
        progress("error groups");

        let kinds = UsageKind::ALL;
        for d in 0..plan.days {
            let day = first + Duration::days(i64::from(d));
            let mut days = Vec::with_capacity(plan.installs);
            let mut features = Vec::new();
            let mut usage: BTreeMap<(String, String), (i64, BTreeSet<usize>)> = BTreeMap::new();
            for i in 0..plan.installs {
                let (license_id, instance_id) = install(i);
                let tier = tier_of(i / plan.installs_per_license.max(1));
                let mut modules: Vec<&str> =
                    MODULES.iter().enumerate().filter(|(m, _)| (i >> m) & 1 == 1).map(|(_, n)| *n).collect();
                modules.sort();
                days.push(InstallDay {
                    day,
                    license_id: license_id.clone(),
                    install_id: instance_id.clone(),
                    tier: tier.into(),
                    software_version: version_of(i, d, plan.days).into(),
                    lease_until: NaiveDateTime::from(day) + Duration::days(8),
                    checked_in: reports_on(tier, i, d),
                    user_count_range: UserCountRange::ALL[i % 5].as_str().into(),
                    os: OS[i % 3].into(),
                    arch: if i % 4 == 0 { "aarch64" } else { "x86_64" }.into(),
                    modules: serde_json::to_string(&modules).expect("names serialise"),
                    uptime_hours: (i % 500) as f64,
                    health: "{\"database\":\"healthy\"}".into(),
                });
                if reports_on(tier, i, d) {
                    let mut names = BTreeSet::new();
                    for k in [0, 0, 1, 1, 2, 3] {
                        names.insert((kinds[k].as_str(), pick(&mut rng, NAMES_PER_KIND)));
                    }
                    for (kind, n) in names {
                        let name = format!("{kind}_{n:02}");
                        let count = 1 + rng.gen_range(0..50) as i64;
                        let entry = usage.entry((kind.to_owned(), name.clone())).or_default();
                        entry.0 += count;
                        entry.1.insert(i);
                        features.push(FeatureRow {
                            license_id: license_id.clone(),
                            instance_id: instance_id.clone(),
                            day,
                            kind: kind.into(),
                            name,
                            count,
                            install_id: None,
                        });
                    }
                }
            }
            let mut aggregates = Vec::new();
            let mut push = |metric: &str, dimension: &str, value: f64, n: usize| {
                aggregates.push(AggregateRow {
                    day,
                    metric: metric.into(),
                    dimension: dimension.into(),
                    value,
                    instances: n as i64,
                    reach: String::new(),
                });
            };
            let count = |metric: &str, key: &dyn Fn(&InstallDay) -> String| {
                let mut by: BTreeMap<String, usize> = BTreeMap::new();
                for r in &days {
                    *by.entry(key(r)).or_default() += 1;
                }
                by.into_iter().map(|(k, n)| (metric.to_owned(), k, n)).collect::<Vec<_>>()
            };
            let mut counted = Vec::new();
            counted.extend(count("active.tier", &|r| r.tier.clone()));
            counted.extend(count("license.active", &|r| r.license_id.clone()));
            counted.extend(count("active.version", &|r| r.software_version.clone()));
            counted.extend(count("env.user_count_range", &|r| r.user_count_range.clone()));
            counted.extend(count("env.os", &|r| r.os.clone()));
            counted.extend(count("env.arch", &|r| r.arch.clone()));
            counted.extend(count("env.health", &|_| "database:healthy".into()));
            for (metric, dimension, n) in counted {
                push(&metric, &dimension, n as f64, n);
            }
            for (m, module) in MODULES.iter().enumerate() {
                let n = (0..plan.installs).filter(|i| (i >> m) & 1 == 1).count();
                push("env.module", module, n as f64, n);
            }
            push("active", "all", days.len() as f64, days.len());
            push("env.reporting", "all", days.len() as f64, days.len());
            push("env.uptime_hours", "mean", 249.5, days.len());
            push(
                "instances.new",
                "all",
                if d == 0 { days.len() as f64 } else { 0.0 },
                if d == 0 { days.len() } else { 0 },
            );
            push("instances.lapsed", "all", 0.0, 0);
            let reported = days.iter().filter(|r| r.checked_in).count();
            push("check_ins", crate::protocol::CheckInStatus::Valid.as_str(), reported as f64, reported);
            let reach_of = |installs: &mut dyn Iterator<Item = usize>| {
                let mut reach = crate::reach::Reach::default();
                for i in installs {
                    let (license_id, instance_id) = install(i);
                    reach.add(&license_id, &instance_id);
                }
                reach.encode()
            };
            let mut reaches = Vec::new();
            for ((kind, name), (sum, installs)) in usage {
                push(&format!("usage.{kind}"), &name, sum as f64, installs.len());
                reaches.push(reach_of(&mut installs.into_iter()));
            }
            let first_usage = aggregates.len() - reaches.len();
            for (row, reach) in aggregates[first_usage..].iter_mut().zip(reaches) {
                row.reach = reach;
            }
            let active = aggregates.iter().position(|a| a.metric == "active").expect("seeded above");
            aggregates[active].reach = reach_of(&mut (0..plan.installs));
            // Routes: per route and version, a day's merged sketch.
            let mut routes = Vec::new();
            for r in 0..ROUTES {
                for version in VERSIONS {
                    let mut sketch = Sketch::default();
                    let base = 5.0 + r as f64 * 7.0;
                    for _ in 0..200 {
                        let v: f64 = rng.gen_range(0.0..1.0);
                        sketch.add_n(base * (1.0 + 8.0 * v.powi(6)), 1 + (plan.installs / 1_000) as u64);
                    }
                    let [p50, p95, p99] = crate::protocol::percentiles_ms(&sketch);
                    routes.push(RouteDay {
                        day,
                        method: if r % 3 == 0 { "POST" } else { "GET" }.into(),
                        route: format!("/api/v1/resource_{r:02}/{{id}}"),
                        software_version: version.into(),
                        count: sketch.count() as i64,
                        errors: (sketch.count() / 100) as i64,
                        p50_ms: p50,
                        p95_ms: p95,
                        p99_ms: p99,
                        max_ms: base * 9.0,
                        sketch: sketch.encode(),
                        installs: (plan.installs / VERSIONS.len()) as i64,
                    });
                }
            }
            let n = insert(&mut conn, &days, |c, rows| {
                diesel::insert_into(install_days::table).values(rows).execute(c)
            })?;
            *seeded.entry("install_days").or_default() += n;
            let n = insert(&mut conn, &features, |c, rows| {
                diesel::insert_into(telemetry_features::table).values(rows).execute(c)
            })?;
            *seeded.entry("telemetry_features").or_default() += n;
            let n = insert(&mut conn, &aggregates, |c, rows| {
                diesel::insert_into(telemetry_aggregates::table).values(rows).execute(c)
            })?;
            *seeded.entry("telemetry_aggregates").or_default() += n;
            let n = insert(&mut conn, &routes, |c, rows| {
                diesel::insert_into(route_days::table).values(rows).execute(c)
            })?;
            *seeded.entry("route_days").or_default() += n;
            progress(&format!("day {} of {}", d + 1, plan.days));
        }
        Ok(seeded)
    }

    /// Writes one day of raw telemetry (a check-in and a batch per install that reports that
    /// day), so that rolling the day up does the work the nightly job does. Returns the batches.
    pub fn seed_raw_day(&self, plan: &SeedPlan, day: NaiveDate) -> Result<usize, StoreError> {
        let mut rng = StdRng::seed_from_u64(plan.seed ^ 0x5eed);
        let at = NaiveDateTime::from(day) + Duration::hours(12);
        let mut conn = self.conn()?;
        let licenses = plan.installs_per_license.max(1);
        let d = (day - (plan.today - Duration::days(i64::from(plan.days)))).num_days().max(0) as u32;
        let mut batches = Vec::new();
        let mut check_ins = Vec::new();
        for i in 0..plan.installs {
            let license_id = format!("00000000-0000-4000-8000-{:012}", i / licenses);
            let instance_id = format!("be0c0000-0000-4000-8000-{i:012}");
            let tier = tier_of(i / licenses);
            let version = version_of(i, d, plan.days);
            let batch_id = uuid::Uuid::from_u128(rng.gen()).to_string();
            check_ins.push((instance_id.clone(), license_id.clone(), version.to_owned(), batch_id.clone()));
            if !reports_on(tier, i, d) {
                continue;
            }
            let usage: Vec<UsageCount> = (0..20)
                .map(|k| UsageCount {
                    kind: UsageKind::ALL[k % 4],
                    name: format!("{}_{:02}", UsageKind::ALL[k % 4].as_str(), pick(&mut rng, NAMES_PER_KIND)),
                    count: 1 + rng.gen_range(0..40),
                })
                .collect();
            let routes: Vec<RoutePerformance> = (0..5)
                .map(|r| {
                    let mut s = Sketch::default();
                    for _ in 0..30 {
                        s.add(5.0 + r as f64 * 7.0 + rng.gen_range(0.0..20.0));
                    }
                    RoutePerformance::from_sketch(
                        "GET".into(),
                        format!("/api/v1/resource_{r:02}/{{id}}"),
                        s.count(),
                        0,
                        50.0,
                        &s,
                    )
                })
                .collect();
            let environment = Environment {
                app_version: version.into(),
                os: OS[i % 3].into(),
                arch: "x86_64".into(),
                user_count_range: UserCountRange::ALL[i % 5],
                modules_enabled: vec!["billing".into()],
                uptime_hours: 12.0,
                last_sync_status: SyncStatus::Success,
                health: [("database".to_owned(), Health::Healthy)].into(),
            };
            batches.push(StoredBatch {
                batch: BatchRow {
                    batch_id: batch_id.clone(),
                    instance_id: instance_id.clone(),
                    license_id: license_id.clone(),
                    received_at: at,
                    period_start: at - Duration::days(1),
                    period_end: at,
                    digest: "0".repeat(64),
                    app_version: version.into(),
                    user_count_range: environment.user_count_range.as_str().into(),
                    environment: serde_json::to_string(&environment).expect("serialises"),
                    dropped: "{}".into(),
                    redactions: "{}".into(),
                },
                payload: PayloadRow {
                    batch_id,
                    received_at: at,
                    body: super::payload::encode(&Payload {
                        usage,
                        performance: routes,
                        sessions: PayloadSessions { count: 3, total_duration_s: 600, hourly: vec![0; 24] },
                    }),
                },
                errors: Vec::new(),
            });
        }
        let rows: Vec<NewCheckIn<'_>> = check_ins
            .iter()
            .map(|(instance_id, license_id, version, batch_id)| NewCheckIn {
                instance_id,
                license_id: Some(license_id.clone()),
                at,
                status: "valid",
                software_version: version,
                telemetry_batch_id: Some(batch_id.clone()),
                valid_until: Some(at + Duration::days(8)),
                imported_report: None,
            })
            .collect();
        insert(&mut conn, &rows, |c, rows| diesel::insert_into(check_ins::table).values(rows).execute(c))?;
        let refs: Vec<&StoredBatch> = batches.iter().collect();
        for chunk in refs.chunks(ROWS_PER_STATEMENT) {
            self.transaction(|conn| super::telemetry::insert_batches(conn, chunk).map(|_| ()))?;
        }
        Ok(batches.len())
    }

    /// Rows and bytes (PostgreSQL's total relation size, indexes included) of the tables the
    /// insights read.
    pub fn table_sizes(&self, tables: &[&str]) -> Result<Vec<(String, i64, i64)>, StoreError> {
        #[derive(QueryableByName)]
        struct Size {
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            rows: i64,
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            bytes: i64,
        }
        let mut conn = self.conn()?;
        let DbConnection::Postgresql(c) = &mut *conn else {
            return Err(StoreError::PostgresOnly("reading table sizes"));
        };
        let mut out = Vec::new();
        for table in tables {
            // The names are this crate's own table names, never outside input. A partitioned
            // table's size is its partitions' (the parent itself holds nothing); for a plain
            // table `pg_partition_tree` lists nothing, and its own size counts.
            let sql = format!(
                "SELECT (SELECT COUNT(*) FROM {table}) AS rows, COALESCE( \
                 (SELECT SUM(pg_total_relation_size(relid))::BIGINT FROM pg_partition_tree('{table}')), \
                 pg_total_relation_size('{table}')) AS bytes"
            );
            let size: Size = diesel::sql_query(sql).get_result(c)?;
            out.push(((*table).to_owned(), size.rows, size.bytes));
        }
        Ok(out)
    }
}
