//! `licensor bench check-ins`: a load tool for a running server. It issues licenses through
//! the admin API, then fires check-ins with a realistic batch (50 usage counters, 20 routes,
//! 5 error groups) from many simulated instances, and prints throughput and latency.
//!
//! It runs on one thread by default, so that on a small machine most cores stay with the
//! server it measures.

use anyhow::{bail, Context as _, Result};
use chrono::{Duration, Utc};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use super::{BenchCheckInsArgs, EXIT_OK};

pub fn check_ins(args: BenchCheckInsArgs) -> Result<u8> {
    if args.licenses == 0 || args.instances < args.licenses || args.concurrency == 0 || args.requests == 0 {
        bail!("need licenses >= 1, instances >= licenses, concurrency >= 1 and requests >= 1");
    }
    let base = args.url.trim_end_matches('/').to_owned();
    // What a check-in writes: the licensing rows, the raw telemetry and the outbox.
    let stored = |store: &crate::store::Store| -> Result<Vec<(String, i64, i64)>> {
        Ok(store.table_sizes(STORED_BY_CHECK_INS)?)
    };
    let storage = match &args.database_url {
        Some(url) => {
            let store = crate::store::Store::open(url, 2)?;
            let before = stored(&store)?;
            Some((store, before))
        }
        None => None,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let builder = reqwest::Client::builder()
            .pool_max_idle_per_host(args.concurrency)
            .timeout(std::time::Duration::from_secs(30));
        let client = super::admin::trusting(builder, args.ca_cert.as_deref())?.build()?;

        let seats = args.instances.div_ceil(args.licenses) as u32;
        eprintln!(
            "issuing {} pro licenses of {seats} seats through {base}/v1/admin/licenses ...",
            args.licenses
        );
        let mut keys = Vec::with_capacity(args.licenses);
        for i in 0..args.licenses {
            let body = json!({
                "tier": "pro", "licensee": format!("Load Test Customer {i}"), "seats": seats,
                "expires_at": crate::time::format(&(Utc::now() + Duration::days(30))), "features": ["reports"]
            });
            let response = client
                .post(format!("{base}/v1/admin/licenses"))
                .bearer_auth(&args.token)
                .json(&body)
                .send()
                .await
                .with_context(|| format!("no answer from {base}"))?;
            let status = response.status();
            let answer: Value = response.json().await.context("reading the issued license")?;
            if !status.is_success() {
                bail!("issuing a license failed with {status}: {answer}");
            }
            keys.push(answer["license_key"].as_str().context("no license_key in the answer")?.to_owned());
        }

        let template = Arc::new(batch_template());
        let keys = Arc::new(keys);
        let next = Arc::new(AtomicUsize::new(0));
        let run = format!("{:08x}", rand::random::<u32>());
        eprintln!(
            "firing {} check-ins from {} instances, {} at a time ...",
            args.requests, args.instances, args.concurrency
        );
        let started = Instant::now();
        let mut workers = Vec::new();
        for _ in 0..args.concurrency {
            let (client, template, keys, next, base, run) =
                (client.clone(), template.clone(), keys.clone(), next.clone(), base.clone(), run.clone());
            let (requests, instances, licenses) = (args.requests, args.instances, args.licenses);
            workers.push(tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut outcomes = std::collections::BTreeMap::<String, usize>::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= requests {
                        break;
                    }
                    let instance = i % instances;
                    let body = request_body(
                        &keys[instance % licenses],
                        &format!("{run}-0000-4000-8000-{instance:012x}"),
                        &template,
                    );
                    let sent = Instant::now();
                    let result = client
                        .post(format!("{base}/v1/check-ins"))
                        .header("content-type", "application/json")
                        .body(body)
                        .send()
                        .await;
                    let outcome = match result {
                        Ok(response) => {
                            let code = response.status().as_u16();
                            match response.json::<Value>().await {
                                Ok(v) if code == 200 => v["status"].as_str().unwrap_or("?").to_owned(),
                                Ok(v) => format!("http {code} {}", v["error"]["code"].as_str().unwrap_or("")),
                                Err(_) => format!("http {code} unreadable"),
                            }
                        }
                        Err(e) => {
                            format!("transport error: {}", if e.is_timeout() { "timeout" } else { "failed" })
                        }
                    };
                    latencies.push(sent.elapsed().as_micros() as u64);
                    *outcomes.entry(outcome).or_default() += 1;
                }
                (latencies, outcomes)
            }));
        }
        let mut latencies = Vec::with_capacity(args.requests);
        let mut outcomes = std::collections::BTreeMap::<String, usize>::new();
        for worker in workers {
            let (l, o) = worker.await?;
            latencies.extend(l);
            for (k, v) in o {
                *outcomes.entry(k).or_default() += v;
            }
        }
        let elapsed = started.elapsed().as_secs_f64();
        latencies.sort_unstable();
        let pct = |p: f64| {
            latencies[((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len()) - 1] as f64
                / 1000.0
        };
        outln!("check-ins:   {} in {elapsed:.2} s", latencies.len())?;
        outln!("throughput:  {:.0} check-ins/s", latencies.len() as f64 / elapsed)?;
        outln!(
            "latency:     p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            pct(0.50),
            pct(0.90),
            pct(0.99),
            pct(1.0)
        )?;
        outln!("batch:       {} bytes (50 usage counters, 20 routes, 5 error groups)", template.len())?;
        for (outcome, n) in &outcomes {
            outln!("  {outcome}: {n}")?;
        }
        Ok(EXIT_OK)
    })?;
    if let Some((store, before)) = storage {
        let after = stored(&store)?;
        let grew = |table: &str| {
            after
                .iter()
                .zip(&before)
                .find(|(a, _)| a.0 == table)
                .map_or((0, 0), |(a, b)| (a.1 - b.1, a.2 - b.2))
        };
        // Per check-in the server stored: a refused check-in (429, say) stores nothing, and
        // counting it would flatter the figure.
        let stored_check_ins = grew("check_ins").0;
        if stored_check_ins <= 0 {
            bail!("the run stored no check-in: is --database-url the server's database?");
        }
        let total: i64 = after.iter().zip(&before).map(|(a, b)| a.2 - b.2).sum();
        let per = |bytes: i64| bytes as f64 / stored_check_ins as f64;
        outln!(
            "stored:      {:.0} bytes per stored check-in ({:.1} MB for {stored_check_ins} check-ins; tables with \
             their indexes, before any vacuum)",
            per(total),
            total as f64 / 1e6,
        )?;
        for (table, _, _) in &after {
            let (rows, bytes) = grew(table);
            outln!("  {table:<22} {:>7.0} bytes per check-in ({rows} rows more)", per(bytes))?;
        }
        // What retention bounds (a check-in's own rows, kept for the retention period) apart from
        // what an install keeps while it exists (written at its first check-in, updated after):
        // the first is what a fleet's storage grows by per check-in.
        let sum = |tables: &[&str]| -> i64 { tables.iter().map(|t| grew(t).1).sum() };
        outln!(
            "  per check-in, kept for the retention period (check_ins, telemetry_batches, \
             telemetry_payloads): {:.0} bytes",
            per(sum(PER_CHECK_IN))
        )?;
        outln!(
            "  per install, kept while it exists (licenses, instances, telemetry_errors, webhook_deliveries): \
             {:.0} bytes per check-in of this run",
            per(total - sum(PER_CHECK_IN))
        )?;
    }
    Ok(EXIT_OK)
}

/// The tables a check-in writes to, whose growth the check-in bench reports.
const STORED_BY_CHECK_INS: &[&str] = &[
    "licenses",
    "instances",
    "check_ins",
    "telemetry_batches",
    "telemetry_payloads",
    "telemetry_errors",
    "webhook_deliveries",
];

/// The tables of [`STORED_BY_CHECK_INS`] that grow by a row per check-in and that retention
/// empties; the others hold an install's (or a license's) rows.
const PER_CHECK_IN: &[&str] = &["check_ins", "telemetry_batches", "telemetry_payloads"];

/// A realistic batch, serialised once with a placeholder batch id.
fn batch_template() -> String {
    let now = Utc::now();
    let usage: Vec<Value> = (0..50)
        .map(|i| {
            let kind = ["feature", "api", "command", "ui_action"][i % 4];
            json!({ "kind": kind, "name": format!("usage_counter_{i}"), "count": 17 + i })
        })
        .collect();
    let performance: Vec<Value> = (0..20)
        .map(|i| json!({
            "method": if i % 3 == 0 { "POST" } else { "GET" }, "route": format!("/api/resource{i}/{{id}}"),
            "count": 1200 + i, "errors": i % 4, "p50_ms": 12.5, "p95_ms": 48.0, "p99_ms": 95.0, "max_ms": 310.0,
            "sketch": "ddsketch:v1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8"
        }))
        .collect();
    let errors: Vec<Value> = (0..5)
        .map(|i| json!({
            "fingerprint": format!("{:032x}", 0x5eed_0000 + i), "type": "database",
            "message": format!("query timed out after 3000 ms on table t{i}"),
            "stack": ["at db::pool::get", "at repo::load", "at handlers::show"], "count": 3 + i,
            "first_seen": crate::time::format(&(now - Duration::hours(20))), "last_seen": crate::time::format(&now)
        }))
        .collect();
    json!({
        "schema": 1, "batch_id": "BATCH_ID_PLACEHOLDER",
        "period_start": crate::time::format(&(now - Duration::hours(24))), "period_end": crate::time::format(&now),
        "environment": {
            "app_version": "1.4.2", "os": "linux", "arch": "x86_64", "user_count_range": "11-50",
            "modules_enabled": ["signatures", "org-chart", "reports"], "uptime_hours": 71.5,
            "last_sync_status": "success", "health": { "database": "healthy", "mail": "degraded" }
        },
        "usage": usage, "performance": performance, "errors": errors,
        "sessions": { "count": 14, "total_duration_s": 9120, "hourly": [0,0,0,0,0,0,1,2,3,2,1,1,1,1,1,1,0,0,0,0,0,0,0,0] },
        "dropped": { "sampled": 0, "throttled": 0, "overflow": 0 },
        "redactions": { "email": 2 }
    })
    .to_string()
}

fn request_body(key: &str, instance: &str, template: &str) -> String {
    use base64::Engine as _;
    let nonce = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 18]>());
    let batch = template.replacen("BATCH_ID_PLACEHOLDER", &uuid::Uuid::new_v4().to_string(), 1);
    // As a client with no instance URL and no machine id names its install: one per process, so
    // the seats work out as before installs, while the server does an install's work. (A server
    // from before installs ignores the field.)
    let install = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(instance.as_bytes()));
    format!(
        r#"{{"license_key":"{key}","instance_id":"{instance}","nonce":"{nonce}","software_version":"1.4.2","telemetry":{batch},"install":{{"id":"{install}","source":"data_directory"}}}}"#
    )
}

/// `licensor bench insights`: seeds a fleet straight into an empty PostgreSQL database (or reuses
/// one seeded before), rolls one day up with its raw telemetry, serves the database from an
/// in-process server, and times every insights view (admin API) and dashboard page.
pub fn insights(args: super::BenchInsightsArgs) -> Result<u8> {
    use crate::store::{SeedPlan, Store};
    if !args.database_url.starts_with("postgres") {
        bail!("the insights benchmark runs on PostgreSQL: give --database-url postgres://...");
    }
    if args.installs == 0 || args.days < 2 || args.requests == 0 {
        bail!("need installs >= 1, days >= 2 and requests >= 1");
    }
    let store = Store::open(&args.database_url, 8)?;
    let today = Utc::now().date_naive();
    let plan = SeedPlan {
        installs: args.installs,
        days: args.days,
        installs_per_license: args.installs_per_license.max(1),
        today,
        seed: 2026,
    };
    let seeded_before = !store.list_licenses(Utc::now(), &Default::default(), 1, None)?.items.is_empty();
    if seeded_before && !args.reuse {
        bail!(
            "{} already holds licenses: give an empty database, or --reuse to time what is there",
            args.database_url
        );
    }
    let yesterday = today - Duration::days(1);
    if !args.reuse {
        let started = Instant::now();
        let seeded = store.seed_insights(&plan, |step| {
            eprintln!("  seeded {step} ({:.0} s)", started.elapsed().as_secs_f64())
        })?;
        outln!(
            "seeded {} installs x {} days in {:.0} s: {seeded:?}",
            args.installs,
            args.days,
            started.elapsed().as_secs_f64()
        )?;
        let started = Instant::now();
        let batches = store.seed_raw_day(&plan, yesterday)?;
        outln!(
            "seeded the raw telemetry of {yesterday}: {batches} batches in {:.0} s",
            started.elapsed().as_secs_f64()
        )?;
    }
    let started = Instant::now();
    let rows = store.rollup_day(yesterday, None)?;
    outln!(
        "roll-up of {yesterday} for {} installs: {:.1} s ({rows} rows written; target <= 60 s)",
        args.installs,
        started.elapsed().as_secs_f64()
    )?;

    let instance_days = (args.installs as f64) * f64::from(args.days);
    outln!("\nroll-ups kept, per instance-day ({instance_days:.0} instance-days):")?;
    for (table, rows, bytes) in store.table_sizes(&[
        "install_days",
        "telemetry_features",
        "route_days",
        "telemetry_aggregates",
        "telemetry_errors",
    ])? {
        outln!(
            "  {table:<22} {rows:>11} rows {:>9.1} MB  {:>6.2} rows and {:>7.1} bytes per instance-day",
            bytes as f64 / 1e6,
            rows as f64 / instance_days,
            bytes as f64 / instance_days
        )?;
    }

    // An in-process server on the seeded database, with throwaway keys and token.
    let dir = tempfile::TempDir::new()?;
    let keys = dir.path().join("keys");
    let lease = crate::keys::Signer::generate("bench-lease", crate::keys::Role::Lease)?;
    lease.write_pair(&keys)?;
    // The ring must trust some license key; the seeded licenses carry no key to verify.
    crate::keys::Signer::generate("bench-vendor", crate::keys::Role::License)?.write_pair(&keys)?;
    let token = format!("bench-{}", uuid::Uuid::new_v4());
    let config = crate::server::ServerConfig::resolve(crate::server::ServeOptions {
        bind: Some("127.0.0.1:0".into()),
        database_url: Some(args.database_url.clone()),
        data_dir: Some(dir.path().to_owned()),
        keys_dir: Some(keys.clone()),
        signing_key: Some(keys.join("bench-lease.lease.private.pem")),
        admin_token: Some(token.clone()),
        jobs: Some(false),
        ..Default::default()
    })?;
    let running = crate::server::start(config, crate::server::system_clock())?;
    let base = format!("http://{}", running.addr);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let license = format!("00000000-0000-4000-8000-{:012}", 0);
    let api: Vec<String> = [
        "/v1/admin/insights/overview?days=30",
        "/v1/admin/insights/overview?days=90",
        "/v1/admin/insights/usage?kind=feature&days=30",
        "/v1/admin/insights/usage?kind=api_call&days=90",
        "/v1/admin/insights/performance?days=30",
        "/v1/admin/insights/errors?days=30",
        "/v1/admin/insights/environment?days=30",
        "/v1/admin/insights/licenses?days=30",
        "/v1/admin/insights/overview?days=30&format=csv",
    ]
    .iter()
    .map(|p| p.to_string())
    .chain([format!("/v1/admin/licenses/{license}")])
    .collect();
    let pages: Vec<String> = [
        "/admin/overview",
        "/admin/usage",
        "/admin/performance",
        "/admin/errors",
        "/admin/environment",
        "/admin/licenses",
        "/admin/instances",
    ]
    .iter()
    .map(|p| p.to_string())
    .chain([format!("/admin/licenses/{license}")])
    .collect();
    let requests = args.requests;
    let worst = runtime.block_on(async move {
        let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build()?;
        let signed_in = client
            .post(format!("{base}/admin/sign-in"))
            .body(format!("token={token}"))
            .header("content-type", "application/x-www-form-urlencoded")
            .send()
            .await?;
        let cookie = signed_in
            .headers()
            .get("set-cookie")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .context("the dashboard gave no session cookie")?
            .to_owned();
        outln!(
            "\n{:<52} {:>9} {:>9} {:>9}   (ms over {requests} requests; target p95 <= 250)",
            "view or page",
            "p50",
            "p95",
            "max"
        )?;
        let mut worst = 0.0f64;
        for (path, is_page) in api.iter().map(|p| (p, false)).chain(pages.iter().map(|p| (p, true))) {
            let mut times = Vec::with_capacity(requests);
            for _ in 0..requests {
                let request = client.get(format!("{base}{path}"));
                let request =
                    if is_page { request.header("cookie", &cookie) } else { request.bearer_auth(&token) };
                let started = Instant::now();
                let response = request.send().await?;
                let status = response.status();
                let body = response.bytes().await?;
                times.push(started.elapsed().as_secs_f64() * 1000.0);
                if !status.is_success() {
                    bail!(
                        "{path} answered {status}: {}",
                        String::from_utf8_lossy(&body[..body.len().min(300)])
                    );
                }
            }
            times.sort_by(f64::total_cmp);
            let at = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize];
            worst = worst.max(at(0.95));
            outln!("{path:<52} {:>9.1} {:>9.1} {:>9.1}", at(0.5), at(0.95), times[times.len() - 1])?;
        }
        Ok::<_, anyhow::Error>(worst)
    })?;
    running.stop();
    outln!("\nworst p95: {worst:.1} ms")?;
    Ok(EXIT_OK)
}
