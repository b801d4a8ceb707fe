//! The actix-web middleware and telemetry scope, in an actix application.

use actix_web::http::{Method, StatusCode};
use actix_web::{test, web, App, HttpResponse};
use chrono::{Duration, Utc};
use serde_json::{json, Value};

use licensor::client::actix::{scope, Track};
use licensor::client::{Config, Licensing, Mode};
use licensor::keys::{KeyRing, Role, Signer};
use licensor::license::{self, Expiry, LicenseRequest, Tier};
use licensor::protocol::TelemetryExemption;

fn licensing(dir: &std::path::Path, instance_url: Option<&str>) -> Licensing {
    licensing_with(dir, instance_url, |_| {})
}

fn licensing_with(
    dir: &std::path::Path,
    instance_url: Option<&str>,
    tweak: impl FnOnce(&mut Config),
) -> Licensing {
    licensing_of(Tier::Pro, dir, instance_url, tweak)
}

fn licensing_of(
    tier: Tier,
    dir: &std::path::Path,
    instance_url: Option<&str>,
    tweak: impl FnOnce(&mut Config),
) -> Licensing {
    let signer = Signer::generate("vendor", Role::License).unwrap();
    let mut ring = KeyRing::new();
    ring.insert_pem("vendor", Role::License, &signer.public_pem()).unwrap();
    let now = Utc::now();
    let key = license::issue(
        &signer,
        LicenseRequest {
            licensee: "Acme <R&D>".into(),
            tier,
            expiry: Expiry::At(now + Duration::days(30)),
            not_before: None,
            seats: 3,
            features: vec![],
            check_in_interval: None,
        },
        now,
    )
    .unwrap()
    .key;
    let mut c = Config::new(key, ring, "1.0.0");
    // Never contacted: the first check-in is an hour away.
    c.server_url = Some("http://127.0.0.1:9".into());
    c.instance_url = instance_url.map(String::from);
    c.data_dir = dir.join("client");
    c.first_check_in_after = std::time::Duration::from_secs(3600);
    tweak(&mut c);
    Licensing::start(c).unwrap()
}

macro_rules! app {
    ($l:expr) => {
        test::init_service(
            App::new()
                .wrap(Track::new($l.clone()))
                .service(scope($l.clone()))
                .route("/items/{id}", web::get().to(|| async { HttpResponse::Ok().body("item") }))
                .route("/boom", web::get().to(|| async { HttpResponse::ServiceUnavailable().finish() })),
        )
        .await
    };
}

macro_rules! get {
    ($app:expr, $path:expr, $host:expr) => {{
        let req = test::TestRequest::get().uri(&$path).insert_header(("host", $host)).to_request();
        let res = test::call_service($app, req).await;
        let status = res.status();
        let body = test::read_body(res).await;
        (status, serde_json::from_slice::<Value>(&body).unwrap_or(Value::Null))
    }};
}

#[actix_web::test]
async fn requests_are_tracked_by_route_pattern_and_local_hosts_are_skipped() {
    let dir = tempfile::TempDir::new().unwrap();
    let l = licensing(dir.path(), Some("https://app.example.com"));
    let app = app!(l);
    for id in ["42", "43", "jane.doe@example.com"] {
        assert_eq!(get!(&app, &format!("/items/{id}"), "app.example.com").0, StatusCode::OK);
    }
    assert_eq!(get!(&app, "/boom", "app.example.com:443").0, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(get!(&app, "/nope/4111111111111111", "app.example.com").0, StatusCode::NOT_FOUND);
    // The developers' own requests are not counted.
    for host in ["localhost:8080", "127.0.0.1", "[::1]:8080", "192.168.1.4", "dev.local"] {
        assert_eq!(get!(&app, "/items/1", host).0, StatusCode::OK, "{host}");
    }

    let (status, body) = get!(&app, "/telemetry/summary?hours=24", "app.example.com");
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["enabled"], true);
    let routes = body["summary"]["performance"].as_array().unwrap();
    let find = |route: &str| {
        routes.iter().find(|r| r["route"] == route).unwrap_or_else(|| panic!("{route}: {body}"))
    };
    assert_eq!(find("/items/{id}")["count"], 3, "one route, never the raw paths: {body}");
    assert_eq!((find("/boom")["count"].as_u64(), find("/boom")["errors"].as_u64()), (Some(1), Some(1)));
    assert_eq!(find("{unmatched}")["count"], 1);
    // The summary's own request was tracked after the flush it caused, so it is not listed.
    assert_eq!(routes.len(), 3, "{body}");
    let text = body.to_string();
    assert!(!text.contains("jane.doe") && !text.contains("4111111111111111"), "{text}");
    let errors = body["summary"]["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0]["message"], "GET /boom answered 503");
    l.shutdown();
}

#[actix_web::test]
async fn ui_actions_are_counted_scrubbed_and_checked() {
    let dir = tempfile::TempDir::new().unwrap();
    let l = licensing(dir.path(), Some("https://app.example.com"));
    let app = app!(l);
    let post = |body: Value| {
        test::TestRequest::post()
            .uri("/telemetry/ui-actions")
            .insert_header(("host", "app.example.com"))
            .set_json(body)
            .to_request()
    };
    let res = test::call_service(&app, post(json!({"actions": [{"name": "open_report"}, {"name": "export_csv", "count": 4}, {"name": "shared with jane.doe@example.com"}]}))).await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    let body: Value = test::read_body_json(res).await;
    assert_eq!(body, json!({"accepted": 3, "events": 6, "recorded": true}));

    for (bad, code) in [
        (json!({"actions": [{"name": ""}]}), "invalid_action"),
        (json!({"actions": [{"name": "x", "count": 0}]}), "invalid_action"),
        (
            json!({"actions": (0..101).map(|i| json!({"name": format!("a{i}")})).collect::<Vec<_>>()}),
            "too_many_actions",
        ),
        (json!({"actions": [{"name": "x", "extra": 1}]}), "malformed_request"),
        (json!({"nothing": []}), "malformed_request"),
    ] {
        let res = test::call_service(&app, post(bad.clone())).await;
        assert_eq!(res.status(), StatusCode::BAD_REQUEST, "{bad}");
        let body: Value = test::read_body_json(res).await;
        assert_eq!(body["error"]["code"], code, "{bad}: {body}");
    }

    let flush = test::TestRequest::post()
        .uri("/telemetry/flush")
        .insert_header(("host", "app.example.com"))
        .to_request();
    assert_eq!(test::call_service(&app, flush).await.status(), StatusCode::OK);
    let (_, body) = get!(&app, "/telemetry/summary", "app.example.com");
    let usage = body["summary"]["usage"].as_array().unwrap();
    let count = |name: &str| usage.iter().find(|u| u["name"] == name).map(|u| u["count"].as_u64().unwrap());
    assert_eq!(count("export_csv"), Some(4));
    assert_eq!(count("open_report"), Some(1));
    // A name carrying an address is dropped, never renamed.
    assert!(usage.iter().all(|u| !u["name"].as_str().unwrap().contains('@')), "{body}");
    assert_eq!(usage.len(), 2, "{body}");
    assert!(usage.iter().all(|u| u["kind"] == "ui_action"));

    let (status, body) = get!(&app, "/telemetry/summary?hours=0", "app.example.com");
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_hours")));
    let (status, body) = get!(&app, "/telemetry/summary?hours=abc", "app.example.com");
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("malformed_request"))
    );
    l.shutdown();
}

#[actix_web::test]
async fn a_developers_machine_tracks_nothing_and_says_why() {
    let dir = tempfile::TempDir::new().unwrap();
    let l = licensing(dir.path(), Some("http://localhost:8080"));
    let app = app!(l);
    // Requests for local hosts: nothing is collected, and the instance stays a developer's.
    for host in ["localhost:8080", "127.0.0.1", "[::1]:8080", "10.0.0.7", "nas.local"] {
        assert_eq!(get!(&app, "/items/1", host).0, StatusCode::OK);
    }
    l.track_feature("export");
    let (status, body) = get!(&app, "/telemetry/summary", "localhost:8080");
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["enabled"], false);
    assert_eq!(body["reason"], "exempt from telemetry: localhost is this machine (loopback)", "{body}");
    assert!(matches!(l.mode(), Mode::Exempt { exemption: TelemetryExemption::Loopback, .. }));
    assert!(!l.telemetry().enabled());
    l.shutdown();
}

#[actix_web::test]
async fn a_loopback_instance_serving_a_public_host_reclassifies_itself() {
    let dir = tempfile::TempDir::new().unwrap();
    let l = licensing(dir.path(), Some("http://127.0.0.1:8080"));
    let app = app!(l);
    assert_eq!(get!(&app, "/items/1", "127.0.0.1:8080").0, StatusCode::OK);
    assert!(!l.telemetry().enabled());
    // The first request for a public host: a real deployment, tracked from this request on.
    assert_eq!(get!(&app, "/items/2", "erp.example.com:443").0, StatusCode::OK);
    assert_eq!(get!(&app, "/items/3", "erp.example.com").0, StatusCode::OK);
    assert_eq!(*l.mode(), Mode::FULL);
    assert!(l.telemetry().enabled());
    let notice = l.notices().into_iter().find(|n| n.contains("\"erp.example.com\"")).expect("said so");
    assert!(
        notice.contains("now runs as a licensed deployment, holds a seat and sends telemetry"),
        "{notice}"
    );
    // It checks in at once to take its seat (an hour before its first check-in was due; this
    // server address answers nothing, so the attempt is recorded as no answer).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let attempted = loop {
        let state = l.dashboard().unwrap().state.unwrap();
        if let Some(result) = state.last_result {
            break result;
        }
        assert!(std::time::Instant::now() < deadline, "no check-in was attempted");
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert!(attempted.starts_with("no answer"), "{attempted}");
    l.flush().unwrap();
    // Its telemetry routes still answer only its configured host and addresses (DNS rebinding).
    assert_eq!(get!(&app, "/telemetry/summary", "erp.example.com").0, StatusCode::MISDIRECTED_REQUEST);
    let (_, body) = get!(&app, "/telemetry/summary", "127.0.0.1:8080");
    assert_eq!(body["enabled"], true, "{body}");
    // The refused request is one the application answered (421), timed like the rest.
    let routes = body["summary"]["performance"].as_array().unwrap();
    let named: Vec<(&str, i64)> =
        routes.iter().map(|r| (r["route"].as_str().unwrap(), r["count"].as_i64().unwrap())).collect();
    assert_eq!(
        named,
        [("/items/{id}", 2), ("/telemetry/summary", 1)],
        "the request that woke it and the one after"
    );
    l.shutdown();
}

#[actix_web::test]
async fn methods_stay_apart_direct_tracking_merges_and_the_route_bound_holds() {
    let dir = tempfile::TempDir::new().unwrap();
    let l = licensing_with(dir.path(), Some("https://app.example.com"), |c| c.limits.max_routes = 4);
    let purge = Method::from_bytes(b"PURGE").unwrap();
    let ok = || async { HttpResponse::Ok().finish() };
    let app = test::init_service(
        App::new()
            .wrap(Track::new(l.clone()))
            .route("/items/{id}", web::get().to(ok))
            .route("/items/{id}", web::post().to(ok))
            .route("/items/{id}", web::method(purge.clone()).to(ok))
            .route("/other", web::get().to(ok))
            // A handler that waits: its future is pending before it answers.
            .route(
                "/slow/{id}",
                web::get().to(|| async {
                    actix_web::rt::time::sleep(std::time::Duration::from_millis(20)).await;
                    HttpResponse::Ok().finish()
                }),
            ),
    )
    .await;
    let call = |method: Method, path: &str, host: &[u8]| {
        test::TestRequest::default()
            .method(method)
            .uri(path)
            .insert_header(("host", actix_web::http::header::HeaderValue::from_bytes(host).unwrap()))
            .to_request()
    };
    // A request whose handler waits is tracked once it answers, with the time it took.
    let res = test::call_service(&app, call(Method::GET, "/slow/1", b"app.example.com")).await;
    assert_eq!(res.status(), StatusCode::OK);
    for (method, path) in [
        (Method::GET, "/items/1"),
        (Method::GET, "/items/2"),
        (Method::POST, "/items/3"),
        (purge.clone(), "/items/4"),
        (purge.clone(), "/items/5"),
        // A fifth (method, route): past the bound of four.
        (Method::GET, "/other"),
    ] {
        assert_eq!(
            test::call_service(&app, call(method, path, b"app.example.com")).await.status(),
            StatusCode::OK
        );
    }
    // A host that is not text is nobody's development host: tracked like any other.
    let res = test::call_service(&app, call(Method::GET, "/items/6", b"caf\xe9.example")).await;
    assert_eq!(res.status(), StatusCode::OK);
    // The application's own tracking of the same route lands in the same figures.
    l.telemetry().requests.track_request("GET", "/items/{id}", 200, std::time::Duration::from_millis(5));

    let (routes, overflow) = l.telemetry().requests.drain();
    let got: Vec<(&str, &str, u64)> =
        routes.iter().map(|r| (r.method.as_str(), r.route.as_str(), r.count)).collect();
    assert_eq!(
        got,
        [
            ("GET", "/items/{id}", 4),
            ("GET", "/slow/{id}", 1),
            ("POST", "/items/{id}", 1),
            ("PURGE", "/items/{id}", 2)
        ]
    );
    assert_eq!(overflow, 1, "the request past the route bound is counted, not lost");
    // Every duration was recorded: the sketches hold every request.
    assert_eq!(routes.iter().map(|r| r.sketch.count()).sum::<u64>(), 8);
    let slow = routes[1].sketch.quantile(1.0).unwrap();
    assert!(slow >= 20.0 * 0.99, "the waiting handler's 20 ms are in its time: {slow}");
    let slowest = routes[0].sketch.quantile(1.0).unwrap();
    assert!(slowest >= 5.0 * 0.99, "the directly tracked 5 ms is among GET's: {slowest}");
    l.shutdown();
}

/// A page of the deployment's own, checked for what every one must be: 200, HTML, and a policy
/// that lets it load nothing from anywhere.
async fn own_page<S, R, B>(app: &S, request: R) -> String
where
    S: actix_web::dev::Service<R, Response = actix_web::dev::ServiceResponse<B>, Error = actix_web::Error>,
    B: actix_web::body::MessageBody,
{
    let page = test::call_service(app, request).await;
    assert_eq!(page.status(), StatusCode::OK);
    assert_eq!(page.headers().get("content-type").unwrap(), "text/html; charset=utf-8");
    let policy = page.headers().get("content-security-policy").unwrap().to_str().unwrap().to_owned();
    assert!(policy.starts_with("default-src 'none'"), "{policy}");
    String::from_utf8(test::read_body(page).await.to_vec()).unwrap()
}

/// A page elsewhere whose name was made to resolve to this machine (DNS rebinding) reads and
/// posts nothing: the telemetry routes answer only an address, `localhost`, or the host of
/// `LICENSOR_INSTANCE_URL`.
#[actix_web::test]
async fn the_telemetry_routes_answer_only_their_own_host() {
    let dir = tempfile::TempDir::new().unwrap();
    let enterprise = licensing_of(Tier::Enterprise, dir.path(), Some("https://app.example.com"), |_| {});
    let app = app!(enterprise);
    let request = |method: &str, path: &str, host: &str| {
        let r = if method == "POST" { test::TestRequest::post() } else { test::TestRequest::get() };
        let r = r.uri(path).insert_header(("host", host.to_owned()));
        if path.ends_with("/choice") {
            r.insert_header(("origin", format!("http://{host}"))).set_form([("choice", "disabled")])
        } else {
            r
        }
        .to_request()
    };
    for (method, path) in [
        ("GET", "/telemetry/privacy"),
        ("GET", "/telemetry/dashboard"),
        ("GET", "/telemetry/summary"),
        ("POST", "/telemetry/preview"),
        ("POST", "/telemetry/choice"),
    ] {
        for host in
            ["attacker.example", "attacker.example:8080", "app.example.com.evil.example", "localhost.evil"]
        {
            let answer = test::call_service(&app, request(method, path, host)).await;
            assert_eq!(answer.status(), StatusCode::MISDIRECTED_REQUEST, "{method} {path} for {host}");
            let text = String::from_utf8(test::read_body(answer).await.to_vec()).unwrap();
            assert!(text.contains("Set LICENSOR_INSTANCE_URL"), "{text}");
        }
        for host in [
            "app.example.com",
            "APP.example.com.:443",
            "127.0.0.1:8080",
            "[::1]:3000",
            "10.1.2.3",
            "localhost:3000",
        ] {
            let answer = test::call_service(&app, request(method, path, host)).await;
            assert_ne!(answer.status(), StatusCode::MISDIRECTED_REQUEST, "{method} {path} for {host}");
        }
    }
    assert_eq!(enterprise.saved_choice().unwrap(), Some(licensor::client::Choice::Disabled));
    enterprise.shutdown();
}

/// The privacy page says what is and is not collected, asks nothing of another origin, and
/// offers the controls the tier allows: none on Pro (a post is refused), all four on
/// Enterprise, saved for the next start; a post from another site is refused.
#[actix_web::test]
async fn the_privacy_page_explains_and_offers_the_controls_the_tier_allows() {
    let dir = tempfile::TempDir::new().unwrap();
    let pro = licensing(dir.path(), Some("https://app.example.com"));
    let app = app!(pro);
    let html = own_page(&app, test::TestRequest::get().uri("/telemetry/privacy").to_request()).await;
    for expected in [
        "Telemetry is on",
        "License: Acme &lt;R&amp;D&gt; (pro tier)",
        "What is never sent",
        "IP addresses",
        "The pro tier's license requires usage telemetry",
        "<a href=\"summary\">",
        "<a href=\"privacy-rules\">the privacy rules</a>",
    ] {
        assert!(html.contains(expected), "{expected}: {html}");
    }
    let rules =
        test::call_service(&app, test::TestRequest::get().uri("/telemetry/privacy-rules").to_request()).await;
    assert_eq!(rules.headers().get("content-type").unwrap(), "text/plain; charset=utf-8");
    let rules = String::from_utf8(test::read_body(rules).await.to_vec()).unwrap();
    assert!(rules.starts_with("# What the scrubber masks, and what it keeps"), "{rules}");
    assert!(rules.contains("## Public figures no one can single out"));
    for absent in ["<script", "<link", "src=", "url(", "<form", "public insights"] {
        assert!(!html.contains(absent), "{absent}: {html}");
    }
    let post = |choice: &str, origin: &str| {
        test::TestRequest::post()
            .uri("/telemetry/choice")
            .insert_header(("host", "app.example.com"))
            .insert_header(("origin", origin.to_owned()))
            .set_form([("choice", choice)])
            .to_request()
    };
    let refused = test::call_service(&app, post("disabled", "https://app.example.com")).await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    let text = String::from_utf8(test::read_body(refused).await.to_vec()).unwrap();
    assert!(text.contains("Refused: telemetry cannot be disabled on the pro tier"), "{text}");
    assert_eq!(pro.saved_choice().unwrap(), None);
    pro.shutdown();

    let data = tempfile::TempDir::new().unwrap();
    let enterprise = licensing_of(Tier::Enterprise, data.path(), Some("https://app.example.com"), |c| {
        c.public_insights_url = Some("https://vendor.example.com/insights".into());
    });
    let app = app!(enterprise);
    let html = String::from_utf8(
        test::call_and_read_body(&app, test::TestRequest::get().uri("/telemetry/privacy").to_request())
            .await
            .to_vec(),
    )
    .unwrap();
    assert_eq!(html.matches("<form method=\"post\" action=\"choice\">").count(), 4, "{html}");
    assert!(html.contains("licensor telemetry export --signed"), "{html}");
    assert!(html.contains("href=\"https://vendor.example.com/insights\""), "{html}");
    assert!(html.contains("value=\"full\"><button type=\"submit\" aria-pressed=\"true\">"), "{html}");

    let elsewhere = test::call_service(&app, post("disabled", "https://evil.example")).await;
    assert_eq!(elsewhere.status(), StatusCode::FORBIDDEN);
    assert_eq!(enterprise.saved_choice().unwrap(), None);
    let unknown = test::call_service(&app, post("off", "https://app.example.com")).await;
    assert_eq!(unknown.status(), StatusCode::BAD_REQUEST);

    let saved = test::call_service(&app, post("basic", "https://app.example.com")).await;
    assert_eq!(saved.status(), StatusCode::SEE_OTHER);
    assert_eq!(saved.headers().get("location").unwrap(), "privacy?saved=basic");
    assert_eq!(enterprise.saved_choice().unwrap(), Some(licensor::client::Choice::Basic));
    let html = String::from_utf8(
        test::call_and_read_body(
            &app,
            test::TestRequest::get().uri("/telemetry/privacy?saved=basic").to_request(),
        )
        .await
        .to_vec(),
    )
    .unwrap();
    assert!(html.contains("Saved: telemetry <strong>basic</strong>"), "{html}");
    assert!(html.contains("value=\"basic\"><button type=\"submit\" aria-pressed=\"true\">"), "{html}");
    let saved = test::call_service(&app, post("disabled_basic", "https://app.example.com")).await;
    assert_eq!(saved.status(), StatusCode::SEE_OTHER);
    assert_eq!(enterprise.saved_choice().unwrap(), Some(licensor::client::Choice::DisabledBasic));
    enterprise.shutdown();
}

/// The application's own preview flushes its memory first: a feature tracked a moment ago is
/// in the batch, and the batch is fixed (the same bytes again, and what the check-in sends).
#[actix_web::test]
async fn the_applications_preview_includes_its_memory_and_is_fixed() {
    let dir = tempfile::TempDir::new().unwrap();
    let l = licensing(dir.path(), Some("https://app.example.com"));
    let app = app!(l);
    l.track_feature("just_now");
    let preview = || test::TestRequest::post().uri("/telemetry/preview").to_request();
    let first = test::call_service(&app, preview()).await;
    assert_eq!(first.status(), StatusCode::OK);
    let batch_id = first.headers().get("licensor-batch-id").unwrap().to_str().unwrap().to_owned();
    let bytes = test::read_body(first).await;
    let batch: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(batch["batch_id"], batch_id.as_str());
    assert_eq!(batch["usage"], json!([{"kind": "feature", "name": "just_now", "count": 1}]));
    l.track_feature("after");
    assert_eq!(test::call_and_read_body(&app, preview()).await, bytes, "fixed once shown");
    let outbox =
        licensor::client::store::LocalStore::open(&dir.path().join("client")).unwrap().outbox().unwrap();
    assert_eq!(outbox.unwrap().payload.as_bytes(), &bytes[..]);
    // Waiting behind it: the feature tracked after, and the preview requests themselves (one
    // route row: the middleware tracks them as it tracks any request).
    let p = l.preview().unwrap().unwrap();
    assert_eq!((p.unflushed, p.queued_behind), (licensor::client::licensing::Unflushed::Nothing, 2));
    l.shutdown();
}

/// The local dashboard, served by the telemetry scope: status, license, charts with their
/// figures, the next batch byte for byte once one waits, and no script.
#[actix_web::test]
async fn the_local_dashboard_shows_the_figures_and_the_next_batch() {
    let dir = tempfile::TempDir::new().unwrap();
    let l = licensing(dir.path(), Some("https://app.example.com"));
    let app = app!(l);
    l.track_feature("export_csv");
    l.track_request("GET", "/items/{id}", 200, std::time::Duration::from_millis(12));
    l.track_request("GET", "/items/{id}", 503, std::time::Duration::from_millis(40));
    let get = || test::TestRequest::get().uri("/telemetry/dashboard").to_request();
    let html = own_page(&app, get()).await;
    for expected in [
        "<h1>Telemetry on this deployment</h1>",
        "Telemetry is on",
        "License status: <strong>grace until",
        "Acme &lt;R&amp;D&gt;: pro tier, 3 seats",
        "<td>feature</td><td>export_csv</td><td>1</td>",
        "<td>GET /items/{id}</td><td>2</td><td>1</td>",
        "No batch waits: the next check-in assembles one from the",
        "No batch has been sent yet.",
    ] {
        assert!(html.contains(expected), "{expected}: {html}");
    }
    assert_eq!(html.matches("<svg").count(), 3, "usage, requests and errors, latency");
    assert!(!html.contains("<script"));

    let pinned =
        test::call_and_read_body(&app, test::TestRequest::post().uri("/telemetry/preview").to_request())
            .await;
    let html = String::from_utf8(test::call_and_read_body(&app, get()).await.to_vec()).unwrap();
    let pinned = String::from_utf8(pinned.to_vec()).unwrap();
    assert!(html.contains(&format!("<pre>{}</pre>", licensor::html::escape(&pinned))), "{html}");
    l.shutdown();
}
