//! The vendor's insights, black-box: known check-ins over real HTTP, the days rolled up through
//! the admin route, and every view's exact figures, as JSON and as CSV, on SQLite and on
//! PostgreSQL.

mod common;

use chrono::{DateTime, Duration, Utc};
use reqwest::Method;
use serde_json::{json, Value};

use common::{Harness, ADMIN_TOKEN};
use licensor::license::{self, Expiry, Tier};
use licensor::sketch::Sketch;

on_both_backends!(every_view_gives_the_exact_figures_of_known_check_ins);

/// What one batch reports.
#[derive(Default)]
struct Report<'a> {
    version: &'a str,
    users: &'a str,
    modules: &'a [&'a str],
    usage: &'a [(&'a str, &'a str, u64)],
    /// Route, latencies in ms, errors.
    routes: &'a [(&'a str, &'a [f64], u64)],
    /// Fingerprint, type, message, count.
    errors: &'a [(&'a str, &'a str, &'a str, u64)],
}

fn sketch_of(values: &[f64]) -> Sketch {
    let mut s = Sketch::default();
    for v in values {
        s.add(*v);
    }
    s
}

fn batch(now: DateTime<Utc>, r: &Report<'_>) -> String {
    let t = |d: DateTime<Utc>| licensor::time::format(&d);
    json!({
        "schema": 1,
        "batch_id": uuid::Uuid::new_v4(),
        "period_start": t(now - Duration::hours(1)),
        "period_end": t(now),
        "environment": {
            "app_version": r.version, "os": "linux", "arch": "x86_64", "user_count_range": r.users,
            "modules_enabled": r.modules, "uptime_hours": 10.0,
            "last_sync_status": "success", "health": { "database": "healthy" }
        },
        "usage": r.usage.iter().map(|(kind, name, count)| json!({ "kind": kind, "name": name, "count": count })).collect::<Vec<_>>(),
        "performance": r.routes.iter().map(|(route, values, errors)| {
            let s = sketch_of(values);
            let [p50, p95, p99] = licensor::protocol::percentiles_ms(&s);
            json!({ "method": "GET", "route": route, "count": values.len(), "errors": errors,
                    "p50_ms": p50, "p95_ms": p95, "p99_ms": p99,
                    "max_ms": values.iter().cloned().fold(0.0, f64::max), "sketch": s.encode() })
        }).collect::<Vec<_>>(),
        "errors": r.errors.iter().map(|(fp, kind, message, count)| json!({
            "fingerprint": fp, "type": kind, "message": message, "stack": ["at x"], "count": count,
            "first_seen": t(now - Duration::minutes(30)), "last_seen": t(now)
        })).collect::<Vec<_>>(),
        "sessions": { "count": 1, "total_duration_s": 60, "hourly": vec![0; 24] },
        "dropped": { "sampled": 0, "throttled": 0, "overflow": 0 },
        "redactions": {}
    })
    .to_string()
}

/// Checks in over HTTP with `report` (or with telemetry disabled) and returns the status.
fn check_in(h: &Harness, key: &str, instance: &str, version: &str, report: Option<&Report<'_>>) -> String {
    let body = match report {
        Some(r) => {
            let text = batch(h.now(), &Report { version, ..*r });
            format!(
                r#"{{"license_key":"{key}","instance_id":"{instance}","nonce":"{}","software_version":"{version}","telemetry":{text}}}"#,
                common::nonce()
            )
        }
        None => format!(
            r#"{{"license_key":"{key}","instance_id":"{instance}","nonce":"{}","software_version":"{version}","telemetry_disabled":true}}"#,
            common::nonce()
        ),
    };
    let (status, answer) = h.post_raw("/v1/check-ins", "application/json", body.into_bytes());
    assert_eq!(status, 200, "{answer}");
    answer["status"].as_str().unwrap().to_owned()
}

fn rollup(h: &Harness, day: &str) -> Value {
    let (status, answer) = h.admin(Method::POST, "/v1/admin/jobs/rollup/runs", Some(&json!({ "day": day })));
    assert_eq!(status, 200, "{answer}");
    answer
}

fn get(h: &Harness, path: &str) -> Value {
    let (status, answer) = h.admin(Method::GET, path, None);
    assert_eq!(status, 200, "{path}: {answer}");
    answer
}

fn csv(h: &Harness, path: &str) -> String {
    let response = h.http.get(h.url(path)).bearer_auth(ADMIN_TOKEN).send().unwrap();
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(response.headers()["content-type"], "text/csv; charset=utf-8");
    assert!(response.headers()["content-disposition"]
        .to_str()
        .unwrap()
        .starts_with("attachment; filename=\"licensor-"));
    response.text().unwrap()
}

fn id_of(h: &Harness, key: &str) -> String {
    license::verify(key, &h.ring, h.now()).unwrap().license_id.to_string()
}

fn every_view_gives_the_exact_figures_of_known_check_ins(h: Harness) {
    let t0 = h.now();
    let a = h.license_with(Tier::Community, 5, |_| {});
    let b = h.license_with(Tier::Pro, 1, |_| {});
    let c = h.license_with(Tier::Enterprise, 3, |r| r.expiry = Expiry::At(t0 + Duration::days(20)));
    let (a_id, b_id, c_id) = (id_of(&h, &a), id_of(&h, &b), id_of(&h, &c));

    // Day 0 (2026-11-21).
    let route = "/api/items/{id}";
    let a1_day0 = Report {
        users: "11-50",
        modules: &["billing", "sso"],
        usage: &[("feature", "export", 10), ("api", "GET /x", 5)],
        routes: &[(route, &[10.0, 20.0, 30.0], 1)],
        errors: &[("aaaa", "database", "timeout", 2)],
        ..Default::default()
    };
    assert_eq!(check_in(&h, &a, "a1", "1.4.2", Some(&a1_day0)), "valid");
    let a2 = Report {
        users: "1-10",
        modules: &["billing"],
        usage: &[("feature", "export", 3), ("feature", "import", 2)],
        ..Default::default()
    };
    assert_eq!(check_in(&h, &a, "a2", "1.4.2", Some(&a2)), "valid");
    let b1 = Report {
        users: "51-200",
        usage: &[("command", "sync", 7)],
        routes: &[(route, &[100.0, 200.0], 0)],
        errors: &[("aaaa", "database", "timeout", 3)],
        ..Default::default()
    };
    assert_eq!(check_in(&h, &b, "b1", "2.0.0", Some(&b1)), "valid");
    assert_eq!(check_in(&h, &b, "b2", "2.0.0", None), "telemetry_required");
    assert_eq!(
        check_in(&h, &b, "b2", "2.0.0", Some(&Report { users: "1-10", ..Default::default() })),
        "seat_limit_exceeded"
    );
    assert_eq!(check_in(&h, &c, "c1", "3.0.0", None), "valid");

    // Day 1: a1 upgrades and reports more; nobody else checks in (their leases carry them).
    h.advance(Duration::days(1) + Duration::hours(2));
    let a1_day1 = Report {
        users: "11-50",
        modules: &["billing", "sso"],
        usage: &[("feature", "export", 30), ("feature", "import", 1)],
        errors: &[("bbbb", "panic", "crash in [PATH]", 1)],
        ..Default::default()
    };
    assert_eq!(check_in(&h, &a, "a1", "1.5.0", Some(&a1_day1)), "valid");

    // Today is day 2: both earlier days rolled up, in order, through the admin route.
    h.advance(Duration::hours(22));
    assert_eq!(h.now(), t0 + Duration::days(2));
    let ran = rollup(&h, "2026-11-21");
    assert_eq!(ran["job"], "rollup");
    assert_eq!(ran["run_key"], "2026-11-21");
    rollup(&h, "2026-11-22");
    // A re-run replaces the day's rows: nothing counts twice.
    rollup(&h, "2026-11-21");
    rollup(&h, "2026-11-22");

    // Overview.
    let overview = get(&h, "/v1/admin/insights/overview?days=2");
    assert_eq!(overview["period"], json!({ "from": "2026-11-21", "until": "2026-11-23", "days": 2 }));
    assert_eq!(
        overview["days"],
        json!([
            { "day": "2026-11-21", "active": 4, "new": 4, "lapsed": 0,
              "by_tier": { "community": 2, "pro": 1, "enterprise": 1 },
              "by_version": { "1.4.2": 2, "2.0.0": 1, "3.0.0": 1 },
              "check_ins": { "valid": 4, "telemetry_required": 1, "seat_limit_exceeded": 1 } },
            { "day": "2026-11-22", "active": 4, "new": 0, "lapsed": 0,
              "by_tier": { "community": 2, "pro": 1, "enterprise": 1 },
              "by_version": { "1.4.2": 1, "1.5.0": 1, "2.0.0": 1, "3.0.0": 1 },
              "check_ins": { "valid": 1 } }
        ])
    );
    let text = csv(&h, "/v1/admin/insights/overview?days=1&format=csv");
    assert_eq!(
        text,
        "\"day\",\"metric\",\"dimension\",\"value\"\n\
         \"2026-11-22\",\"active\",\"all\",4\n\
         \"2026-11-22\",\"active.tier\",\"community\",2\n\
         \"2026-11-22\",\"active.tier\",\"enterprise\",1\n\
         \"2026-11-22\",\"active.tier\",\"pro\",1\n\
         \"2026-11-22\",\"active.version\",\"1.4.2\",1\n\
         \"2026-11-22\",\"active.version\",\"1.5.0\",1\n\
         \"2026-11-22\",\"active.version\",\"2.0.0\",1\n\
         \"2026-11-22\",\"active.version\",\"3.0.0\",1\n\
         \"2026-11-22\",\"instances.new\",\"all\",0\n\
         \"2026-11-22\",\"instances.lapsed\",\"all\",0\n\
         \"2026-11-22\",\"check_ins\",\"valid\",1\n"
    );

    // Usage, over both days and over the last day against the one before.
    let usage = get(&h, "/v1/admin/insights/usage?kind=feature&days=2");
    assert_eq!(usage["active_installs"], 4);
    assert_eq!(
        usage["names"],
        json!([
            { "name": "export", "count": 43, "installs": 2, "share": 0.5, "previous_count": 0, "change": null },
            { "name": "import", "count": 3, "installs": 2, "share": 0.5, "previous_count": 0, "change": null }
        ])
    );
    assert_eq!(
        usage["rising"].as_array().unwrap().iter().map(|n| n["name"].clone()).collect::<Vec<_>>(),
        ["export", "import"]
    );
    let usage = get(&h, "/v1/admin/insights/usage?kind=feature&days=1");
    assert_eq!(
        usage["names"],
        json!([
            { "name": "export", "count": 30, "installs": 1, "share": 0.25, "previous_count": 13, "change": 1.3077 },
            { "name": "import", "count": 1, "installs": 1, "share": 0.25, "previous_count": 2, "change": -0.5 }
        ])
    );
    assert_eq!(usage["rising"].as_array().unwrap().len(), 1);
    assert_eq!(usage["rising"][0]["name"], "export");
    assert_eq!(
        csv(&h, "/v1/admin/insights/usage?kind=feature&days=1&format=csv"),
        "\"name\",\"count\",\"installs\",\"share\",\"previous_count\",\"change\",\"rising\"\n\
         \"export\",30,1,0.25,13,1.3077,\"true\"\n\
         \"import\",1,1,0.25,2,-0.5,\"false\"\n"
    );
    // Days rolled up before reach was kept count their installs by a distinct scan: the same.
    let with_reach = (
        get(&h, "/v1/admin/insights/usage?kind=feature&days=2"),
        get(&h, "/v1/admin/insights/usage?kind=feature&days=1"),
    );
    assert!(h.store.forget_reach().unwrap() > 0);
    assert_eq!(get(&h, "/v1/admin/insights/usage?kind=feature&days=2"), with_reach.0);
    assert_eq!(get(&h, "/v1/admin/insights/usage?kind=feature&days=1"), with_reach.1);
    rollup(&h, "2026-11-21");
    rollup(&h, "2026-11-22");
    let api = get(&h, "/v1/admin/insights/usage?kind=api_call&days=2");
    assert_eq!(api["kind"], "api");
    assert_eq!(api["names"][0]["name"], "GET /x");
    assert_eq!(api["names"][0]["count"], 5);
    assert_eq!(get(&h, "/v1/admin/insights/usage?kind=command&days=2")["names"][0]["count"], 7);

    // Performance: the two installs' sketches merged, overall and per version.
    let perf = get(&h, "/v1/admin/insights/performance?days=2");
    let routes = perf["routes"].as_array().unwrap();
    assert_eq!(routes.len(), 1);
    let all = sketch_of(&[10.0, 20.0, 30.0, 100.0, 200.0]);
    let [p50, p95, p99] = licensor::protocol::percentiles_ms(&all);
    let r = &routes[0];
    assert_eq!(
        (r["method"].as_str(), r["route"].as_str(), &r["requests"], &r["errors"], &r["error_rate"]),
        (Some("GET"), Some(route), &json!(5), &json!(1), &json!(0.2))
    );
    assert_eq!(
        (r["p50_ms"].as_f64(), r["p95_ms"].as_f64(), r["p99_ms"].as_f64()),
        (Some(p50), Some(p95), Some(p99))
    );
    assert_eq!(r["max_ms"], 200.0);
    assert_eq!(r["percentiles"], "merged_sketches");
    // Within the sketch's 1% of the true values (the median of the five is 30 ms).
    assert!((p50 - 30.0).abs() <= 0.3, "{p50}");
    let [v50, _, v99] = licensor::protocol::percentiles_ms(&sketch_of(&[10.0, 20.0, 30.0]));
    assert_eq!(r["by_version"]["1.4.2"]["requests"], 3);
    assert_eq!(r["by_version"]["1.4.2"]["p50_ms"].as_f64(), Some(v50));
    assert_eq!(r["by_version"]["1.4.2"]["p99_ms"].as_f64(), Some(v99));
    assert_eq!(r["by_version"]["2.0.0"]["requests"], 2);
    assert_eq!(r["by_version"]["2.0.0"]["errors"], 0);
    let text = csv(&h, "/v1/admin/insights/performance?days=2&format=csv");
    assert_eq!(text.lines().count(), 4, "{text}");
    assert!(text.starts_with(
        "\"method\",\"route\",\"version\",\"requests\",\"errors\",\"error_rate\",\"p50_ms\",\"p95_ms\",\"p99_ms\",\"max_ms\",\"percentiles\"\n"
    ));

    // Errors across installs.
    let errors = get(&h, "/v1/admin/insights/errors?days=2");
    let groups = errors["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 2);
    assert_eq!(
        (
            &groups[0]["fingerprint"],
            &groups[0]["installs"],
            &groups[0]["count"],
            &groups[0]["type"],
            &groups[0]["message"]
        ),
        (&json!("aaaa"), &json!(2), &json!(5), &json!("database"), &json!("timeout"))
    );
    assert_eq!(groups[0]["versions"], json!(["1.5.0", "2.0.0"]));
    assert_eq!(groups[0]["first_seen"], licensor::time::format(&(t0 - Duration::minutes(30))));
    assert_eq!(groups[0]["first_seen_version"], "3.0.0");
    assert_eq!((&groups[1]["fingerprint"], &groups[1]["installs"]), (&json!("bbbb"), &json!(1)));
    assert_eq!(groups[1]["first_seen_version"], "1.5.0");
    let since = get(&h, "/v1/admin/insights/errors?days=2&since_version=1.5.0");
    assert_eq!(
        since["groups"].as_array().unwrap().iter().map(|g| g["fingerprint"].clone()).collect::<Vec<_>>(),
        ["bbbb"]
    );
    let never = get(&h, "/v1/admin/insights/errors?days=2&since_version=9.9.9");
    assert_eq!(never["groups"], json!([]));
    let text = csv(&h, "/v1/admin/insights/errors?days=2&format=csv");
    assert!(text.contains("\n\"aaaa\",\"database\",\"timeout\",2,5,"), "{text}");

    // Environment: the installs that reported one, on the last day.
    let env = get(&h, "/v1/admin/insights/environment?days=2");
    assert_eq!(env["day"], "2026-11-22");
    assert_eq!(env["installs"], 3);
    assert_eq!(
        env["user_count_ranges"],
        json!([
            { "name": "1-10", "installs": 1, "share": 0.3333 },
            { "name": "11-50", "installs": 1, "share": 0.3333 },
            { "name": "51-200", "installs": 1, "share": 0.3333 }
        ])
    );
    assert_eq!(
        env["modules"],
        json!([{ "name": "billing", "installs": 2, "share": 0.6667 }, { "name": "sso", "installs": 1, "share": 0.3333 }])
    );
    assert_eq!(env["os"], json!([{ "name": "linux", "installs": 3, "share": 1.0 }]));
    assert_eq!(env["health"], json!([{ "name": "database:healthy", "installs": 3, "share": 1.0 }]));
    assert_eq!(env["uptime_hours_mean"], 10.0);

    // Licenses: seat use and risks.
    let licenses = get(&h, "/v1/admin/insights/licenses?days=2");
    let seat = |id: &str| {
        let l =
            licenses["licenses"].as_array().unwrap().iter().find(|l| l["license_id"] == id).unwrap().clone();
        (l["seats"].clone(), l["in_use"].clone(), l["peak"].clone())
    };
    assert_eq!(seat(&a_id), (json!(5), json!(2), json!(2)));
    assert_eq!(seat(&b_id), (json!(1), json!(1), json!(1)));
    assert_eq!(seat(&c_id), (json!(3), json!(1), json!(1)));
    // Peaks come from the daily per-license figures; days rolled up without them count the
    // install-days instead, to the same figures.
    assert_eq!(h.store.forget_figures("license.active").unwrap(), 6);
    assert_eq!(get(&h, "/v1/admin/insights/licenses?days=2"), licenses);
    rollup(&h, "2026-11-21");
    rollup(&h, "2026-11-22");
    assert_eq!(licenses["licenses"][0]["license_id"], b_id.as_str(), "the fullest first");
    let risk = |name: &str| -> Vec<(String, i64)> {
        licenses["at_risk"][name]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| (e["license_id"].as_str().unwrap().to_owned(), e["count"].as_i64().unwrap()))
            .collect()
    };
    assert_eq!(risk("overdue"), [(a_id.clone(), 1)], "a2 missed its daily check-in");
    assert_eq!(risk("in_grace"), [(a_id.clone(), 1)]);
    assert_eq!(risk("expiring"), [(c_id.clone(), 18)], "days left");
    assert_eq!(risk("at_seat_limit"), [(b_id.clone(), 1)]);
    assert_eq!(risk("telemetry_refused"), [(b_id.clone(), 1)]);
    let weeks = licenses["expirations_per_week"].as_array().unwrap();
    assert_eq!(weeks.len(), 12);
    assert_eq!(weeks[0], json!({ "week_start": "2026-11-23", "licenses": 0, "by_tier": {} }));
    assert_eq!(
        weeks[2],
        json!({ "week_start": "2026-12-07", "licenses": 1, "by_tier": { "enterprise": 1 } })
    );
    assert_eq!(weeks.iter().map(|w| w["licenses"].as_i64().unwrap()).sum::<i64>(), 1);
    let text = csv(&h, "/v1/admin/insights/licenses?days=2&format=csv");
    assert!(
        text.contains(&format!(
            "\n\"{a_id}\",\"Acme Test Corp\",\"community\",5,2,2,\"2027-11-21T10:00:00Z\",\"false\",\"overdue in_grace\"\n"
        )),
        "{text}"
    );

    // The listing's search: text in the licensee (any case), or the start of the id; LIKE's
    // wildcards are taken literally.
    let found =
        |q: &str| get(&h, &format!("/v1/admin/licenses?search={q}"))["licenses"].as_array().unwrap().len();
    assert_eq!(found("acme%20TEST"), 3);
    assert_eq!(found(&a_id[..8]), 1);
    assert_eq!(found("%25"), 0);
    assert_eq!(found("Acme_Test"), 0);

    // One license.
    let detail = get(&h, &format!("/v1/admin/licenses/{a_id}?days=2"));
    assert_eq!(detail["status"], "valid");
    assert_eq!(detail["license"]["license_id"], a_id.as_str());
    assert_eq!(detail["license"]["seats_in_use"], 2);
    assert_eq!(detail["payload"]["license_id"], a_id.as_str());
    assert_eq!(detail["instances"].as_array().unwrap().len(), 2);
    let history: Vec<(String, String)> = detail["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["instance_id"].as_str().unwrap().to_owned(),
                e["software_version"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        history,
        [("a1".into(), "1.5.0".into()), ("a2".into(), "1.4.2".into()), ("a1".into(), "1.4.2".into())]
    );
    assert_eq!(
        detail["telemetry"]["usage"],
        json!([
            { "kind": "feature", "name": "export", "count": 43 },
            { "kind": "api", "name": "GET /x", "count": 5 },
            { "kind": "feature", "name": "import", "count": 3 }
        ])
    );
    assert_eq!(
        (&detail["telemetry"]["error_groups"], &detail["telemetry"]["errors"]),
        (&json!(2), &json!(3))
    );
    assert_eq!(get(&h, &format!("/v1/admin/licenses/{b_id}"))["status"], "valid");
    let (status, _) = h.admin(Method::POST, &format!("/v1/admin/licenses/{c_id}/revoke"), None);
    assert_eq!(status, 200);
    assert_eq!(get(&h, &format!("/v1/admin/licenses/{c_id}"))["status"], "revoked");
    let (status, answer) =
        h.admin(Method::GET, &format!("/v1/admin/licenses/{}", uuid::Uuid::new_v4()), None);
    assert_eq!((status, answer["error"]["code"].as_str()), (404, Some("not_found")));

    // The revocation ends c1's lease at its next check-in: active that day, lapsed the next.
    assert_eq!(check_in(&h, &c, "c1", "3.0.0", None), "revoked");
    h.advance(Duration::days(2));
    rollup(&h, "2026-11-23");
    rollup(&h, "2026-11-24");
    let overview = get(&h, "/v1/admin/insights/overview?days=2");
    let figures: Vec<(i64, i64, i64)> = overview["days"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["active"].as_i64().unwrap(), d["new"].as_i64().unwrap(), d["lapsed"].as_i64().unwrap()))
        .collect();
    assert_eq!(figures, [(4, 0, 0), (3, 0, 1)]);
    assert_eq!(overview["days"][0]["check_ins"], json!({ "revoked": 1 }));
    assert_eq!(overview["days"][1]["by_tier"], json!({ "community": 2, "pro": 1 }));
}

#[test]
fn views_refuse_bad_queries_and_jobs_refuse_bad_days() {
    let h = Harness::start(common::Db::Sqlite).unwrap();
    let code = |path: &str| {
        let (status, answer) = h.admin(Method::GET, path, None);
        (status, answer["error"]["code"].as_str().unwrap_or_default().to_owned())
    };
    let bad = (400, "invalid_query".to_owned());
    for path in [
        "/v1/admin/insights/overview?days=0",
        "/v1/admin/insights/overview?days=366",
        "/v1/admin/insights/overview?days=ten",
        "/v1/admin/insights/overview?color=blue",
        "/v1/admin/insights/overview?format=xml",
        "/v1/admin/insights/usage",
        "/v1/admin/insights/usage?kind=clicks",
        "/v1/admin/insights/licenses?limit=0",
        "/v1/admin/insights/errors?kind=feature",
    ] {
        assert_eq!(code(path), bad, "{path}");
    }
    assert_eq!(code("/v1/admin/insights/overview?days=365").0, 200);
    let empty = h.admin(Method::GET, "/v1/admin/insights/environment", None).1;
    assert_eq!((empty["day"].clone(), empty["installs"].clone()), (Value::Null, json!(0)));
    let response = h.http.get(h.url("/v1/admin/insights/overview")).send().unwrap();
    assert_eq!(response.status().as_u16(), 401);

    let run = |body: Value| {
        let (status, answer) = h.admin(Method::POST, "/v1/admin/jobs/rollup/runs", Some(&body));
        (status, answer["error"]["code"].as_str().unwrap_or_default().to_owned())
    };
    assert_eq!(run(json!({ "day": "2026-11-22" })), (400, "invalid_request".into()), "the future");
    assert_eq!(run(json!({ "day": "yesterday" })), (400, "invalid_request".into()));
    assert_eq!(run(json!({})), (400, "invalid_request".into()));
    assert_eq!(run(json!({ "day": "2026-11-21" })).0, 200, "today so far");
    // A run under way (claimed and not finished) is not run beside.
    let claim = h.store.claim_job("rollup", "2026-11-20", h.now()).unwrap();
    assert!(claim.is_some());
    assert_eq!(run(json!({ "day": "2026-11-20" })), (409, "job_running".into()));
    // One that died an hour ago is taken over.
    h.advance(Duration::minutes(61));
    assert_eq!(run(json!({ "day": "2026-11-20" })).0, 200);
}
