//! End to end: a real `licensor serve` process, a deployment embedding the library, and the
//! `licensor check-in` / `licensor telemetry` commands on the deployment's data directory.
//! Failures are made real: the server is killed (SIGKILL) in the middle of a check-in and
//! restarted; the client process is killed between receiving the acknowledgement and
//! recording it. Telemetry must reach the server exactly once either way.

#![cfg(unix)]

mod common;

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use licensor::client::store::LocalStore;
use licensor::client::{Config, Licensing, Status};
use licensor::store::Store;
use serde_json::{json, Value};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn http() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder().timeout(Duration::from_secs(30)).build().unwrap()
}

/// A `licensor serve` process in its own directory (zero configuration: SQLite, development
/// keys and admin token in ./data).
struct Server {
    dir: PathBuf,
    port: u16,
    child: Option<Child>,
}

impl Server {
    fn start(dir: &Path, port: u16) -> Server {
        let mut s = Server { dir: dir.into(), port, child: None };
        s.restart();
        s
    }

    fn restart(&mut self) {
        let child = Command::new(env!("CARGO_BIN_EXE_licensor"))
            .args(["serve", "--bind", &format!("127.0.0.1:{}", self.port)])
            .current_dir(&self.dir)
            .env("RUST_LOG", "warn")
            .env_remove("DATABASE_URL")
            .env_remove("LICENSOR_ADMIN_TOKEN")
            .env_remove("LICENSOR_KEYS_DIR")
            .env_remove("LICENSOR_SIGNING_KEY")
            .env_remove("LICENSOR_ISSUING_KEY")
            .env_remove("LICENSOR_CONFIG")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while !http().get(format!("{}/readyz", self.base())).send().is_ok_and(|r| r.status().is_success()) {
            assert!(Instant::now() < deadline, "the server did not come up");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn token(&self) -> String {
        std::fs::read_to_string(self.dir.join("data/admin-token")).unwrap().trim().to_string()
    }

    fn keys(&self) -> PathBuf {
        self.dir.join("data/keys")
    }

    fn issue(&self, tier: &str) -> String {
        let issued: Value = http()
            .post(format!("{}/v1/admin/licenses", self.base()))
            .bearer_auth(self.token())
            .json(&json!({ "tier": tier, "licensee": "E2E Corp", "perpetual": true, "seats": 5 }))
            .send()
            .unwrap()
            .json()
            .unwrap();
        issued["license_key"].as_str().unwrap_or_else(|| panic!("{issued}")).to_owned()
    }

    fn summary(&self, instance: &str) -> Value {
        http()
            .get(format!("{}/v1/admin/telemetry/summary?instance_id={instance}&hours=24", self.base()))
            .bearer_auth(self.token())
            .send()
            .unwrap()
            .json()
            .unwrap()
    }

    /// `GET /v1/admin/instances`.
    fn instances(&self) -> Value {
        http()
            .get(format!("{}/v1/admin/instances", self.base()))
            .bearer_auth(self.token())
            .send()
            .unwrap()
            .json()
            .unwrap()
    }

    /// The server's own database, read directly (the process may be running: SQLite in WAL).
    fn store(&self) -> Store {
        Store::open(&format!("sqlite://{}", self.dir.join("data/licensor.db").display()), 1).unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The environment a deployment runs with.
fn deployment_env(server_url: &str, key: &str, keys: &Path, data: &Path) -> Vec<(&'static str, String)> {
    vec![
        ("LICENSOR_LICENSE_KEY", key.into()),
        ("LICENSOR_SERVER_URL", server_url.into()),
        ("LICENSOR_KEYS_DIR", keys.display().to_string()),
        ("LICENSOR_DATA_DIR", data.display().to_string()),
        ("LICENSOR_INSTANCE_URL", "https://erp.example.org".into()),
        ("LICENSOR_SOFTWARE_VERSION", "5.0.1".into()),
    ]
}

fn library(env: &[(&'static str, String)]) -> Licensing {
    let mut config =
        Config::from_vars(|k| env.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone()), "5.0.1").unwrap();
    config.first_check_in_after = Duration::from_secs(3600);
    Licensing::start(config).unwrap()
}

fn cli(env: &[(&'static str, String)], args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_licensor"));
    command.args(args).env_remove("TELEMETRY_DISABLED").env_remove("DO_NOT_TRACK");
    command.env_remove("LICENSOR_TELEMETRY_DEBUG").env_remove("LICENSOR_LICENSE_FILE");
    for (k, v) in env {
        command.env(k, v);
    }
    command.output().unwrap()
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// A TCP proxy in front of the server that reads each whole request and, from the upstream,
/// each whole response, and lets a test decide what happens in between.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Fault {
    /// Forward both ways.
    None,
    /// Kill the server once the request is read, before it reaches it.
    KillServerBeforeForwarding,
    /// Forward the request, wait for the server's answer (it has committed), then kill the
    /// server and drop the client's connection unanswered.
    KillServerAfterItAnswers,
    /// Forward both ways, but first kill the client process (by pid) once the answer is in.
    KillClientBeforeAnswering,
}

struct Proxy {
    url: String,
    fault: Arc<Mutex<Fault>>,
    kill_server: Arc<Mutex<Option<u32>>>,
    kill_client: Arc<Mutex<Option<u32>>>,
}

fn read_http_message(stream: &mut TcpStream) -> Option<Vec<u8>> {
    let mut data = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        if let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&data[..end]).to_ascii_lowercase();
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:").map(|v| v.trim().parse::<usize>().unwrap()))
                .unwrap_or(0);
            while data.len() < end + 4 + length {
                let n = stream.read(&mut buf).ok()?;
                if n == 0 {
                    return None;
                }
                data.extend_from_slice(&buf[..n]);
            }
            return Some(data);
        }
        let n = stream.read(&mut buf).ok()?;
        if n == 0 {
            return None;
        }
        data.extend_from_slice(&buf[..n]);
    }
}

fn kill9(pid: u32) {
    Command::new("kill").args(["-KILL", &pid.to_string()]).status().unwrap();
}

fn proxy(upstream_port: u16) -> Proxy {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let fault = Arc::new(Mutex::new(Fault::None));
    let kill_server = Arc::new(Mutex::new(None::<u32>));
    let kill_client = Arc::new(Mutex::new(None::<u32>));
    let (f, ks, kc) = (fault.clone(), kill_server.clone(), kill_client.clone());
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let (f, ks, kc) = (f.clone(), ks.clone(), kc.clone());
            std::thread::spawn(move || {
                let mut client = client;
                while let Some(request) = read_http_message(&mut client) {
                    let fault = *f.lock().unwrap();
                    if fault == Fault::KillServerBeforeForwarding {
                        kill9(ks.lock().unwrap().unwrap());
                        return;
                    }
                    let Ok(mut upstream) = TcpStream::connect(("127.0.0.1", upstream_port)) else { return };
                    upstream.write_all(&request).unwrap();
                    let Some(response) = read_http_message(&mut upstream) else { return };
                    match fault {
                        Fault::KillServerAfterItAnswers => {
                            kill9(ks.lock().unwrap().unwrap());
                            return;
                        }
                        Fault::KillClientBeforeAnswering => {
                            kill9(kc.lock().unwrap().unwrap());
                            std::thread::sleep(Duration::from_millis(200));
                            let _ = client.write_all(&response);
                            return;
                        }
                        _ => {
                            if client.write_all(&response).is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    Proxy { url, fault, kill_server, kill_client }
}

fn usage_count(summary: &Value, name: &str) -> u64 {
    summary["usage"]
        .as_array()
        .unwrap_or_else(|| panic!("{summary}"))
        .iter()
        .filter(|u| u["name"] == name)
        .map(|u| u["count"].as_u64().unwrap())
        .sum()
}

#[test]
fn telemetry_reaches_the_server_exactly_once_through_kills_and_restarts() {
    let dir = tempfile::TempDir::new().unwrap();
    let mut server = Server::start(dir.path(), free_port());
    let key = server.issue("community");
    let proxy = proxy(server.port);
    let data = dir.path().join("deployment");
    let env = deployment_env(&proxy.url, &key, &server.keys(), &data);

    // The application runs, tracks, and stops (its figures flushed to its store).
    let app = library(&env);
    let instance = app.instance_id().unwrap();
    for _ in 0..5 {
        app.track_feature("invoice.create");
    }
    app.shutdown();

    // 1. The check-in succeeds: exit 0, figures on the server once.
    let out = cli(&env, &["check-in"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("answered: valid; telemetry acknowledged"), "{}", text(&out));
    assert_eq!(usage_count(&server.summary(&instance), "invoice.create"), 5);

    // 2. The server dies after storing the batch but before answering. No answer: exit 2;
    //    the batch waits in the outbox; after the restart the same batch id is sent again
    //    and counted once.
    let app = library(&env);
    for _ in 0..7 {
        app.track_feature("invoice.create");
    }
    app.shutdown();
    *proxy.kill_server.lock().unwrap() = Some(server.child.as_ref().unwrap().id());
    *proxy.fault.lock().unwrap() = Fault::KillServerAfterItAnswers;
    let out = cli(&env, &["check-in"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    server.child.take().unwrap().wait().unwrap();
    let waiting = LocalStore::open(&data).unwrap().outbox().unwrap().expect("the batch waits in the outbox");
    *proxy.fault.lock().unwrap() = Fault::None;
    server.restart();
    let out = cli(&env, &["check-in"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(usage_count(&server.summary(&instance), "invoice.create"), 12, "stored once, not twice");
    let ledger = LocalStore::open(&data).unwrap().ledger().unwrap();
    assert_eq!(ledger[0].batch_id, waiting.batch_id, "the retry sent the same batch");
    assert_eq!(ledger[0].payload, waiting.payload, "byte for byte");

    // 3. The server dies before the request reaches it: nothing stored, sent again later.
    let app = library(&env);
    app.track_feature("invoice.create");
    app.shutdown();
    *proxy.kill_server.lock().unwrap() = Some(server.child.as_ref().unwrap().id());
    *proxy.fault.lock().unwrap() = Fault::KillServerBeforeForwarding;
    assert_eq!(cli(&env, &["check-in"]).status.code(), Some(2));
    server.child.take().unwrap().wait().unwrap();
    *proxy.fault.lock().unwrap() = Fault::None;
    server.restart();
    assert_eq!(cli(&env, &["check-in"]).status.code(), Some(0));
    assert_eq!(usage_count(&server.summary(&instance), "invoice.create"), 13);

    // 4. The client dies between the server's acknowledgement and recording it.
    let app = library(&env);
    for _ in 0..4 {
        app.track_feature("invoice.create");
    }
    app.shutdown();
    *proxy.fault.lock().unwrap() = Fault::KillClientBeforeAnswering;
    let mut command = Command::new(env!("CARGO_BIN_EXE_licensor"));
    command.arg("check-in").stdout(Stdio::null()).stderr(Stdio::null());
    for (k, v) in &env {
        command.env(k, v);
    }
    let child = command.spawn().unwrap();
    *proxy.kill_client.lock().unwrap() = Some(child.id());
    let status = child.wait_with_output().unwrap().status;
    assert_eq!(status.code(), None, "the client was killed");
    assert!(LocalStore::open(&data).unwrap().outbox().unwrap().is_some(), "no acknowledgement was recorded");
    let summary = server.summary(&instance);
    assert_eq!(usage_count(&summary, "invoice.create"), 17, "the server stored it: {summary}");
    *proxy.fault.lock().unwrap() = Fault::None;
    let out = cli(&env, &["check-in"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(usage_count(&server.summary(&instance), "invoice.create"), 17, "and only once");
    assert!(LocalStore::open(&data).unwrap().outbox().unwrap().is_none());
    // Four batches in all: each retry sent its batch again under the same id.
    assert_eq!(server.store().telemetry_counts(&instance).unwrap()["telemetry_batches"], 4);

    // 5. The deployment is decommissioned: it releases its seat, with a signed receipt.
    assert_eq!(server.store().licenses_of_instance(&instance).unwrap().len(), 1);
    let out = cli(&env, &["deactivate"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        text(&out).contains("released its seat") && text(&out).contains("receipt: RECEIPT1."),
        "{}",
        text(&out)
    );
    assert!(
        server.store().licenses_of_instance(&instance).unwrap().is_empty(),
        "the server forgot the instance"
    );
    // Nothing is left to release.
    let out = cli(&env, &["deactivate"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("never checked in"), "{}", text(&out));
}

#[test]
fn user_controls_show_what_is_sent_and_a_restart_runs_offline() {
    let dir = tempfile::TempDir::new().unwrap();
    let mut server = Server::start(dir.path(), free_port());
    let key = server.issue("pro");
    let data = dir.path().join("deployment");
    let env = deployment_env(&server.base(), &key, &server.keys(), &data);

    let out = cli(&env, &["telemetry", "status"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let status = text(&out);
    assert!(status.contains("telemetry: on (pro tier: required by the license)"), "{status}");
    assert!(status.contains("status: grace until"), "{status}");
    assert!(status.contains("last check-in: never"), "{status}");

    let app = library(&env);
    app.track_command("report.export");
    app.shutdown();
    let preview = cli(&env, &["telemetry", "preview"]);
    assert_eq!(preview.status.code(), Some(0));
    let previewed: Value = serde_json::from_slice(&preview.stdout).unwrap();
    assert_eq!(previewed["usage"], json!([{"kind": "command", "name": "report.export", "count": 1}]));

    let checked_in = cli(&env, &["check-in"]);
    assert_eq!(checked_in.status.code(), Some(0), "{}", text(&checked_in));
    let sent = cli(&env, &["telemetry", "sent", "--full"]);
    let sent: Value = serde_json::from_slice(&sent.stdout).unwrap();
    assert_eq!(sent[0]["batch"]["usage"], previewed["usage"]);
    let ledger = LocalStore::open(&data).unwrap().ledger().unwrap();
    assert_eq!(sent[0]["digest"], ledger[0].digest);
    assert_eq!(
        ledger[0].digest,
        licensor::protocol::digest(ledger[0].payload.as_bytes()),
        "the digest the server acknowledged is that of the bytes kept"
    );
    let status = text(&cli(&env, &["telemetry", "status"]));
    assert!(
        status.contains("(valid)") && status.contains("outbox: empty") && status.contains("sent: 1 batches"),
        "{status}"
    );

    let csv = cli(&env, &["telemetry", "export", "--format", "csv"]);
    let csv = String::from_utf8(csv.stdout).unwrap();
    assert!(
        csv.starts_with(
            "\"table\",\"period_start\",\"kind\",\"name\",\"batch_id\",\"count\",\"errors\",\"max_ms\",\"detail\"\n"
        ),
        "{csv}"
    );
    assert!(csv.contains("\"usage_counts\",") && csv.contains(",\"command\",\"report.export\","), "{csv}");
    let json_export: Value = serde_json::from_slice(&cli(&env, &["telemetry", "export"]).stdout).unwrap();
    assert_eq!(json_export["ledger"].as_array().unwrap().len(), 1);

    assert_eq!(cli(&env, &["telemetry", "clear", "--ledger"]).status.code(), Some(0));
    let cleared: Value = serde_json::from_slice(&cli(&env, &["telemetry", "export"]).stdout).unwrap();
    assert!(
        cleared["events"].as_array().unwrap().is_empty() && cleared["ledger"].as_array().unwrap().is_empty()
    );

    // The server goes away: a restart of the application is valid on its cached lease, and
    // `check-in` says no answer came (exit 2).
    server.kill();
    let app = library(&env);
    assert_eq!(app.status(), Status::Valid);
    app.shutdown();
    let out = cli(&env, &["check-in"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with("no answer: ") && err.matches("no answer").count() == 1, "{err}");

    // Another answer than valid is exit 1: the license revoked (server back up).
    server.restart();
    let license_id = licensor::token::decode_json(&key, licensor::token::kind_of(&key).unwrap()).unwrap()
        ["license_id"]
        .as_str()
        .unwrap()
        .to_string();
    let revoked = http()
        .post(format!("{}/v1/admin/licenses/{license_id}/revoke", server.base()))
        .bearer_auth(server.token())
        .json(&json!({"reason": "test"}))
        .send()
        .unwrap();
    assert_eq!(revoked.status(), 200);
    let out = cli(&env, &["check-in"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("answered: revoked"), "{}", text(&out));
}

#[test]
fn the_pii_corpus_never_reaches_the_local_tables_the_payload_or_the_server() {
    let (secrets, fragments) = common::pii_corpus();

    let dir = tempfile::TempDir::new().unwrap();
    let server = Server::start(dir.path(), free_port());
    let key = server.issue("community");
    let data = dir.path().join("deployment");
    let env = deployment_env(&server.base(), &key, &server.keys(), &data);
    let app = library(&env);
    // Every entry point, every secret.
    for (i, secret) in secrets.iter().enumerate() {
        let inline = secret.replace('\n', " ");
        app.track_feature(&format!("export for {inline}"));
        app.track_api_call(&format!("GET /users/{inline}"));
        app.track_command(&format!("send {inline}"));
        app.track_ui_action(&format!("clicked {inline}"));
        app.track_request("POST", &format!("/orders/{inline}"), 500, Duration::from_millis(5));
        #[derive(Debug)]
        struct Leak(String, Option<Box<Leak>>);
        impl std::fmt::Display for Leak {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl std::error::Error for Leak {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                self.1.as_deref().map(|e| e as _)
            }
        }
        let error = Leak(
            format!("case {i}: failed for {secret}"),
            Some(Box::new(Leak(format!("at {secret}"), None))),
        );
        app.track_error(&error, &format!("context {inline}"));
        app.register_health_check(&format!("check {inline}"), || licensor::protocol::Health::Healthy);
        app.start_session(Some(secret)).end(chrono::Utc::now());
    }
    app.telemetry().track_error_parts("stack", "boom", &secrets, chrono::Utc::now());
    app.shutdown();
    assert_eq!(cli(&env, &["check-in"]).status.code(), Some(0));

    let local = String::from_utf8(cli(&env, &["telemetry", "export"]).stdout).unwrap();
    let db = std::fs::read(data.join(licensor::client::store::FILE_NAME)).unwrap();
    let db = String::from_utf8_lossy(&db);
    let server_text = server.store().telemetry_text().unwrap().join("\n");
    assert!(
        local.contains("[EMAIL]") && server_text.contains("[EMAIL]"),
        "redactions are visible, values are not"
    );
    for (place, text) in
        [("local tables (export)", &*local), ("local database file", &*db), ("server tables", &*server_text)]
    {
        let text = common::ids_masked(text);
        for secret in secrets.iter().chain(&fragments) {
            assert!(!text.contains(secret.as_str()), "{place} holds {secret:?}");
        }
    }
    let batch: Value =
        serde_json::from_str(&LocalStore::open(&data).unwrap().ledger().unwrap()[0].payload).unwrap();
    assert!(batch["redactions"]["email"].as_u64().unwrap() > 0, "{}", batch["redactions"]);
    assert!(batch["errors"].as_array().unwrap().len() > secrets.len() / 2);
}

/// `licensor telemetry disable|enable`, as a user of each tier meets them: refused on Community
/// (exit 1, nothing saved; and `check-in` says why `TELEMETRY_DISABLED=true` is not honoured),
/// honoured on Enterprise by the library and every command alike: disabled means air-gapped
/// with no connection at all, basic means check-ins carry the environment and no usage.
#[test]
fn telemetry_enable_and_disable_are_saved_and_honoured_like_the_environment() {
    let dir = tempfile::TempDir::new().unwrap();
    let server = Server::start(dir.path(), free_port());

    // Community: refused, nothing saved, and the environment's opt-out is explained.
    let data = dir.path().join("community");
    let env = deployment_env(&server.base(), &server.issue("community"), &server.keys(), &data);
    for args in [&["telemetry", "disable"][..], &["telemetry", "enable", "--level", "basic"]] {
        let out = cli(&env, args);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", text(&out));
        assert!(text(&out).contains("refused: telemetry cannot be") && text(&out).contains("community tier"));
    }
    assert!(!data.join("telemetry.json").exists());
    let mut opted_out = env.clone();
    opted_out.push(("TELEMETRY_DISABLED", "true".into()));
    let out = cli(&opted_out, &["check-in"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("note: TELEMETRY_DISABLED=true is not honoured on the community tier"), "{said}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("answered: valid; telemetry acknowledged"));

    // Enterprise, pointed at a listener that counts connections: disabled makes none.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let counting = format!("http://{}", listener.local_addr().unwrap());
    listener.set_nonblocking(true).unwrap();
    let key = server.issue("enterprise");
    let data = dir.path().join("enterprise");
    let env = deployment_env(&counting, &key, &server.keys(), &data);
    let out = cli(&env, &["telemetry", "disable"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("telemetry: disabled: air-gapped mode"), "{}", text(&out));
    let saved: Value = serde_json::from_slice(&std::fs::read(data.join("telemetry.json")).unwrap()).unwrap();
    assert_eq!(saved["telemetry"], "disabled");
    let status = text(&cli(&env, &["telemetry", "status"]));
    assert!(status.contains("telemetry: off (air-gapped"), "{status}");
    assert!(
        status.contains("`licensor telemetry disable` (saved in the data directory): air-gapped mode"),
        "{status}"
    );
    let app = library(&env);
    assert_eq!(app.mode(), &licensor::client::Mode::AirGapped { level: licensor::client::Level::Full });
    app.track_feature("export");
    assert!(matches!(
        tokio::runtime::Runtime::new().unwrap().block_on(app.check_in_now()),
        licensor::client::CheckInOutcome::NotApplicable(_)
    ));
    app.shutdown();
    let out = cli(&env, &["check-in"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("no check-in: air-gapped"), "{}", text(&out));
    assert!(listener.accept().is_err(), "an air-gapped deployment connected to the server");

    // Basic health: the real server receives the environment and no usage; what was collected
    // before the switch is not sent.
    let env = deployment_env(&server.base(), &key, &server.keys(), &data);
    assert_eq!(cli(&env, &["telemetry", "enable"]).status.code(), Some(0));
    let app = library(&env);
    assert_eq!(app.mode(), &licensor::client::Mode::FULL);
    app.track_feature("collected_before");
    app.shutdown();
    let out = cli(&env, &["telemetry", "enable", "--level", "basic"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let app = library(&env);
    assert_eq!(
        app.mode(),
        &licensor::client::Mode::Telemetry { debug: false, level: licensor::client::Level::Basic }
    );
    app.track_feature("collected_after");
    app.shutdown();
    let out = cli(&env, &["check-in"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("basic health only"), "{}", text(&out));
    let sent: Value = serde_json::from_slice(&cli(&env, &["telemetry", "sent", "--full"]).stdout).unwrap();
    let batch = &sent[0]["batch"];
    assert_eq!(batch["usage"], json!([]));
    assert_eq!((batch["performance"].clone(), batch["errors"].clone()), (json!([]), json!([])));
    assert_eq!(batch["environment"]["app_version"], "5.0.1");
    let instance = LocalStore::open(&data).unwrap().state().unwrap().unwrap().instance_id;
    assert_eq!(server.summary(&instance)["usage"], json!([]));
}

/// `licensor telemetry preview` shows exactly what the next check-in sends: the application's
/// version (not the command's), a batch id fixed once shown, and later figures waiting for the
/// batch after; `sent --raw` prints the bytes the server digested.
#[test]
fn the_preview_is_exactly_what_the_next_check_in_sends() {
    use sha2::Digest as _;
    let dir = tempfile::TempDir::new().unwrap();
    let server = Server::start(dir.path(), free_port());
    let data = dir.path().join("deployment");
    let env = deployment_env(&server.base(), &server.issue("pro"), &server.keys(), &data);
    // The commands run without the application's version: they must not report their own.
    let command_env: Vec<_> =
        env.iter().filter(|(k, _)| *k != "LICENSOR_SOFTWARE_VERSION").cloned().collect();

    let app = library(&env);
    app.track_feature("shown");
    app.shutdown();
    let first = cli(&command_env, &["telemetry", "preview"]);
    assert_eq!(first.status.code(), Some(0), "{}", text(&first));
    let shown = String::from_utf8(first.stdout.clone()).unwrap().trim_end_matches('\n').to_owned();
    let batch: Value = serde_json::from_str(&shown).unwrap();
    assert_eq!(batch["environment"]["app_version"], "5.0.1");
    assert_eq!(batch["usage"], json!([{"kind": "feature", "name": "shown", "count": 1}]));
    let said = String::from_utf8_lossy(&first.stderr);
    assert!(
        said.contains(&format!(
            "batch {}: the next check-in sends exactly these bytes",
            batch["batch_id"].as_str().unwrap()
        )),
        "{said}"
    );
    assert!(said.contains("the application last flushed its figures at"), "{said}");

    // Figures recorded after the preview wait for the next batch; the preview stays the same.
    let app = library(&env);
    app.track_feature("later");
    app.shutdown();
    let second = cli(&command_env, &["telemetry", "preview"]);
    assert_eq!(String::from_utf8(second.stdout).unwrap().trim_end_matches('\n'), shown);
    assert!(
        String::from_utf8_lossy(&second.stderr).contains("1 rows recorded since wait for the batch after it")
    );

    let out = cli(&command_env, &["check-in"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let raw = cli(&command_env, &["telemetry", "sent", "--raw"]);
    assert_eq!(raw.status.code(), Some(0));
    assert_eq!(raw.stdout, shown.as_bytes(), "sent --raw is the previewed bytes, nothing added");
    let ledger = LocalStore::open(&data).unwrap().ledger().unwrap();
    assert_eq!(ledger[0].digest, hex::encode(sha2::Sha256::digest(&raw.stdout)));
    let instance = LocalStore::open(&data).unwrap().state().unwrap().unwrap().instance_id;
    let summary = server.summary(&instance);
    assert_eq!(summary["usage"], json!([{"kind": "feature", "name": "shown", "count": 1}]), "{summary}");
    let instances = server.instances();
    assert_eq!(instances["instances"][0]["software_version"], "5.0.1", "{instances}");
    // The local dashboard has no sign-in: it listens on this machine only.
    let exposed = cli(&command_env, &["telemetry", "dashboard", "--bind", "0.0.0.0:8089"]);
    assert_eq!(exposed.status.code(), Some(2), "{}", text(&exposed));
    assert!(text(&exposed).contains("listens on this machine only"), "{}", text(&exposed));
    let missing = cli(&command_env, &["telemetry", "sent", "--raw", "--batch", "no-such-batch"]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(text(&missing).contains("batch no-such-batch is not in the ledger"));
}

/// The next check-in that `licensor telemetry status` shows is the one the application keeps:
/// from its start (its first check-in), and after a command checked in beside it, whose answer
/// (here: none, so a retry in 15 to 30 s) the application then follows instead of its own
/// first check-in an hour away.
#[test]
fn the_application_keeps_the_check_in_time_that_status_shows() {
    let dir = tempfile::TempDir::new().unwrap();
    let mut server = Server::start(dir.path(), free_port());
    let data = dir.path().join("deployment");
    let env = deployment_env(&server.base(), &server.issue("pro"), &server.keys(), &data);
    let app = library(&env);
    let next = |env: &[(&'static str, String)]| -> chrono::DateTime<chrono::Utc> {
        let status = text(&cli(env, &["telemetry", "status"]));
        let line = status
            .lines()
            .find_map(|l| l.strip_prefix("next check-in: "))
            .unwrap_or_else(|| panic!("{status}"));
        line.split_whitespace().next().unwrap().parse().unwrap_or_else(|e| panic!("{line}: {e}"))
    };
    let now = chrono::Utc::now();
    let first = next(&env);
    assert!(
        first > now + chrono::Duration::minutes(59) && first < now + chrono::Duration::minutes(121),
        "{first}"
    );

    server.kill();
    assert_eq!(cli(&env, &["check-in"]).status.code(), Some(2));
    let retry = next(&env);
    assert!(retry < chrono::Utc::now() + chrono::Duration::seconds(31), "{retry}");
    server.restart();
    let started = Instant::now();
    loop {
        let instances = server.instances();
        if !instances["instances"].as_array().unwrap().is_empty() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "the application kept its own time: {instances}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    app.shutdown();
    assert!(next(&env) > chrono::Utc::now() + chrono::Duration::days(6), "the answer's time, a week away");
}

/// The air-gapped round trip, as the people involved run it: an Enterprise deployment disabled
/// with `licensor telemetry disable` (pointed at a listener that counts connections: none is
/// ever made) collects in the application; `telemetry export --signed` writes a readable report
/// (again byte for byte until its receipt comes back); the vendor's `licensor admin
/// import-usage` against the real server stores it once however often it is imported and
/// writes a receipt carrying the renewed license; `telemetry import-receipt` applies it, and
/// the deployment runs on the renewed key. Tampered, stale and foreign receipts and replayed
/// reports are refused and change nothing.
#[test]
fn an_air_gapped_deployment_reports_usage_by_signed_file_and_is_renewed_without_connecting() {
    let dir = tempfile::TempDir::new().unwrap();
    let server = Server::start(dir.path(), free_port());
    let base = server.base();
    let admin = |args: &[&str]| {
        let mut all = vec!["admin", "--url", base.as_str()];
        all.extend_from_slice(args);
        let token = server.token();
        cli(&[("LICENSOR_ADMIN_TOKEN", token)], &all)
    };
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let counting = format!("http://{}", listener.local_addr().unwrap());
    let key = server.issue("enterprise");
    let license_id = licensor::token::decode::<licensor::LicensePayload>(&key).unwrap().claims.license_id;
    let data = dir.path().join("air");
    let env = deployment_env(&counting, &key, &server.keys(), &data);
    assert_eq!(cli(&env, &["telemetry", "disable"]).status.code(), Some(0));

    let app = library(&env);
    assert_eq!(app.mode(), &licensor::client::Mode::AirGapped { level: licensor::client::Level::Full });
    for _ in 0..3 {
        app.track_feature("export");
    }
    app.shutdown();
    // A check-in is refused without connecting.
    assert_eq!(cli(&env, &["check-in"]).status.code(), Some(2));

    // The report: readable, signed, its batch exactly the outbox's bytes.
    let report1 = dir.path().join("usage-1.json");
    let out = cli(&env, &["telemetry", "export", "--signed", "--out", report1.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("report 1 written"), "{}", text(&out));
    let status = text(&cli(&env, &["telemetry", "status"]));
    assert!(
        status.contains("usage reports: 0 acknowledged; report 1 exported and waiting for its receipt"),
        "{status}"
    );
    let text1 = std::fs::read_to_string(&report1).unwrap();
    let signed1 = licensor::usage_report::read_report(&text1).unwrap();
    assert_eq!((signed1.body.sequence, signed1.body.previous_digest.as_deref()), (1, None));
    let outbox = LocalStore::open(&data).unwrap().outbox().unwrap().unwrap();
    assert_eq!(signed1.body.telemetry.get(), outbox.payload);
    let batch: Value = serde_json::from_str(&outbox.payload).unwrap();
    assert_eq!(batch["usage"], json!([{ "kind": "feature", "name": "export", "count": 3 }]));
    assert_eq!(batch["environment"]["app_version"], "5.0.1");
    assert!(text(&out).contains(&signed1.digest));
    // Until its receipt comes back, the same report again; an existing file is not overwritten.
    let again = dir.path().join("usage-1-again.json");
    let out = cli(&env, &["telemetry", "export", "--signed", "--out", again.to_str().unwrap()]);
    assert!(text(&out).contains("still waiting for its receipt"), "{}", text(&out));
    assert_eq!(std::fs::read_to_string(&again).unwrap(), text1);
    let out = cli(&env, &["telemetry", "export", "--signed", "--out", report1.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("exists already"), "{}", text(&out));

    // The vendor renews the license, then imports the report (twice: counted once).
    let (status, _) = {
        let r = http()
            .patch(format!("{}/v1/admin/licenses/{license_id}", server.base()))
            .bearer_auth(server.token())
            .json(&json!({ "expires_at": "2031-01-01T00:00:00Z" }))
            .send()
            .unwrap();
        (r.status().as_u16(), ())
    };
    assert_eq!(status, 200);
    let receipt1 = dir.path().join("receipt-1.json");
    let out = admin(&["import-usage", report1.to_str().unwrap(), "--out", receipt1.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        text(&out).contains("imported report 1") && text(&out).contains("valid; batch stored"),
        "{}",
        text(&out)
    );
    assert!(text(&out).contains("carries a renewed license key"), "{}", text(&out));
    let instance = LocalStore::open(&data).unwrap().state().unwrap().unwrap().instance_id;
    let count = |s: Value| {
        s["usage"].as_array().unwrap().iter().find(|u| u["name"] == "export").unwrap()["count"].clone()
    };
    assert_eq!(count(server.summary(&instance)), 3);
    let receipt1b = dir.path().join("receipt-1b.json");
    let out = admin(&["import-usage", again.to_str().unwrap(), "--out", receipt1b.to_str().unwrap()]);
    assert!(text(&out).contains("acknowledged again"), "{}", text(&out));
    assert_eq!(count(server.summary(&instance)), 3, "imported twice, counted once");

    // Receipts that must change nothing: tampered, and another install's.
    let genuine = std::fs::read_to_string(&receipt1).unwrap();
    let file: Value = serde_json::from_str(&genuine).unwrap();
    let mut tampered = file.clone();
    let lease = file["lease"].as_str().unwrap();
    let mut forged = lease.to_owned();
    let last = forged.pop().unwrap();
    forged.push(if last == 'A' { 'B' } else { 'A' });
    tampered["lease"] = json!(forged);
    let bad = dir.path().join("tampered.json");
    std::fs::write(&bad, tampered.to_string()).unwrap();
    let out = cli(&env, &["telemetry", "import-receipt", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("the LEASE1. token in the receipt file does not verify"), "{}", text(&out));
    let other = dir.path().join("other");
    let other_env = deployment_env(&counting, &key, &server.keys(), &other);
    assert_eq!(cli(&other_env, &["telemetry", "disable"]).status.code(), Some(0));
    let other_report = dir.path().join("other-1.json");
    assert_eq!(
        cli(&other_env, &["telemetry", "export", "--signed", "--out", other_report.to_str().unwrap()])
            .status
            .code(),
        Some(0)
    );
    let other_receipt = dir.path().join("other-receipt.json");
    assert_eq!(
        admin(&["import-usage", other_report.to_str().unwrap(), "--out", other_receipt.to_str().unwrap()])
            .status
            .code(),
        Some(0)
    );
    let out = cli(&env, &["telemetry", "import-receipt", other_receipt.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("not this one"), "{}", text(&out));
    let store = LocalStore::open(&data).unwrap();
    assert!(store.ledger().unwrap().is_empty() && store.outbox().unwrap().is_some(), "nothing changed");
    assert_eq!(store.report_chain().unwrap().sequence, 0);

    // The genuine receipt: the batch moves to the ledger and the renewed key is in force.
    let out = cli(&env, &["telemetry", "import-receipt", receipt1.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        text(&out).contains("report 1 was imported, and its batch moved to the ledger"),
        "{}",
        text(&out)
    );
    assert!(
        text(&out).contains("renewed license key in force")
            && text(&out).contains("expires 2031-01-01T00:00:00Z")
    );
    let ledger = store.ledger().unwrap();
    assert_eq!(ledger.len(), 1);
    assert_eq!(ledger[0].payload, outbox.payload);
    assert_eq!(store.outbox().unwrap(), None);
    let status = text(&cli(&env, &["telemetry", "status"]));
    assert!(status.contains("expires 2031-01-01T00:00:00Z") && status.contains("status: valid"), "{status}");
    assert!(
        status.contains("telemetry: off (air-gapped: no connection is made); usage figures are kept here"),
        "{status}"
    );
    assert!(status.contains("usage reports: 1 acknowledged\n"), "{status}");
    let out = cli(&env, &["telemetry", "import-receipt", receipt1.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0));
    assert!(text(&out).contains("applied before: nothing changed"), "{}", text(&out));

    // The next report chains to the first; an old report or receipt is refused.
    let app = library(&env);
    assert_eq!(
        app.license().unwrap().expires_at.map(|t| licensor::time::format(&t)).as_deref(),
        Some("2031-01-01T00:00:00Z")
    );
    app.track_feature("export");
    let exported = app.export_usage_report().unwrap();
    app.shutdown();
    let signed2 = licensor::usage_report::read_report(&exported.text).unwrap();
    assert_eq!(
        (signed2.body.sequence, signed2.body.previous_digest.as_deref()),
        (2, Some(signed1.digest.as_str()))
    );
    assert_ne!(signed2.body.license_key, key, "the report carries the renewed key");
    let report2 = dir.path().join("usage-2.json");
    std::fs::write(&report2, &exported.text).unwrap();
    let out = admin(&[
        "import-usage",
        report1.to_str().unwrap(),
        "--out",
        dir.path().join("r.json").to_str().unwrap(),
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "report 1 again is still a duplicate, not a replay: {}",
        text(&out)
    );
    let receipt2 = dir.path().join("receipt-2.json");
    assert_eq!(
        admin(&["import-usage", report2.to_str().unwrap(), "--out", receipt2.to_str().unwrap()])
            .status
            .code(),
        Some(0)
    );
    let out = admin(&[
        "import-usage",
        report1.to_str().unwrap(),
        "--out",
        dir.path().join("r2.json").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("report_replayed"), "{}", text(&out));
    assert!(!dir.path().join("r2.json").exists());
    assert_eq!(count(server.summary(&instance)), 4);
    let out = cli(&env, &["telemetry", "import-receipt", receipt1b.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("acknowledges report 1"), "{}", text(&out));
    let out = cli(&env, &["telemetry", "import-receipt", receipt2.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(store.report_chain().unwrap().sequence, 2);
    assert_eq!(store.ledger().unwrap().len(), 2);

    // With a report directory, `licensor check-in` writes the next report there (the
    // application's worker does the same on the license's schedule).
    let outgoing = dir.path().join("outgoing");
    let mut with_dir = env.clone();
    with_dir.push(("LICENSOR_REPORT_DIR", outgoing.display().to_string()));
    let out = cli(&with_dir, &["check-in"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        text(&out).contains("air-gapped: no connection made; the batch went to signed usage report files"),
        "{}",
        text(&out)
    );
    let third = licensor::usage_report::read_report(
        &std::fs::read_to_string(outgoing.join("usage-report-000003.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(third.body.previous_digest, store.report_chain().unwrap().digest);

    // Not one connection to the configured server in all of this.
    assert!(listener.accept().is_err(), "an air-gapped deployment connected");
}
