//! The harness for black-box server tests: a real server on a real port, talking HTTP, over a
//! temporary SQLite file or a PostgreSQL schema of its own (dropped afterwards), with a clock
//! the test moves.
//!
//! PostgreSQL is found at `LICENSOR_TEST_DATABASE_URL` (default: the machines' local server).
//! Where it cannot be reached, its tests pass with a loud notice on stderr, unless
//! `LICENSOR_REQUIRE_POSTGRES=1` (as `.ci/run` sets), which makes them fail instead.

#![allow(dead_code)]

use chrono::{DateTime, Duration, TimeZone as _, Utc};
use diesel::connection::SimpleConnection as _;
use diesel::Connection as _;
use serde_json::{json, Value};
use std::io::Write as _;
use std::sync::{Arc, Mutex, Once};

use licensor::keys::{KeyRing, Role, Signer};
use licensor::license::{self, Expiry, LicenseRequest, Tier};
use licensor::server::{self, Running, ServerConfig};
use licensor::store::Store;

pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789abcdef";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Db {
    Sqlite,
    Postgres,
}

/// Declares each named case as a test on SQLite and one on PostgreSQL.
#[macro_export]
macro_rules! on_both_backends {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $( #[test] fn $case() { if let Some(h) = $crate::common::Harness::start($crate::common::Db::Sqlite) { super::$case(h) } } )*
        }
        mod postgres {
            $( #[test] fn $case() { if let Some(h) = $crate::common::Harness::start($crate::common::Db::Postgres) { super::$case(h) } } )*
        }
    };
}

pub fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 21, 10, 0, 0).unwrap()
}

/// The base URL of the test PostgreSQL server.
pub fn postgres_url() -> String {
    std::env::var("LICENSOR_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// A PostgreSQL schema of one test's own, dropped when the test ends.
pub struct PgSchema {
    pub name: String,
    pub url: String,
}

impl PgSchema {
    /// A fresh schema, or `None` (with a loud notice) when PostgreSQL is not reachable and not
    /// required.
    pub fn create() -> Option<PgSchema> {
        let base = postgres_url();
        let mut conn = match diesel::PgConnection::establish(&base) {
            Ok(conn) => conn,
            Err(e) => {
                if std::env::var("LICENSOR_REQUIRE_POSTGRES").as_deref() == Ok("1") {
                    panic!("PostgreSQL is required (LICENSOR_REQUIRE_POSTGRES=1) but {base} is not reachable: {e}");
                }
                static NOTICE: Once = Once::new();
                NOTICE.call_once(|| {
                    // Written straight to stderr so the test harness does not capture it.
                    let _ = writeln!(
                        std::io::stderr(),
                        "\n!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n\
                         !!! SKIPPED: every PostgreSQL test (the `postgres::` half of the server\n\
                         !!! tests). {base} is not reachable: {e}\n\
                         !!! Set LICENSOR_TEST_DATABASE_URL, or LICENSOR_REQUIRE_POSTGRES=1 to fail.\n\
                         !!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n"
                    );
                });
                return None;
            }
        };
        let name = format!("t_{}", uuid::Uuid::new_v4().simple());
        conn.batch_execute(&format!("CREATE SCHEMA {name}")).expect("create a test schema");
        let sep = if base.contains('?') { '&' } else { '?' };
        let url = format!("{base}{sep}options=-csearch_path%3D{name}");
        Some(PgSchema { name, url })
    }
}

impl Drop for PgSchema {
    fn drop(&mut self) {
        if let Ok(mut conn) = diesel::PgConnection::establish(&postgres_url()) {
            let _ = conn.batch_execute(&format!("DROP SCHEMA IF EXISTS {} CASCADE", self.name));
        }
    }
}

/// A running server with its keys, clock and database.
pub struct Harness {
    pub db: Db,
    pub dir: tempfile::TempDir,
    pub vendor: Signer,
    pub ring: KeyRing,
    pub clock: Arc<Mutex<DateTime<Utc>>>,
    pub server: Option<Running>,
    pub base: String,
    pub database_url: String,
    pub http: reqwest::blocking::Client,
    /// A second handle on the server's database, for assertions.
    pub store: Store,
    pub pg: Option<PgSchema>,
}

impl Harness {
    /// Starts a server with the default test settings.
    pub fn start(db: Db) -> Option<Harness> {
        Harness::start_with(db, |_| {})
    }

    /// Starts a server, letting the test adjust its configuration first.
    pub fn start_with(db: Db, adjust: impl FnOnce(&mut ServerConfig)) -> Option<Harness> {
        let dir = tempfile::TempDir::new().unwrap();
        let keys_dir = dir.path().join("keys");
        let vendor = Signer::generate("vendor-test", Role::License).unwrap();
        vendor.write_pair(&keys_dir).unwrap();
        let lease = Signer::generate("lease-test", Role::Lease).unwrap();
        lease.write_pair(&keys_dir).unwrap();
        let ring = KeyRing::load_dir(&keys_dir).unwrap();

        let pg = match db {
            Db::Sqlite => None,
            Db::Postgres => Some(PgSchema::create()?),
        };
        let database_url = match &pg {
            Some(pg) => pg.url.clone(),
            None => format!("sqlite://{}", dir.path().join("licensor.db").display()),
        };
        let mut config = ServerConfig {
            bind: "127.0.0.1:0".parse().unwrap(),
            database_url: database_url.clone(),
            data_dir: dir.path().to_owned(),
            keys_dir: keys_dir.clone(),
            signing_key: keys_dir.join("lease-test.lease.private.pem"),
            issuing_key: Some(keys_dir.join("vendor-test.license.private.pem")),
            admin_token: Some(ADMIN_TOKEN.into()),
            workers: 2,
            db_pool_size: 8,
            max_body_bytes: 256 * 1024,
            body_timeout: std::time::Duration::from_secs(10),
            retention_days: 90,
            jobs: false,
            retention_schedule: "0 15 3 * * *".into(),
            rollup_schedule: "0 5 0 * * *".into(),
            rate_limit_per_minute: 10_000,
            rate_limit_per_address: 1_000_000,
            rate_limit_ipv6_prefix: 64,
            trusted_proxies: vec![],
            limits: Default::default(),
            // Strict seats, as most tests assert them; the soft overage has tests of its own.
            seats: licensor::checkin::SeatRules { overage_days: 0, ..Default::default() },
            public_insights: false,
            insights_min_installs: 10,
            public_names: Default::default(),
            tls: None,
            metrics_bind: None,
            admin_tokens: vec![],
            development: vec![],
            admin_token_generated: false,
            created: vec![],
            key_setting_names: Default::default(),
        };
        adjust(&mut config);
        let clock = Arc::new(Mutex::new(t0()));
        let read = clock.clone();
        let server =
            server::start(config, Arc::new(move || *read.lock().unwrap())).expect("the server starts");
        let base = format!("http://{}", server.addr);
        let store = Store::open(&database_url, 2).unwrap();
        Some(Harness {
            db,
            dir,
            vendor,
            ring,
            clock,
            server: Some(server),
            base,
            database_url,
            http: reqwest::blocking::Client::builder()
                .timeout(std::time::Duration::from_secs(30))
                .build()
                .unwrap(),
            store,
            pg,
        })
    }

    pub fn now(&self) -> DateTime<Utc> {
        *self.clock.lock().unwrap()
    }

    pub fn advance(&self, by: Duration) {
        *self.clock.lock().unwrap() += by;
    }

    /// A license signed by the vendor key the server trusts.
    pub fn license(&self, tier: Tier, seats: u32) -> String {
        self.license_with(tier, seats, |_| {})
    }

    pub fn license_with(&self, tier: Tier, seats: u32, adjust: impl FnOnce(&mut LicenseRequest)) -> String {
        let mut request = LicenseRequest {
            licensee: "Acme Test Corp".into(),
            tier,
            expiry: Expiry::At(t0() + Duration::days(365)),
            not_before: None,
            seats,
            features: vec!["reports".into()],
            check_in_interval: None,
        };
        adjust(&mut request);
        // Issued a day before the test's start, so `now` is inside its window by default.
        license::issue(&self.vendor, request, t0() - Duration::days(1)).unwrap().key
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// POSTs raw bytes with a content type; returns status and parsed JSON body.
    pub fn post_raw(&self, path: &str, content_type: &str, body: Vec<u8>) -> (u16, Value) {
        let response =
            self.http.post(self.url(path)).header("content-type", content_type).body(body).send().unwrap();
        let status = response.status().as_u16();
        let text = response.text().unwrap();
        (status, serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON ({status}): {text}")))
    }

    pub fn post_json(&self, path: &str, body: &Value) -> (u16, Value) {
        self.post_raw(path, "application/json", serde_json::to_vec(body).unwrap())
    }

    /// A check-in request as the client would send it.
    pub fn check_in_body(&self, key: &str, instance: &str, nonce: &str, telemetry: Option<&str>) -> Vec<u8> {
        let head = json!({ "license_key": key, "instance_id": instance, "nonce": nonce, "software_version": "1.4.2" });
        let mut text = serde_json::to_string(&head).unwrap();
        text.pop();
        match telemetry {
            Some(raw) => text.push_str(&format!(",\"telemetry\":{raw}}}")),
            None => text.push_str(",\"telemetry_disabled\":true}"),
        }
        text.into_bytes()
    }

    /// A license's processes as the admin API lists them, by instance id.
    pub fn instances_of(&self, key: &str) -> std::collections::BTreeMap<String, Value> {
        let license_id = licensor::token::decode::<license::LicensePayload>(key).unwrap().claims.license_id;
        let (status, body) =
            self.admin(reqwest::Method::GET, &format!("/v1/admin/instances?license_id={license_id}"), None);
        assert_eq!(status, 200, "{body}");
        body["instances"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| (i["instance_id"].as_str().unwrap().to_owned(), i.clone()))
            .collect()
    }

    /// Checks in and expects a 200; returns the response body.
    pub fn check_in(&self, key: &str, instance: &str, telemetry: Option<&str>) -> Value {
        let body = self.check_in_body(key, instance, &nonce(), telemetry);
        let (status, value) = self.post_raw("/v1/check-ins", "application/json", body);
        assert_eq!(status, 200, "{value}");
        value
    }

    pub fn admin(&self, method: reqwest::Method, path: &str, body: Option<&Value>) -> (u16, Value) {
        let mut request = self.http.request(method, self.url(path)).bearer_auth(ADMIN_TOKEN);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().unwrap();
        let status = response.status().as_u16();
        let text = response.text().unwrap();
        (status, serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON ({status}): {text}")))
    }

    /// A counter or gauge of the server's `/metrics`, by its full name (labels included).
    pub fn metric(&self, name: &str) -> u64 {
        let text =
            self.http.get(self.url("/metrics")).bearer_auth(ADMIN_TOKEN).send().unwrap().text().unwrap();
        let prefix = format!("{name} ");
        text.lines()
            .find_map(|l| l.strip_prefix(prefix.as_str()))
            .unwrap_or_else(|| panic!("no metric {name}"))
            .parse()
            .unwrap()
    }

    /// Stops the server, as a crash or a deploy would.
    pub fn stop_server(&mut self) {
        if let Some(server) = self.server.take() {
            server.stop();
        }
    }
}

/// A fresh random nonce of 24 bytes, base64url.
pub fn nonce() -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&uuid::Uuid::new_v4().as_bytes().repeat(2)[..24])
}

/// A realistic batch: `usage` counters, `routes` routes, `errors` error groups.
pub fn batch(batch_id: uuid::Uuid, usage: usize, routes: usize, errors: usize) -> Value {
    let t = t0();
    json!({
        "schema": 1,
        "batch_id": batch_id,
        "period_start": licensor::time::format(&(t - Duration::hours(24))),
        "period_end": licensor::time::format(&t),
        "environment": {
            "app_version": "1.4.2", "os": "linux", "arch": "x86_64", "user_count_range": "11-50",
            "modules_enabled": ["signatures", "org-chart"], "uptime_hours": 71.5,
            "last_sync_status": "success", "health": { "database": "healthy", "mail": "degraded" }
        },
        "usage": (0..usage).map(|i| {
            let kind = ["feature", "api", "command", "ui_action"][i % 4];
            json!({ "kind": kind, "name": format!("feature_{i}"), "count": 10 + i })
        }).collect::<Vec<_>>(),
        "performance": (0..routes).map(|i| json!({
            "method": "GET", "route": format!("/api/items/{i}/{{id}}"), "count": 50, "errors": 1,
            "p50_ms": 12.0, "p95_ms": 40.5, "p99_ms": 88.0, "max_ms": 120.0, "sketch": ""
        })).collect::<Vec<_>>(),
        "errors": (0..errors).map(|i| json!({
            "fingerprint": format!("{:016x}", i + 1), "type": "database", "message": format!("query {i} timed out"),
            "stack": ["at db::query", "at handler"], "count": 2,
            "first_seen": licensor::time::format(&(t - Duration::hours(3))), "last_seen": licensor::time::format(&t)
        })).collect::<Vec<_>>(),
        "sessions": { "count": 14, "total_duration_s": 9120, "hourly": (0..24).map(|h| h % 3).collect::<Vec<_>>() },
        "dropped": { "sampled": 0, "throttled": 0, "overflow": 0 },
        "redactions": { "email": 3 }
    })
}

/// `licensor serve --bind 127.0.0.1:PORT` as a process, with none of the settings this
/// machine's environment may hold (each test sets what it configures), its output to stderr.
pub fn serve_process(port: u16) -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_licensor"));
    command.args(["serve", "--bind", &format!("127.0.0.1:{port}")]);
    for setting in [
        "DATABASE_URL",
        "LICENSOR_ADMIN_TOKEN",
        "LICENSOR_KEYS_DIR",
        "LICENSOR_SIGNING_KEY",
        "LICENSOR_ISSUING_KEY",
        "LICENSOR_CONFIG",
        "LICENSOR_TLS_CERT",
        "LICENSOR_TLS_KEY",
        "LICENSOR_LOG_FORMAT",
    ] {
        command.env_remove(setting);
    }
    command.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::piped());
    command
}

/// A deployment's configuration against this harness's server, on its clock: a public instance
/// that checks in when the test chooses (the first check-in is an hour away).
pub fn client_config(h: &Harness, key: &str, data: &std::path::Path) -> licensor::client::Config {
    let mut c = licensor::client::Config::new(key, h.ring.clone(), "3.1.0");
    c.server_url = Some(h.base.clone());
    c.instance_url = Some("https://app.example.com".into());
    c.data_dir = data.into();
    c.first_check_in_after = std::time::Duration::from_secs(3600);
    let clock = h.clock.clone();
    c.clock = Arc::new(move || *clock.lock().unwrap());
    c
}

/// Runs a future to completion on a runtime of its own.
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
}

/// The shared PII corpus (`tests/fixtures/pii-corpus.json`): its secrets, and the fragments of
/// them that must never be found anywhere once they went through the product.
pub fn pii_corpus() -> (Vec<String>, Vec<String>) {
    let corpus: Value = serde_json::from_str(include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/pii-corpus.json"
    )))
    .unwrap();
    let strings = |list: &Value, field: Option<&str>| -> Vec<String> {
        list.as_array()
            .unwrap()
            .iter()
            .map(|s| field.map_or(s, |f| &s[f]).as_str().unwrap().to_owned())
            .collect()
    };
    (strings(&corpus["secrets"], Some("value")), strings(&corpus["sensitive_fragments"], None))
}

/// `text` with the product's own random identifiers masked (UUIDs, and hex runs of exactly 32,
/// 40 or 64 characters: digests, fingerprints, salts), for searching it for the corpus's
/// fragments: a short fragment such as `abc123` turns up by chance inside a random digest now
/// and then (one run in hundreds), which is no leak. Card numbers and other secrets of other
/// lengths stay searchable.
pub fn ids_masked(text: &str) -> String {
    let uuid =
        regex::Regex::new(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
            .unwrap();
    let text = uuid.replace_all(text, "#");
    let hex = regex::Regex::new(r"[0-9a-f]+").unwrap();
    hex.replace_all(&text, |run: &regex::Captures| match run[0].len() {
        32 | 40 | 64 => "#".to_owned(),
        _ => run[0].to_owned(),
    })
    .into_owned()
}

/// Polls `f` every 20 ms until it holds, for at most `limit`; whether it came to hold.
pub fn eventually(limit: std::time::Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + limit;
    while !f() {
        if std::time::Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    true
}
