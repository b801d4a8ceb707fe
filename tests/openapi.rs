//! The OpenAPI document: served at `/openapi.json`, equal to `docs/openapi.json`, naming every
//! route the server has (and no route it lacks).
//!
//! After a deliberate change to the API, `LICENSOR_UPDATE_OPENAPI=1 cargo test --test openapi`
//! writes the new document to `docs/openapi.json`, to commit with the change.

mod common;

use common::{Db, Harness, ADMIN_TOKEN};
use std::collections::BTreeSet;
use std::path::Path;

fn committed() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/openapi.json")
}

#[test]
fn the_served_document_is_the_committed_one() {
    let Some(h) = Harness::start(Db::Sqlite) else { return };
    let response = h.http.get(h.url("/openapi.json")).send().unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    let served = response.text().unwrap();
    if std::env::var("LICENSOR_UPDATE_OPENAPI").as_deref() == Ok("1") {
        std::fs::write(committed(), &served).unwrap();
    }
    let document: serde_json::Value = serde_json::from_str(&served).unwrap();
    assert_eq!(document["openapi"], "3.1.0");
    let on_disk = std::fs::read_to_string(committed()).unwrap_or_default();
    assert!(
        on_disk == served,
        "docs/openapi.json differs from the document the server serves: if the API change is meant, \
         run LICENSOR_UPDATE_OPENAPI=1 cargo test --test openapi and commit docs/openapi.json"
    );
}

/// The routes `routes()` declares, as (method, path): read from the source, where all routes are
/// in one place, so that a route added without its document entry fails here.
fn declared_routes() -> BTreeSet<(String, String)> {
    let source =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/server/mod.rs")).unwrap();
    let start = source.find("pub fn routes(").unwrap();
    let end = source[start..].find("\n/// A resource whose").map(|e| start + e).unwrap();
    let text = &source[start..end];
    let mut routes = BTreeSet::new();
    let mut scope = String::new();
    let mut current: Option<String> = None;
    // Tokens in order: scopes, resources and routes.
    let mut rest = text;
    while !rest.is_empty() {
        let next = ["scope(\"", "resource(\"", ".route(web::"]
            .iter()
            .filter_map(|t| rest.find(t).map(|i| (i, *t)))
            .min_by_key(|(i, _)| *i);
        let Some((i, token)) = next else { break };
        rest = &rest[i + token.len()..];
        match token {
            "scope(\"" => {
                scope = rest[..rest.find('"').unwrap()].to_owned();
            }
            "resource(\"" => {
                // The root's resources come before any scope in the source.
                let path = &rest[..rest.find('"').unwrap()];
                // A tail parameter's pattern (`{name:.*}`) is documented as the parameter.
                current = Some(format!("{scope}{}", licensor::privacy::route_template(path)));
            }
            _ => {
                let method = &rest[..rest.find('(').unwrap()];
                routes.insert((method.to_uppercase(), current.clone().unwrap()));
            }
        }
    }
    routes
}

#[test]
fn every_route_is_in_the_document_and_every_documented_route_answers() {
    let Some(h) = Harness::start(Db::Sqlite) else { return };
    let document: serde_json::Value = h.http.get(h.url("/openapi.json")).send().unwrap().json().unwrap();
    let mut documented = BTreeSet::new();
    for (path, item) in document["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            documented.insert((method.to_uppercase(), path.clone()));
        }
    }
    let mut declared = declared_routes();
    // `/admin` (no slash) answers as `/admin/` does: one handler, documented once.
    assert!(declared.remove(&("GET".to_owned(), "/admin".to_owned())), "{declared:?}");
    assert_eq!(declared.len(), 59, "the source scan found every route: {declared:#?}");
    let undocumented: Vec<_> = declared.difference(&documented).collect();
    assert!(undocumented.is_empty(), "routes missing from the document: {undocumented:#?}");
    let missing: Vec<_> = documented.difference(&declared).collect();
    assert!(missing.is_empty(), "documented routes the server does not declare: {missing:#?}");

    // Each documented route reaches its handler: never the fallback's "no route" 404 or 405.
    for (method, path) in &documented {
        let concrete = path
            .replace("{license_id}", "00000000-0000-4000-8000-000000000000")
            .replace("{instance_id}", "nowhere")
            .replace("{view}", "overview");
        let response = h
            .http
            .request(method.parse().unwrap(), h.url(&concrete))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .unwrap();
        let status = response.status().as_u16();
        let body = response.text().unwrap();
        assert_ne!(status, 405, "{method} {path}: {body}");
        assert!(!body.contains("no route"), "{method} {path} fell through to the fallback: {status} {body}");
    }
}
