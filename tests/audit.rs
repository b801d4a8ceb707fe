//! Named, scoped admin tokens and the audit log, over real HTTP on both backends: a read-only
//! token reads but cannot change anything (API and dashboard), and every admin request that may
//! change something is recorded with whose token, what, on what and how it ended.

mod common;

use reqwest::blocking::Client;
use reqwest::header;
use serde_json::{json, Value};

use common::{Harness, ADMIN_TOKEN};
use licensor::server::auth::Scope;
use licensor::server::config::NamedToken;

const VIEWER_TOKEN: &str = "viewer-token-0123456789abcdefgh";

on_both_backends!(read_only_tokens_read_and_every_change_is_audited);

fn with_viewer(db: common::Db) -> Option<Harness> {
    Harness::start_with(db, |c| {
        c.admin_tokens.push(NamedToken {
            name: "viewer".into(),
            scope: Scope::Read,
            token: VIEWER_TOKEN.into(),
        })
    })
}

fn call(
    h: &Harness,
    method: reqwest::Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value, String) {
    let mut request = h.http.request(method, h.url(path));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().unwrap();
    let status = response.status().as_u16();
    let id = response.headers()["x-request-id"].to_str().unwrap().to_owned();
    (status, response.json().unwrap_or(Value::Null), id)
}

fn read_only_tokens_read_and_every_change_is_audited(h: Harness) {
    let db = h.db;
    drop(h);
    let Some(h) = with_viewer(db) else { return };
    let post = reqwest::Method::POST;
    let issue = json!({ "tier": "pro", "licensee": "Audit GmbH", "perpetual": true, "seats": 3 });

    // Without a token, with the read-only one, then with the full one.
    let (status, _, anonymous_id) = call(&h, post.clone(), "/v1/admin/licenses", None, Some(issue.clone()));
    assert_eq!(status, 401);
    let (status, body, viewer_id) =
        call(&h, post.clone(), "/v1/admin/licenses", Some(VIEWER_TOKEN), Some(issue.clone()));
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["code"], "forbidden");
    assert!(body["error"]["message"].as_str().unwrap().contains("\"viewer\" is read-only"), "{body}");
    let (status, body, issued_id) =
        call(&h, post.clone(), "/v1/admin/licenses", Some(ADMIN_TOKEN), Some(issue));
    assert_eq!(status, 201, "{body}");
    let license_id = body["payload"]["license_id"].as_str().unwrap().to_owned();
    // The read-only token reads.
    let (status, body, _) = call(&h, reqwest::Method::GET, "/v1/admin/licenses", Some(VIEWER_TOKEN), None);
    assert_eq!((status, body["licenses"].as_array().unwrap().len()), (200, 1));
    let (status, _, _) = call(&h, reqwest::Method::GET, "/metrics", Some(VIEWER_TOKEN), None);
    assert_eq!(status, 200);
    // ...and changes nothing anywhere.
    for (method, path) in [
        (post.clone(), format!("/v1/admin/licenses/{license_id}/revoke")),
        (post.clone(), format!("/v1/admin/licenses/{license_id}/reinstate")),
        (reqwest::Method::PATCH, format!("/v1/admin/licenses/{license_id}")),
        (reqwest::Method::DELETE, format!("/v1/admin/licenses/{license_id}/instances/i-1")),
        (reqwest::Method::DELETE, "/v1/admin/instances/i-1/telemetry".to_owned()),
        (post.clone(), "/v1/admin/jobs/rollup/runs".to_owned()),
    ] {
        let (status, _, _) = call(
            &h,
            method.clone(),
            &path,
            Some(VIEWER_TOKEN),
            Some(json!({ "seats": 9, "day": "2026-11-20" })),
        );
        assert_eq!(status, 403, "{method} {path}");
    }
    let (status, _, revoked_id) =
        call(&h, post.clone(), &format!("/v1/admin/licenses/{license_id}/revoke"), Some(ADMIN_TOKEN), None);
    assert_eq!(status, 200);

    // The audit log, newest first; reads are not in it.
    let (status, page, _) = call(&h, reqwest::Method::GET, "/v1/admin/audit", Some(VIEWER_TOKEN), None);
    assert_eq!(status, 200, "{page}");
    let entries = page["entries"].as_array().unwrap();
    let summary: Vec<(String, String, String, i64)> = entries
        .iter()
        .map(|e| {
            (
                e["actor"].as_str().unwrap().to_owned(),
                e["action"].as_str().unwrap().to_owned(),
                e["target"].as_str().unwrap().to_owned(),
                e["status"].as_i64().unwrap(),
            )
        })
        .collect();
    let target = format!("license_id={license_id}");
    let s = |actor: &str, action: &str, target: &str, status: i64| {
        (actor.to_owned(), action.to_owned(), target.to_owned(), status)
    };
    assert_eq!(
        summary,
        vec![
            s("admin", "POST /v1/admin/licenses/{license_id}/revoke", &target, 200),
            s("viewer", "POST /v1/admin/jobs/rollup/runs", "", 403),
            s("viewer", "DELETE /v1/admin/instances/{instance_id}/telemetry", "instance_id=i-1", 403),
            s(
                "viewer",
                "DELETE /v1/admin/licenses/{license_id}/instances/{instance_id}",
                &format!("{target}&instance_id=i-1"),
                403
            ),
            s("viewer", "PATCH /v1/admin/licenses/{license_id}", &target, 403),
            s("viewer", "POST /v1/admin/licenses/{license_id}/reinstate", &target, 403),
            s("viewer", "POST /v1/admin/licenses/{license_id}/revoke", &target, 403),
            s("admin", "POST /v1/admin/licenses", "", 201),
            s("viewer", "POST /v1/admin/licenses", "", 403),
        ]
    );
    assert_eq!(entries[0]["request_id"], revoked_id.as_str());
    assert_eq!(entries[7]["request_id"], issued_id.as_str());
    assert_eq!(entries[8]["request_id"], viewer_id.as_str());
    // The request without a token is not in the log (anyone could fill it so).
    assert!(entries.iter().all(|e| e["request_id"] != anonymous_id.as_str()));
    assert_eq!(entries[0]["at"], "2026-11-21T10:00:00Z", "the server's clock");
    assert!(page["next_cursor"].is_null());

    // Pages, and one actor's actions.
    let (_, first, _) = call(&h, reqwest::Method::GET, "/v1/admin/audit?limit=4", Some(ADMIN_TOKEN), None);
    assert_eq!(first["entries"].as_array().unwrap().len(), 4);
    let cursor = first["next_cursor"].as_i64().unwrap();
    let (_, second, _) = call(
        &h,
        reqwest::Method::GET,
        &format!("/v1/admin/audit?limit=4&cursor={cursor}"),
        Some(ADMIN_TOKEN),
        None,
    );
    assert_eq!(second["entries"][0], entries[4]);
    let (_, admin_only, _) =
        call(&h, reqwest::Method::GET, "/v1/admin/audit?actor=admin", Some(ADMIN_TOKEN), None);
    assert_eq!(admin_only["entries"].as_array().unwrap().len(), 2);
    let (status, _, _) = call(&h, reqwest::Method::GET, "/v1/admin/audit?limit=0", Some(ADMIN_TOKEN), None);
    assert_eq!(status, 400);
    let (status, _, _) = call(&h, reqwest::Method::GET, "/v1/admin/audit", None, None);
    assert_eq!(status, 401);

    // The dashboard: the read-only token signs in and reads, but its forms are refused.
    let c = Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let r = c.post(h.url("/admin/sign-in")).form(&[("token", VIEWER_TOKEN)]).send().unwrap();
    assert_eq!(r.status().as_u16(), 303);
    let cookie = r.headers()[header::SET_COOKIE].to_str().unwrap().split(';').next().unwrap().to_owned();
    let html = c
        .get(h.url(&format!("/admin/licenses/{license_id}")))
        .header(header::COOKIE, &cookie)
        .send()
        .unwrap()
        .text()
        .unwrap();
    let start = html.find("name=\"csrf\" value=\"").expect("a form with a token") + 19;
    let csrf = &html[start..start + html[start..].find('"').unwrap()];
    let r = c
        .post(h.url(&format!("/admin/licenses/{license_id}/reinstate")))
        .header(header::COOKIE, &cookie)
        .form(&[("csrf", csrf)])
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);
    assert!(r.text().unwrap().contains("read-only token"));
    let (_, page, _) = call(&h, reqwest::Method::GET, "/v1/admin/audit?limit=2", Some(ADMIN_TOKEN), None);
    let newest: Vec<(&str, &str, i64)> = page["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["actor"].as_str().unwrap(), e["action"].as_str().unwrap(), e["status"].as_i64().unwrap()))
        .collect();
    assert_eq!(
        newest,
        [
            ("viewer", "POST /admin/licenses/{license_id}/reinstate", 403),
            ("viewer", "POST /admin/sign-in", 303)
        ]
    );
    // Nothing in the log is a token.
    let (_, all, _) = call(&h, reqwest::Method::GET, "/v1/admin/audit?limit=1000", Some(ADMIN_TOKEN), None);
    let text = all.to_string();
    assert!(!text.contains(VIEWER_TOKEN) && !text.contains(ADMIN_TOKEN));
}

/// A read-only token sees webhook URLs without the credentials receivers take in them.
#[test]
fn read_only_tokens_see_webhook_urls_masked() {
    let h = with_viewer(common::Db::Sqlite).unwrap();
    let url = "https://hook:s3cret-pass@hooks.example.com/in?token=abc123&team=ops";
    let (status, body, _) = call(
        &h,
        reqwest::Method::POST,
        "/v1/admin/webhooks",
        Some(ADMIN_TOKEN),
        Some(json!({ "url": url, "events": ["license.revoked"] })),
    );
    assert_eq!(status, 201, "{body}");
    let listed = |token: &str| {
        let (status, body, _) = call(&h, reqwest::Method::GET, "/v1/admin/webhooks", Some(token), None);
        assert_eq!(status, 200, "{body}");
        body["endpoints"][0]["url"].as_str().unwrap().to_owned()
    };
    assert_eq!(listed(ADMIN_TOKEN), url);
    assert_eq!(listed(VIEWER_TOKEN), "https://***:***@hooks.example.com/in?token=***&team=***");
}
