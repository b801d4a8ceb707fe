//! `/metrics`: the server's own Prometheus metrics, with exact figures from known requests, on
//! the main address (admin token) and on a metrics address of its own (no token, nothing else).

mod common;

use common::{batch, Db, Harness, ADMIN_TOKEN};
use licensor::license::Tier;
use std::collections::BTreeMap;

/// The samples of an OpenMetrics text: `name{labels}` to value.
fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (name, value) = l.rsplit_once(' ').unwrap_or_else(|| panic!("not a sample: {l}"));
            (name.to_owned(), value.parse().unwrap_or_else(|_| panic!("not a number: {l}")))
        })
        .collect()
}

fn scrape(h: &Harness, base: &str, token: Option<&str>) -> (u16, String, String) {
    let mut request = h.http.get(format!("{base}/metrics"));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().unwrap();
    let status = response.status().as_u16();
    let content_type =
        response.headers().get("content-type").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
    (status, content_type, response.text().unwrap())
}

fn metrics_from(db: Db) {
    let Some(h) = Harness::start_with(db, |c| {
        c.rate_limit_per_minute = 2;
        c.metrics_bind = Some("127.0.0.1:0".parse().unwrap());
    }) else {
        return;
    };
    let key = h.license(Tier::Pro, 5);
    let first = serde_json::to_string(&batch(uuid::Uuid::new_v4(), 6, 3, 2)).unwrap();
    let second = serde_json::to_string(&batch(uuid::Uuid::new_v4(), 4, 2, 1)).unwrap();
    assert_eq!(h.check_in(&key, "metrics-a", Some(&first))["status"], "valid");
    assert_eq!(h.check_in(&key, "metrics-b", Some(&second))["status"], "valid");
    // A retry of the first batch: answered, acknowledged as a duplicate, stored once.
    let retried = h.check_in(&key, "metrics-a", Some(&first));
    assert_eq!(retried["telemetry"]["duplicate"], true, "{retried}");
    // The instance's third check-in within the minute is over its limit of two.
    let body = h.check_in_body(&key, "metrics-a", &common::nonce(), None);
    let (status, _) = h.post_raw("/v1/check-ins", "application/json", body);
    assert_eq!(status, 429);
    // A revoked license's check-in.
    let revoked = h.license(Tier::Community, 1);
    let id = licensor::token::decode::<licensor::LicensePayload>(&revoked).unwrap().claims.license_id;
    let (status, _) = h.admin(reqwest::Method::POST, &format!("/v1/admin/licenses/{id}/revoke"), None);
    assert_eq!(status, 200);
    assert_eq!(h.check_in(&revoked, "metrics-c", None)["status"], "revoked");
    let (status, _) = h.admin(
        reqwest::Method::POST,
        "/v1/admin/jobs/rollup/runs",
        Some(&serde_json::json!({ "day": "2026-11-20" })),
    );
    assert_eq!(status, 200);

    // The main address wants the admin token.
    let (status, _, _) = scrape(&h, &h.base, None);
    assert_eq!(status, 401);
    let (status, content_type, text) = scrape(&h, &h.base, Some(ADMIN_TOKEN));
    assert_eq!(status, 200);
    assert_eq!(content_type, "application/openmetrics-text; version=1.0.0; charset=utf-8");
    assert!(text.ends_with("# EOF\n"), "{text}");
    let m = samples(&text);
    let get = |name: &str| *m.get(name).unwrap_or_else(|| panic!("no {name} in\n{text}"));
    assert_eq!(get(r#"licensor_check_ins_total{status="valid"}"#), 3.0);
    assert_eq!(get(r#"licensor_check_ins_total{status="revoked"}"#), 1.0);
    assert_eq!(get(r#"licensor_check_in_duration_seconds_count"#), 4.0);
    assert_eq!(get(r#"licensor_rate_limited_total{scope="instance"}"#), 1.0);
    assert_eq!(get("licensor_telemetry_received_bytes_total"), (2 * first.len() + second.len()) as f64);
    let stored = get("licensor_telemetry_stored_bytes_total");
    assert!(stored > 0.0 && stored < (first.len() + second.len()) as f64, "{stored}");
    // Four check-ins reached the writer (the unreadable and over-limit ones never do).
    assert_eq!(get("licensor_writer_group_size_count"), 4.0);
    assert!(get("licensor_db_pool_wait_seconds_count") >= 4.0);
    assert_eq!(get(r#"licensor_job_runs_total{job="rollup",outcome="ran"}"#), 1.0);
    assert_eq!(get(r#"licensor_job_duration_seconds_count{job="rollup"}"#), 1.0);
    assert_eq!(get(r#"licensor_http_requests_total{method="POST",route="/v1/check-ins",status="200"}"#), 4.0);
    assert_eq!(get(r#"licensor_http_requests_total{method="POST",route="/v1/check-ins",status="429"}"#), 1.0);
    assert_eq!(
        get(r#"licensor_http_requests_total{method="GET",route="/metrics",status="401"}"#),
        1.0,
        "the refused scrape counts"
    );
    // No label carries what a client sent: no instance id, license id or key.
    for secret in ["metrics-a", &id.to_string(), &key[..20]] {
        assert!(!text.contains(secret), "{secret} in the metrics");
    }

    // The metrics address serves /metrics without a token, and nothing else.
    let metrics_base = format!("http://{}", h.server.as_ref().unwrap().metrics_addr.unwrap());
    let (status, _, open) = scrape(&h, &metrics_base, None);
    assert_eq!(status, 200);
    assert_eq!(samples(&open).get(r#"licensor_check_ins_total{status="valid"}"#), Some(&3.0));
    let other =
        h.http.get(format!("{metrics_base}/v1/admin/licenses")).bearer_auth(ADMIN_TOKEN).send().unwrap();
    assert_eq!(other.status(), 404);
    let other = h.http.get(format!("{metrics_base}/readyz")).send().unwrap();
    assert_eq!(other.status(), 404);
}

#[test]
fn metrics_count_exactly_on_sqlite() {
    metrics_from(Db::Sqlite);
}

#[test]
fn metrics_count_exactly_on_postgres() {
    metrics_from(Db::Postgres);
}
