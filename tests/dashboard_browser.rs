//! The dashboard in a real browser: Debian's Chromium driven through chromedriver (WebDriver,
//! with fantoccini). Sign in, see the overview's charts, open a license, revoke it (the next
//! check-in answers `revoked`), sign out, read the public insights; no request may leave the
//! server's origin, a form
//! posted without its token is refused, and the page reads on a phone's width. Screenshots go
//! to `target/dashboard-*.png`.
//!
//! Without chromium and chromedriver the test says so loudly and passes, unless
//! `LICENSOR_REQUIRE_BROWSER=1` (as `.ci/run` sets, after installing both), which makes it fail.

mod common;

use chrono::Duration;
use fantoccini::{ClientBuilder, Locator};
use serde_json::{json, Value};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use common::{Db, Harness, ADMIN_TOKEN};
use licensor::license::{self, Tier};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// chromedriver, stopped when dropped.
struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Starts chromedriver, or says why it cannot (`None`: no browser on this machine).
fn driver() -> Option<(Driver, u16)> {
    if !Path::new(CHROMIUM).exists() || !Path::new(CHROMEDRIVER).exists() {
        if std::env::var("LICENSOR_REQUIRE_BROWSER").as_deref() == Ok("1") {
            panic!("LICENSOR_REQUIRE_BROWSER=1 but {CHROMIUM} or {CHROMEDRIVER} is missing (apt-get install chromium chromium-driver)");
        }
        eprintln!(
            "\n!!! SKIPPED: the dashboard's browser test needs {CHROMIUM} and {CHROMEDRIVER} \
             (apt-get install chromium chromium-driver); .ci/run installs them.\n"
        );
        return None;
    }
    let port = free_port();
    let child = Command::new(CHROMEDRIVER)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver starts");
    let driver = Driver(child);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(std::time::Instant::now() < deadline, "chromedriver did not listen within 20 s");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    Some((driver, port))
}

fn screenshots() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A headless Chromium session through the chromedriver on `port`.
async fn session(port: u16) -> fantoccini::Client {
    let capabilities: serde_json::Map<String, Value> = serde_json::from_value(json!({
        "browserName": "chrome",
        "goog:chromeOptions": {
            "binary": CHROMIUM,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,1000"]
        }
    }))
    .unwrap();
    ClientBuilder::rustls()
        .expect("a TLS configuration")
        .capabilities(capabilities)
        .connect(&format!("http://127.0.0.1:{port}"))
        .await
        .expect("chromedriver opens a session")
}

/// Every resource the page loaded (itself included), as the browser saw it.
async fn loaded(browser: &fantoccini::Client) -> Vec<String> {
    let names = browser
        .execute(
            "return performance.getEntriesByType('navigation').concat(performance.getEntriesByType('resource')).map(e => e.name);",
            vec![],
        )
        .await
        .unwrap();
    names.as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_owned()).collect()
}

/// Waits until the browser shows `path` (and `query`): an element of the page being left may
/// still be found until the next one arrives.
async fn wait_for(browser: &fantoccini::Client, path: &str, query: Option<&str>) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let url = browser.current_url().await.unwrap();
        if url.path() == path && url.query() == query {
            let ready = browser.execute("return document.readyState;", vec![]).await.unwrap();
            if ready == "complete" {
                return;
            }
        }
        assert!(std::time::Instant::now() < deadline, "the browser did not reach {path}; it shows {url}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[test]
fn a_vendor_signs_in_revokes_a_license_and_signs_out_in_a_real_browser() {
    let Some((_driver, port)) = driver() else { return };
    let h = Harness::start_with(Db::Sqlite, |c| {
        c.public_insights = true;
        c.insights_min_installs = 2;
    })
    .unwrap();
    // A small fleet over a few days, rolled up, so the charts have something to draw.
    let keys: Vec<String> =
        (0..3).map(|i| h.license_with(Tier::Pro, 3, |r| r.licensee = format!("Customer {i}"))).collect();
    for day in 0..5 {
        for (i, key) in keys.iter().enumerate() {
            for n in 0..=i {
                let batch = common::batch(uuid::Uuid::new_v4(), 6, 3, 1).to_string();
                assert_eq!(h.check_in(key, &format!("inst-{i}-{n}"), Some(&batch))["status"], "valid");
            }
        }
        h.advance(Duration::days(1));
        let day = (common::t0() + Duration::days(day)).date_naive().to_string();
        let (status, _) =
            h.admin(reqwest::Method::POST, "/v1/admin/jobs/rollup/runs", Some(&json!({ "day": day })));
        assert_eq!(status, 200);
    }
    let target = license::verify(&keys[0], &h.ring, h.now()).unwrap().license_id.to_string();

    // Multi-threaded, so the test's own blocking HTTP calls can run in place (`block_in_place`).
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async {
        let browser = session(port).await;
        let origin = h.base.clone();
        let resources = || loaded(&browser);

        // Signing in.
        browser.goto(&format!("{origin}/admin/overview")).await.unwrap();
        assert_eq!(browser.current_url().await.unwrap().path(), "/admin/sign-in");
        browser.find(Locator::Id("token")).await.unwrap().send_keys(ADMIN_TOKEN).await.unwrap();
        browser.find(Locator::Css("form button[type=submit]")).await.unwrap().click().await.unwrap();
        browser.wait().for_element(Locator::Css("svg.chart")).await.unwrap();
        assert_eq!(browser.current_url().await.unwrap().path(), "/admin/overview");
        let charts = browser.find_all(Locator::Css("svg.chart")).await.unwrap();
        assert_eq!(charts.len(), 3, "active, versions, outcomes");
        let polylines = browser.find_all(Locator::Css("svg.chart polyline")).await.unwrap();
        assert!(!polylines.is_empty(), "the line chart draws lines");
        let on_overview = resources().await;
        assert!(on_overview.iter().any(|r| r.ends_with("/admin/assets/dashboard.css")), "{on_overview:?}");
        let png = browser.screenshot().await.unwrap();
        std::fs::write(screenshots().join("dashboard-overview.png"), &png).unwrap();
        if std::env::var("LICENSOR_UPDATE_SCREENSHOT").as_deref() == Ok("1") {
            std::fs::write(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/dashboard.png"), &png)
                .unwrap();
        }

        // Keyboard: the first Tab reaches the skip link.
        browser.find(Locator::Css("body")).await.unwrap().send_keys("\u{E004}").await.unwrap();
        let focused = browser.execute("return document.activeElement.className;", vec![]).await.unwrap();
        assert_eq!(focused, "skip");

        // A license, found through the list, revoked through its page.
        browser.find(Locator::LinkText("Licenses")).await.unwrap().click().await.unwrap();
        wait_for(&browser, "/admin/licenses", None).await;
        browser
            .find(Locator::Css(&format!("a[href=\"/admin/licenses/{target}\"]")))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        wait_for(&browser, &format!("/admin/licenses/{target}"), None).await;
        browser.find(Locator::Id("reason")).await.unwrap().send_keys("browser test").await.unwrap();
        browser.find(Locator::Css("button.danger")).await.unwrap().click().await.unwrap();
        // The old page's #status is there until the answer arrives: wait for the new address.
        wait_for(&browser, &format!("/admin/licenses/{target}"), Some("done=revoked")).await;
        let status = browser.wait().for_element(Locator::Id("status")).await.unwrap();
        assert_eq!(status.text().await.unwrap(), "revoked (browser test)");
        let answer = tokio::task::block_in_place(|| h.check_in(&keys[0], "inst-0-0", None));
        assert_eq!(answer["status"], "revoked", "{answer}");
        std::fs::write(screenshots().join("dashboard-license.png"), browser.screenshot().await.unwrap())
            .unwrap();

        // Nothing left the origin on any page.
        for page in
            ["/admin/usage", "/admin/performance", "/admin/errors", "/admin/environment", "/admin/instances"]
        {
            browser.goto(&format!("{origin}{page}")).await.unwrap();
            browser.wait().for_element(Locator::Css("main h1")).await.unwrap();
            for resource in resources().await {
                assert!(resource.starts_with(&origin), "{page} loaded {resource}");
            }
        }

        // A form posted without its token is refused, even with the browser's own cookie.
        let cookie = browser.get_named_cookie("licensor_session").await.unwrap();
        let url = h.url(&format!("/admin/licenses/{target}/reinstate"));
        let cookie_header = format!("licensor_session={}", cookie.value());
        let code = tokio::task::block_in_place(|| {
            let refused = reqwest::blocking::Client::new();
            refused
                .post(url)
                .header("cookie", cookie_header)
                .form(&[("x", "1")])
                .send()
                .unwrap()
                .status()
                .as_u16()
        });
        assert_eq!(code, 403);

        // A phone's width: nothing scrolls sideways but the tables' own boxes.
        browser.set_window_size(390, 844).await.unwrap();
        browser.goto(&format!("{origin}/admin/overview")).await.unwrap();
        browser.wait().for_element(Locator::Css("svg.chart")).await.unwrap();
        let fits = browser
            .execute("return document.documentElement.scrollWidth <= window.innerWidth;", vec![])
            .await
            .unwrap();
        assert_eq!(fits, true, "the overview overflows a phone's width");
        std::fs::write(screenshots().join("dashboard-phone.png"), browser.screenshot().await.unwrap())
            .unwrap();

        // Signing out.
        browser.find(Locator::Css("form.sign-out button")).await.unwrap().click().await.unwrap();
        browser.wait().for_element(Locator::Id("token")).await.unwrap();
        assert_eq!(browser.current_url().await.unwrap().path(), "/admin/sign-in");
        browser.goto(&format!("{origin}/admin/licenses")).await.unwrap();
        assert_eq!(browser.current_url().await.unwrap().path(), "/admin/sign-in");

        // The public page, signed out: charts and tables, nothing from elsewhere. It shows
        // the last whole month, so the clock moves into the next.
        h.advance(Duration::days(7));
        browser.goto(&format!("{origin}/insights")).await.unwrap();
        wait_for(&browser, "/insights", None).await;
        assert_eq!(browser.find(Locator::Css("h1")).await.unwrap().text().await.unwrap(), "Usage insights");
        assert_eq!(browser.find_all(Locator::Css("svg.chart")).await.unwrap().len(), 6);
        for resource in resources().await {
            assert!(resource.starts_with(&origin), "/insights loaded {resource}");
        }
        std::fs::write(screenshots().join("public-insights.png"), browser.screenshot().await.unwrap())
            .unwrap();
        browser.close().await.unwrap();
    });
}

/// A deployment's local dashboard (`licensor telemetry dashboard`, the same page as the
/// application's `/telemetry/dashboard`) in a real browser: its charts, the batch waiting to be
/// sent exactly as it will be sent, the sent batch's digest, and nothing from another origin.
#[test]
fn a_deployments_local_dashboard_in_a_real_browser() {
    use licensor::client::{store::LocalStore, Config, Licensing};
    let Some((_driver, port)) = driver() else { return };
    let h = Harness::start(Db::Sqlite).unwrap();
    // The dashboard command runs on the real clock: so do the server and the application here.
    *h.clock.lock().unwrap() = chrono::Utc::now();
    let key = h.license(Tier::Pro, 3);
    let data = h.dir.path().join("deployment");
    let mut config = Config::new(key.clone(), h.ring.clone(), "4.2.0");
    config.server_url = Some(h.base.clone());
    config.instance_url = Some("https://erp.example.org".into());
    config.data_dir = data.clone();
    config.first_check_in_after = std::time::Duration::from_secs(3600);
    let clock = h.clock.clone();
    config.clock = std::sync::Arc::new(move || *clock.lock().unwrap());
    let app = Licensing::start(config).unwrap();
    for i in 0..5 {
        app.track_feature("report.export");
        app.track_request(
            "GET",
            "/orders/{id}",
            if i == 4 { 500 } else { 200 },
            std::time::Duration::from_millis(10 + i),
        );
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let sent = runtime.block_on(app.check_in_now());
    assert!(
        matches!(sent, licensor::client::CheckInOutcome::Answered { batch_acknowledged: true, .. }),
        "{sent:?}"
    );
    app.track_feature("after the check-in");
    let pending = app.preview().unwrap().unwrap();
    app.shutdown();
    let digest = LocalStore::open(&data).unwrap().ledger().unwrap()[0].digest.clone();

    let web = free_port();
    let mut dashboard = Command::new(env!("CARGO_BIN_EXE_licensor"))
        .args(["telemetry", "dashboard", "--bind", &format!("127.0.0.1:{web}")])
        .env("LICENSOR_LICENSE_KEY", &key)
        .env("LICENSOR_KEYS_DIR", h.dir.path().join("keys"))
        .env("LICENSOR_DATA_DIR", &data)
        .env("LICENSOR_SERVER_URL", &h.base)
        .env("LICENSOR_INSTANCE_URL", "https://erp.example.org")
        .env_remove("TELEMETRY_DISABLED")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let origin = format!("http://127.0.0.1:{web}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", web)).is_err() {
        assert!(std::time::Instant::now() < deadline, "the dashboard did not listen within 20 s");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let html = reqwest::blocking::get(format!("{origin}/")).unwrap().text().unwrap();
    assert!(!html.contains("<script"), "the page works without JavaScript: it has none");
    // A page elsewhere whose name resolves to this machine (DNS rebinding) reads nothing.
    let rebound = reqwest::blocking::Client::new()
        .get(format!("{origin}/"))
        .header("host", "attacker.example")
        .send()
        .unwrap();
    assert_eq!(rebound.status().as_u16(), 421);
    assert!(!rebound.text().unwrap().contains("Telemetry on this deployment"));

    runtime.block_on(async {
        let browser = session(port).await;
        browser.goto(&format!("{origin}/")).await.unwrap();
        let title = browser.wait().for_element(Locator::Css("main h1")).await.unwrap();
        assert_eq!(title.text().await.unwrap(), "Telemetry on this deployment");
        assert_eq!(browser.find_all(Locator::Css("svg.chart")).await.unwrap().len(), 3);
        assert!(!browser.find_all(Locator::Css("svg.chart polyline")).await.unwrap().is_empty());
        let shown = browser.find(Locator::Css("#pending ~ pre")).await.unwrap().text().await.unwrap();
        assert_eq!(shown, pending.payload, "the next batch, exactly as it will be sent");
        let text = browser.find(Locator::Css("main")).await.unwrap().text().await.unwrap();
        assert!(text.contains(&digest), "the sent batch's digest: {text}");
        assert!(text.contains("report.export"), "{text}");
        for resource in loaded(&browser).await {
            assert!(resource.starts_with(&origin), "loaded {resource}");
        }
        std::fs::write(screenshots().join("local-dashboard.png"), browser.screenshot().await.unwrap())
            .unwrap();
        browser.close().await.unwrap();
    });
    let _ = dashboard.kill();
    let _ = dashboard.wait();
}
