//! The public insights, black-box: off by default; when on, every figure has k installs behind
//! it, rarer names fold into "other", a total never gives a hidden figure away, identifiers and
//! customers never appear, and the page is computed at most every five minutes.

mod common;

use chrono::Duration;
use reqwest::Method;
use serde_json::{json, Value};

use common::{Db, Harness};
use licensor::license::Tier;

const K: u32 = 3;

/// One install's batch: (kind, name, count) usage, its user range, modules and version.
fn report(usage: &[(&str, &str, u64)], users: &str, modules: &[&str], version: &str) -> String {
    let mut batch = common::batch(uuid::Uuid::new_v4(), 0, 0, 0);
    batch["usage"] = usage.iter().map(|(k, n, c)| json!({ "kind": k, "name": n, "count": c })).collect();
    batch["environment"]["user_count_range"] = json!(users);
    batch["environment"]["modules_enabled"] = json!(modules);
    batch["environment"]["app_version"] = json!(version);
    batch.to_string()
}

/// An install's id, usage, user range, modules and version.
type Install<'a> = (&'a str, Vec<(&'a str, &'a str, u64)>, &'a str, Vec<&'a str>, &'a str);

fn check_in_all(h: &Harness, keys: &[String], double: bool) {
    let a = if double { 20 } else { 10 };
    let installs: [Install; 4] = [
        (
            "i1",
            vec![
                ("api", "GET /a", a),
                ("api", "GET /b", 1),
                ("command", "sync", 5),
                ("feature", "export", 2),
                ("feature", "audit", 1),
            ],
            "11-50",
            vec!["billing", "sso"],
            "1.0",
        ),
        (
            "i2",
            vec![
                ("api", "GET /a", a),
                ("api", "GET /c", 1),
                ("command", "sync", 5),
                ("feature", "export", 1),
            ],
            "11-50",
            vec!["billing"],
            "1.0",
        ),
        (
            "i3",
            vec![
                ("api", "GET /a", a),
                ("api", "GET /users/12345", 3),
                ("command", "sync", 5),
                ("feature", "import", 1),
            ],
            "11-50",
            vec!["billing", "sso"],
            "1.0",
        ),
        (
            "i4",
            vec![
                ("api", "GET /b", 2),
                ("api", "GET /c", 2),
                ("command", "sync", 1),
                ("feature", "export", 1),
                ("feature", "audit", 1),
            ],
            "1-10",
            vec!["sso"],
            "2.0",
        ),
    ];
    for (i, (instance, usage, users, modules, version)) in installs.iter().enumerate() {
        let key = &keys[i % keys.len()];
        let body =
            h.check_in_body(key, instance, &common::nonce(), Some(&report(usage, users, modules, version)));
        let body = String::from_utf8(body).unwrap().replacen(
            "\"software_version\":\"1.4.2\"",
            &format!("\"software_version\":\"{version}\""),
            1,
        );
        let (status, answer) = h.post_raw("/v1/check-ins", "application/json", body.into_bytes());
        assert_eq!((status, answer["status"].as_str()), (200, Some("valid")), "{answer}");
    }
}

fn rollup(h: &Harness, day: chrono::NaiveDate) {
    let (status, answer) =
        h.admin(Method::POST, "/v1/admin/jobs/rollup/runs", Some(&json!({ "day": day.to_string() })));
    assert_eq!(status, 200, "{answer}");
}

fn public(h: &Harness) -> Value {
    let r = h.http.get(h.url("/v1/insights")).send().unwrap();
    assert_eq!(r.status().as_u16(), 200);
    r.json().unwrap()
}

fn names(list: &Value) -> Vec<(String, i64)> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|f| (f["name"].as_str().unwrap().to_owned(), f["installs"].as_i64().unwrap()))
        .collect()
}

fn start(db: Db) -> Option<Harness> {
    Harness::start_with(db, |c| {
        c.public_insights = true;
        c.insights_min_installs = K;
    })
}

mod published {
    use super::*;

    fn run(db: Db) {
        let Some(h) = start(db) else { return };
        let t0 = h.now();
        let keys = vec![h.license(Tier::Community, 10), h.license(Tier::Community, 10)];
        // Nothing rolled up: too few installs to say anything.
        let empty = public(&h);
        assert_eq!(
            (empty["active_installs"].clone(), empty["min_installs"].clone()),
            (Value::Null, json!(K))
        );

        // The previous period, then the period: the same four installs, GET /a used twice as much.
        check_in_all(&h, &keys, false);
        rollup(&h, t0.date_naive());
        h.advance(Duration::days(30));
        check_in_all(&h, &keys, true);
        rollup(&h, (t0 + Duration::days(30)).date_naive());
        h.advance(Duration::days(1));

        let v = public(&h);
        assert_eq!(v["active_installs"], 4);
        // GET /a (3 installs) is shown; GET /b and GET /c (2 each: k − 1) and the identifier
        // fold into other, which 4 installs stand behind.
        assert_eq!(names(&v["api_calls"]), [("GET /a".into(), 3), ("other".into(), 4)]);
        assert_eq!(v["api_calls"][0]["count"], 60);
        assert_eq!(v["api_calls"][1]["count"], 9);
        assert_eq!(names(&v["commands"]), [("sync".into(), 4)]);
        assert_eq!(v["commands"][0]["count"], 16);
        // import (1) and audit (2) fold together: 3 installs, enough for other.
        assert_eq!(names(&v["features"]), [("export".into(), 3), ("other".into(), 3)]);
        assert_eq!(v["features"][0]["share"], 0.75);
        assert!(v["features"][0].get("count").is_none());
        // Modules: billing and sso, 3 installs each.
        assert_eq!(names(&v["modules"]), [("billing".into(), 3), ("sso".into(), 3)]);
        // Versions and sizes are partitions of a published total (4 installs): 2.0 and 1-10
        // (1 install) cannot hide alone, since total minus shown would reveal them, so the
        // shown name folds in too and only "other" remains.
        assert_eq!(names(&v["versions"]), [("other".into(), 4)]);
        assert_eq!(names(&v["organisation_sizes"]), [("other".into(), 4)]);
        assert_eq!(v["rising"], json!([{ "kind": "api", "name": "GET /a", "growth": 1.0 }]));

        // Computed at most once per five minutes: the same page (and its time) until then.
        h.advance(Duration::minutes(4));
        assert_eq!(public(&h), v);
        h.advance(Duration::minutes(1));
        let later = public(&h);
        assert_eq!(later["generated_at"], licensor::time::format(&h.now()));
        assert_ne!(later["generated_at"], v["generated_at"]);

        // Nothing that names a customer, an install or an identifier.
        let text = v.to_string();
        for secret in ["Acme Test Corp", "i1", "i4", "12345", "GET /b", "GET /c", "import", "audit"] {
            assert!(!text.contains(&format!("\"{secret}")), "{secret} in {text}");
        }

        // The page: HTML, no script, nothing from another origin.
        let r = h.http.get(h.url("/insights")).send().unwrap();
        assert_eq!(r.status().as_u16(), 200);
        assert!(r.headers()["content-security-policy"].to_str().unwrap().starts_with("default-src 'none'"));
        let html = r.text().unwrap();
        assert!(html.contains("<h1>Usage insights</h1>") && html.contains("at least 3 distinct installs"));
        assert!(html.contains("<th scope=\"row\">GET /a</th><td>3</td>"), "{html}");
        assert!(!html.contains("<script") && !html.contains("GET /users"));
        assert_eq!(html.matches("http").count(), html.matches("http://www.w3.org/2000/svg").count());
    }

    #[test]
    fn sqlite() {
        run(Db::Sqlite);
    }

    #[test]
    fn postgres() {
        run(Db::Postgres);
    }
}

#[test]
fn off_unless_turned_on_and_k_is_never_below_two() {
    let h = Harness::start(Db::Sqlite).unwrap();
    for path in ["/insights", "/v1/insights"] {
        assert_eq!(h.http.get(h.url(path)).send().unwrap().status().as_u16(), 404, "{path}");
    }
    let options = licensor::server::ServeOptions {
        insights_min_installs: Some(1),
        data_dir: Some(h.dir.path().join("cfg")),
        ..Default::default()
    };
    let e = licensor::server::ServerConfig::resolve(options).unwrap_err().to_string();
    assert!(e.contains("--insights-min-installs") && e.contains("at least 2"), "{e}");
}
