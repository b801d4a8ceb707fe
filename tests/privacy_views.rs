//! The privacy corpus through every door, black-box, on both backends. Every secret of
//! `tests/fixtures/pii-corpus.json` is sent in every free-text field and every name of a batch,
//! and as an instance id. Then every row of every table (payloads inflated), every admin answer
//! (JSON and CSV), every dashboard page and export, and the public page and its JSON are
//! searched for the corpus's sensitive fragments; and what must survive does.

mod common;

use chrono::Duration;
use reqwest::blocking::Client;
use reqwest::header;
use reqwest::Method;
use serde_json::{json, Value};

use common::{Db, Harness, ADMIN_TOKEN};
use licensor::license::Tier;

/// A batch carrying `secret` in every string it has, where the protocol's own limits allow
/// (names hold no line breaks, a method is at most 16 characters, a version at most 64).
fn poisoned(secret: &str, i: usize) -> Value {
    let fits = |max: usize| !secret.contains('\n') && secret.len() <= max;
    let or = |max: usize, fallback: &str| if fits(max) { secret.to_owned() } else { fallback.to_owned() };
    let name = |prefix: &str| if fits(100) { format!("{prefix} {secret}") } else { prefix.to_owned() };
    let mut b = common::batch(uuid::Uuid::new_v4(), 4, 1, 1);
    b["environment"]["app_version"] = json!(or(60, "1.4.2"));
    b["environment"]["os"] = json!(name("linux"));
    b["environment"]["arch"] = json!(or(60, "x86_64"));
    b["environment"]["modules_enabled"] = json!([name("module"), or(100, "sso"), "billing"]);
    b["environment"]["health"] = json!({ name("svc"): "healthy", "database": "healthy" });
    for (u, kind) in ["feature", "api", "command", "ui_action"].iter().enumerate() {
        let n = if u % 2 == 0 { name(kind) } else { or(100, kind) };
        b["usage"][u] = json!({ "kind": kind, "name": n, "count": 3 });
    }
    b["usage"].as_array_mut().unwrap().push(json!({ "kind": "feature", "name": "export_pdf", "count": 5 }));
    b["performance"][0]["route"] = json!(name("/api"));
    b["performance"][0]["method"] = json!(or(16, "GET"));
    b["performance"].as_array_mut().unwrap().push(json!({
        "method": "GET", "route": "/api/items/{id}", "count": 50, "errors": 1,
        "p50_ms": 12.0, "p95_ms": 40.5, "p99_ms": 88.0, "max_ms": 120.0, "sketch": ""
    }));
    b["errors"][0]["type"] = json!(name("db"));
    b["errors"][0]["message"] = json!(format!("failed for {secret} at step 3"));
    b["errors"][0]["stack"] = json!([format!("at {secret}"), "at handler (orders.rs:42)"]);
    b["errors"][0]["fingerprint"] = json!(format!("{:x}", 0xabc0 + i));
    if fits(55) {
        b["redactions"] = json!({ name("rule"): 1, "email": 2 });
    }
    b
}

fn sign_in(h: &Harness, c: &Client) -> String {
    let r = c.post(h.url("/admin/sign-in")).form(&[("token", ADMIN_TOKEN)]).send().unwrap();
    assert_eq!(r.status().as_u16(), 303);
    r.headers()[header::SET_COOKIE].to_str().unwrap().split(';').next().unwrap().to_owned()
}

fn run(db: Db) {
    let Some(h) = Harness::start_with(db, |c| {
        c.public_insights = true;
        c.insights_min_installs = 2;
    }) else {
        return;
    };
    let (secrets, fragments) = common::pii_corpus();
    let keys = [h.license(Tier::Pro, 200), h.license(Tier::Pro, 200)];
    for (i, secret) in secrets.iter().enumerate() {
        // As an instance id: refused, whatever else the request holds.
        let body = h.check_in_body(
            &keys[0],
            secret,
            &common::nonce(),
            Some(&common::batch(uuid::Uuid::new_v4(), 1, 0, 0).to_string()),
        );
        let (code, answer) = h.post_raw("/v1/check-ins", "application/json", body);
        assert_eq!(code, 400, "{secret:?} as an instance id: {answer}");
        // In every string of a batch: accepted, with what is secret gone.
        let body = h.check_in_body(
            &keys[i % 2],
            &format!("pv-{i}"),
            &common::nonce(),
            Some(&poisoned(secret, i).to_string()),
        );
        let (code, answer) = h.post_raw("/v1/check-ins", "application/json", body);
        assert_eq!((code, answer["status"].as_str()), (200, Some("valid")), "{secret:?}: {answer}");
    }
    let (status, answer) = h.admin(
        Method::POST,
        "/v1/admin/jobs/rollup/runs",
        Some(&json!({ "day": h.now().date_naive().to_string() })),
    );
    assert_eq!(status, 200, "{answer}");
    // Into December, so that November is published.
    h.advance(Duration::days(11) + Duration::hours(1));

    let mut texts: Vec<(String, String)> =
        h.store.every_text().unwrap().into_iter().map(|t| ("a table".to_owned(), t)).collect();
    let get = |path: &str, auth: Option<&str>| -> String {
        let c = Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
        let mut r = c.get(h.url(path));
        match auth {
            Some(cookie) => r = r.header(header::COOKIE, cookie),
            None if path.starts_with("/v1/admin") => r = r.bearer_auth(ADMIN_TOKEN),
            None => {}
        }
        let r = r.send().unwrap();
        assert_eq!(r.status().as_u16(), 200, "{path}");
        r.text().unwrap()
    };
    let license_id = licensor::license::verify(&keys[0], &h.ring, h.now()).unwrap().license_id;
    let mut paths: Vec<String> = vec![
        "/v1/admin/licenses".into(),
        format!("/v1/admin/licenses/{license_id}"),
        "/v1/admin/instances?limit=1000".into(),
        "/v1/admin/audit".into(),
        "/v1/admin/telemetry/summary?instance_id=pv-0&hours=720".into(),
        "/v1/insights".into(),
        "/insights".into(),
    ];
    for view in ["overview", "performance", "errors", "environment", "licenses"] {
        paths.push(format!("/v1/admin/insights/{view}?days=30"));
        paths.push(format!("/v1/admin/insights/{view}?days=30&format=csv"));
    }
    for kind in ["feature", "api_call", "command", "ui_action"] {
        paths.push(format!("/v1/admin/insights/usage?days=30&kind={kind}"));
        paths.push(format!("/v1/admin/insights/usage?days=30&kind={kind}&format=csv"));
    }
    for path in &paths {
        texts.push((path.clone(), get(path, None)));
    }
    let c = Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let cookie = sign_in(&h, &c);
    let mut pages: Vec<String> = vec![
        "/admin/overview?days=30".into(),
        "/admin/performance?days=30".into(),
        "/admin/errors?days=30".into(),
        "/admin/environment?days=30".into(),
        "/admin/licenses".into(),
        format!("/admin/licenses/{license_id}"),
        "/admin/instances".into(),
    ];
    for kind in ["feature", "api_call", "command", "ui_action"] {
        pages.push(format!("/admin/usage?days=30&kind={kind}"));
        pages.push(format!("/admin/export/usage.csv?days=30&kind={kind}"));
    }
    for view in ["overview", "performance", "errors", "environment", "licenses"] {
        pages.push(format!("/admin/export/{view}.csv?days=30"));
    }
    for page in &pages {
        texts.push((page.clone(), get(page, Some(&cookie))));
    }

    for (place, text) in &texts {
        let searched = common::ids_masked(text);
        for fragment in &fragments {
            assert!(!searched.contains(fragment.as_str()), "{fragment:?} in {place}: {text}");
        }
    }
    // What must survive does: the corpus went through, masked, and the plain names stayed.
    let all: String = texts.iter().map(|(_, t)| t.as_str()).collect::<Vec<_>>().join("\n");
    for kept in ["[EMAIL]", "export_pdf", "/api/items/{id}", "billing", "orders.rs:42", "failed for"] {
        assert!(all.contains(kept), "{kept} was lost");
    }
    let errors = get("/v1/admin/insights/errors?days=30", None);
    assert!(errors.contains("failed for [EMAIL] at step 3"), "{errors}");
}

#[test]
fn sqlite() {
    run(Db::Sqlite);
}

#[test]
fn postgres() {
    run(Db::Postgres);
}

/// The search's masking hides only the product's own random identifiers: a digest that
/// happens to hold `abc123`, not the secret itself, nor a card number.
#[test]
fn the_search_masks_only_random_identifiers() {
    let text = "e665cabc12336399f29d3c4122a9f94cd9adacea345d76968317d1e4a6bea0b4 \
                3c2d8b82-045e-4204-9446-a2c45d265fb4 sessionid=abc123; 4111111111111111";
    let masked = common::ids_masked(text);
    assert_eq!(masked, "# # sessionid=abc123; 4111111111111111");
}
