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
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(args.concurrency)
            .timeout(std::time::Duration::from_secs(30))
            .build()?;

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
                        &format!("load-{run}-{instance}"),
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
    })
}

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
    format!(
        r#"{{"license_key":"{key}","instance_id":"{instance}","nonce":"{nonce}","software_version":"1.4.2","telemetry":{batch}}}"#
    )
}
