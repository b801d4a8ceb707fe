//! The public insights, black-box: off by default; when on, the page shows the last whole
//! month, computed once and then kept as published; every figure has k distinct licenses
//! behind it and no dominant one; only names the vendor marked public are shown; figures are
//! coarse; and the Sybil and differencing attacks fail.

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

/// Checks an instance in with its usage, user range, modules and version.
fn check_in(
    h: &Harness,
    key: &str,
    instance: &str,
    usage: &[(&str, &str, u64)],
    rest: (&str, &[&str], &str),
) {
    let (users, modules, version) = rest;
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

/// A list as (name, licenses, count).
fn names(list: &Value) -> Vec<(String, i64, i64)> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["name"].as_str().unwrap().to_owned(),
                f["licenses"].as_i64().unwrap(),
                f["count"].as_i64().unwrap(),
            )
        })
        .collect()
}

fn n(name: &str, licenses: i64, count: i64) -> (String, i64, i64) {
    (name.to_owned(), licenses, count)
}

fn start(db: Db) -> Option<Harness> {
    Harness::start_with(db, |c| {
        c.public_insights = true;
        c.insights_min_installs = K;
        c.public_names = [
            ("api", "GET /a"),
            ("api", "GET /b"),
            ("api", "GET /d"),
            ("command", "sync"),
            ("command", "rare"),
            ("feature", "export"),
            ("version", "1.0"),
            ("module", "billing"),
            ("module", "sso"),
        ]
        .iter()
        .map(|(k, n)| (k.to_string(), n.to_string()))
        .collect();
    })
}

mod published {
    use super::*;

    fn run(db: Db) {
        let Some(h) = start(db) else { return };
        let t0 = h.now();
        let keys: Vec<String> = (0..4).map(|_| h.license(Tier::Community, 10)).collect();
        // Nothing published before a whole month is over.
        let empty = public(&h);
        assert_eq!(
            (empty["active_licenses"].clone(), empty["min_licenses"].clone()),
            (Value::Null, json!(K))
        );

        // November: four customers, one install each.
        let eleven: (&str, &[&str], &str) = ("11-50", &["billing", "sso"], "1.0");
        check_in(
            &h,
            &keys[0],
            "i1",
            &[
                ("api", "GET /a", 10),
                ("api", "GET /b", 1),
                ("api", "GET /d", 55),
                ("command", "sync", 5),
                ("command", "rare", 787),
                ("feature", "export", 2),
                ("feature", "audit", 1),
            ],
            eleven,
        );
        check_in(
            &h,
            &keys[1],
            "i2",
            &[
                ("api", "GET /a", 10),
                ("api", "GET /c", 1),
                ("api", "GET /d", 10),
                ("command", "sync", 5),
                ("feature", "export", 1),
                ("feature", "search", 1),
            ],
            ("11-50", &["billing"], "1.0"),
        );
        check_in(
            &h,
            &keys[2],
            "i3",
            &[
                ("api", "GET /a", 10),
                ("api", "GET /users/12345", 3),
                ("api", "GET /d", 10),
                ("command", "sync", 5),
                ("feature", "import", 1),
                ("feature", "search", 1),
            ],
            eleven,
        );
        check_in(
            &h,
            &keys[3],
            "i4",
            &[
                ("api", "GET /b", 2),
                ("api", "GET /c", 2),
                ("api", "GET /d", 10),
                ("command", "sync", 1),
                ("feature", "export", 1),
                ("feature", "audit", 1),
                ("feature", "search", 1),
            ],
            ("1-10", &["sso"], "2.0"),
        );

        // Sybil: two 1-seat licenses check in five instance ids each, one after another, each
        // using GET /b (which two customers use), the victim's rare command and a text of
        // their own, and release each. Released instances do not count, so GET /b stays at two
        // customers; and ten instances would still be two customers, not ten.
        for s in 0..2 {
            let sybil = h.license(Tier::Community, 1);
            let sybil_id = licensor::license::verify(&sybil, &h.ring, h.now()).unwrap().license_id;
            for i in 0..5 {
                let instance = format!("5b11{s:02}{i:02}-0000-4000-8000-000000000000");
                check_in(
                    &h,
                    &sybil,
                    &instance,
                    &[
                        ("api", "GET /b", 2),
                        ("command", "rare", 1),
                        ("feature", "Free Enterprise keys at evil.example", 1),
                    ],
                    eleven,
                );
                let (status, answer) = h.admin(
                    Method::DELETE,
                    &format!("/v1/admin/licenses/{sybil_id}/instances/{instance}"),
                    None,
                );
                assert_eq!(status, 200, "{answer}");
            }
        }
        rollup(&h, t0.date_naive());

        // On 1 December November's last day is not yet rolled up; on the 2nd it is published.
        h.advance(Duration::days(10) + Duration::hours(1));
        assert_eq!(public(&h)["active_licenses"], Value::Null);
        h.advance(Duration::days(1));
        let v = public(&h);
        assert_eq!(v["period"], json!({ "from": "2026-11-01", "until": "2026-12-01", "days": 30 }));
        // Four customers, rounded to a step of k: 3.
        assert_eq!(v["active_licenses"], 3);
        // GET /a: three customers. GET /b (two) and GET /c (not public) fold into other; GET /d
        // has four customers, but one has 55 of its 85 uses: withheld (85 − 30 = 55 cannot be
        // read off it). And "other" itself is withheld, since that customer dominates it too.
        assert_eq!(names(&v["api_calls"]), [n("GET /a", 3, 30)]);
        // rare: the victim's 787 uses stand alone (the Sybil's released instances do not
        // count, nor would ten instances of one license be more than one customer).
        assert_eq!(names(&v["commands"]), [n("sync", 3, 15)]);
        // export is public (three customers); the Sybil's text and the unmarked names fold
        // into other, which four customers stand behind and none dominates.
        assert_eq!(names(&v["features"]), [n("export", 3, 3), n("other", 3, 6)]);
        assert_eq!(
            (v["features"][0]["share"].clone(), v["features"][1]["share"].clone()),
            (json!(100), json!(100))
        );
        assert_eq!(names(&v["modules"]), [n("billing", 3, 3), n("sso", 3, 3)]);
        // 2.0 and 1-10: one customer each, withheld with no other to hide in.
        assert_eq!(names(&v["versions"]), [n("1.0", 3, 3)]);
        assert_eq!(names(&v["organisation_sizes"]), [n("11-50", 3, 3)]);
        assert_eq!(v["rising"], json!([]));
        let text = v.to_string();
        for secret in [
            "Acme", "i1", "i4", "12345", "GET /b", "GET /c", "GET /d", "rare", "787", "777", "evil", "audit",
            "search",
        ] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }

        // Differencing: the month is published once. A customer released afterwards, and the
        // page recomputed after its five minutes, changes nothing: two publications of a month
        // never differ, so subtracting one from another finds no one.
        let (status, _) = h.admin(
            Method::DELETE,
            &format!(
                "/v1/admin/licenses/{}/instances/i4",
                licensor::license::verify(&keys[3], &h.ring, h.now()).unwrap().license_id
            ),
            None,
        );
        assert_eq!(status, 200);
        h.advance(Duration::minutes(6));
        assert_eq!(public(&h), v, "the same publication, not a recomputation");
        h.advance(Duration::days(3));
        assert_eq!(public(&h), v);

        // December: three customers use GET /a twice as much; published on 2 January, beside
        // November's, which it does not overlap.
        let december = h.now();
        for (i, key) in keys.iter().take(3).enumerate() {
            check_in(
                &h,
                key,
                &format!("i{}", i + 1),
                &[("api", "GET /a", 20), ("command", "sync", 5)],
                eleven,
            );
        }
        rollup(&h, december.date_naive());
        h.advance(Duration::days(31));
        let january = public(&h);
        assert_eq!(january["period"]["from"], "2026-12-01");
        assert_eq!(names(&january["api_calls"]), [n("GET /a", 3, 60)]);
        assert_eq!(january["rising"], json!([{ "kind": "api", "name": "GET /a", "growth_percent": 100 }]));

        // The page: HTML, no script, nothing from another origin, the mechanism stated.
        let r = h.http.get(h.url("/insights")).send().unwrap();
        assert_eq!(r.status().as_u16(), 200);
        assert!(r.headers()["content-security-policy"].to_str().unwrap().starts_with("default-src 'none'"));
        let html = r.text().unwrap();
        assert!(
            html.contains("<h1>Usage insights</h1>") && html.contains("at least\n3 distinct customers"),
            "{html}"
        );
        assert!(
            html.contains("no single customer makes up more than half") && html.contains("never revised")
        );
        assert!(html.contains("<th scope=\"row\">GET /a</th><td>3</td><td>"), "{html}");
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
    let options = licensor::server::ServeOptions {
        public_names: Some("feature:export, colour:red".into()),
        data_dir: Some(h.dir.path().join("cfg")),
        ..Default::default()
    };
    let e = licensor::server::ServerConfig::resolve(options).unwrap_err().to_string();
    assert!(e.contains("--public-names") && e.contains("\"colour:red\" is not kind:name"), "{e}");
}
