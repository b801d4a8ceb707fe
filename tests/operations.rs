//! The recipes of `docs/operations.md`, run as an operator runs them: back up a live server's
//! database, destroy it, restore it, and find the same licenses served (SQLite with
//! `licensor backup`, PostgreSQL with `pg_dump` and `pg_restore`).

mod common;

use diesel::connection::SimpleConnection as _;
use diesel::Connection as _;
use std::io::Read as _;
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

const TOKEN: &str = "operations-test-token-0123456789";

/// `licensor serve` on `database_url`, with the development keys of `data_dir` (generated on
/// the first start, reused after), once it is ready.
fn serve(data_dir: &Path, database_url: &str) -> (Child, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let child = common::serve_process(port)
        .arg("--data-dir")
        .arg(data_dir)
        .env("DATABASE_URL", database_url)
        .env("LICENSOR_ADMIN_TOKEN", TOKEN)
        .env("RUST_LOG", "warn")
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let mut child = child;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if reqwest::blocking::get(format!("{base}/readyz")).is_ok_and(|r| r.status().is_success()) {
            return (child, base);
        }
        if let Ok(Some(status)) = child.try_wait() {
            let mut err = String::new();
            child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
            panic!("the server stopped ({status}): {err}");
        }
        assert!(Instant::now() < deadline, "the server did not come up");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn stop(mut child: Child) {
    Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(child.wait().unwrap().success());
}

fn admin(
    base: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<serde_json::Value>,
) -> serde_json::Value {
    let client = reqwest::blocking::Client::new();
    let mut request = client.request(method, format!("{base}{path}")).bearer_auth(TOKEN);
    if let Some(body) = body {
        request = request.json(&body);
    }
    request.send().unwrap().json().unwrap()
}

/// What the server serves that a restore must bring back: every license as the admin API lists
/// it (payload, revocation, instances, seats in use, last check-in), by id.
fn served(base: &str) -> Vec<serde_json::Value> {
    let page = admin(base, reqwest::Method::GET, "/v1/admin/licenses?limit=100", None);
    let mut out = page["licenses"].as_array().unwrap_or_else(|| panic!("{page}")).clone();
    out.sort_by_key(|l| l["license_id"].as_str().unwrap().to_owned());
    out
}

/// Issues three licenses (one revoked) and checks one instance in, so the backup holds
/// licenses, a revocation and a seat.
fn populate(base: &str) -> String {
    let mut keys = Vec::new();
    for (i, tier) in ["community", "pro", "enterprise"].iter().enumerate() {
        let issued = admin(
            base,
            reqwest::Method::POST,
            "/v1/admin/licenses",
            Some(
                serde_json::json!({ "tier": tier, "licensee": format!("Backup Co {i}"), "perpetual": true, "seats": 3 }),
            ),
        );
        keys.push((
            issued["payload"]["license_id"].as_str().unwrap_or_else(|| panic!("{issued}")).to_owned(),
            issued["license_key"].as_str().unwrap().to_owned(),
        ));
    }
    admin(base, reqwest::Method::POST, &format!("/v1/admin/licenses/{}/revoke", keys[0].0), None);
    let answer = check_in(base, &keys[2].1, "restored-instance");
    assert_eq!(answer["status"], "valid", "{answer}");
    keys[2].1.clone()
}

fn check_in(base: &str, key: &str, instance: &str) -> serde_json::Value {
    use base64::Engine as _;
    reqwest::blocking::Client::new()
        .post(format!("{base}/v1/check-ins"))
        .json(&serde_json::json!({
            "license_key": key, "instance_id": instance, "software_version": "1.0.0",
            "nonce": base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(uuid::Uuid::new_v4().as_bytes()),
            "telemetry_disabled": true
        }))
        .send()
        .unwrap()
        .json()
        .unwrap()
}

#[test]
fn sqlite_backup_taken_live_restores_the_same_licenses() {
    let dir = tempfile::TempDir::new().unwrap();
    let data = dir.path().join("data");
    let db = dir.path().join("db").join("licensor.db");
    let url = format!("sqlite://{}", db.display());
    let (server, base) = serve(&data, &url);
    let key = populate(&base);
    let before = served(&base);
    assert_eq!(before.len(), 3);
    assert_eq!(before.iter().filter(|l| l["revoked"] == true).count(), 1, "{before:?}");
    assert_eq!(before.iter().map(|l| l["seats_in_use"].as_i64().unwrap()).sum::<i64>(), 1, "{before:?}");

    // Backed up while the server runs.
    let backup = dir.path().join("backup.db");
    let out = Command::new(env!("CARGO_BIN_EXE_licensor"))
        .args(["backup", "--database-url", &url, "--out"])
        .arg(&backup)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("backed up to "));
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(std::fs::metadata(&backup).unwrap().permissions().mode() & 0o777, 0o600);
    // A backup never overwrites a file.
    let again = Command::new(env!("CARGO_BIN_EXE_licensor"))
        .args(["backup", "--database-url", &url, "--out"])
        .arg(&backup)
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("backup.db"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    // Something happens after the backup: the restore goes back to the backup's moment.
    check_in(&base, &key, "after-the-backup");
    stop(server);

    // Destroyed, then restored.
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
    }
    std::fs::copy(&backup, &db).unwrap();
    let (server, base) = serve(&data, &url);
    assert_eq!(served(&base), before, "the restored server serves the same licenses");
    let answer = check_in(&base, &key, "restored-instance");
    assert_eq!(
        answer["status"], "valid",
        "the seat taken before the backup is still this instance's: {answer}"
    );
    stop(server);

    // PostgreSQL is not for this command, and says so.
    let out = Command::new(env!("CARGO_BIN_EXE_licensor"))
        .args(["backup", "--database-url", "postgres://nobody@127.0.0.1:1/x", "--out"])
        .arg(dir.path().join("pg.db"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("pg_dump"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!dir.path().join("pg.db").exists());
}

#[test]
fn postgres_dump_and_restore_serve_the_same_licenses() {
    let Some(pg_dump) = tool("pg_dump") else { return };
    let Some(pg_restore) = tool("pg_restore") else { return };
    // A database of the test's own (a dump is of a whole database), dropped at the end.
    let Some(_probe) = common::PgSchema::create() else { return };
    let base_url = common::postgres_url();
    let name = format!("restore_{}", uuid::Uuid::new_v4().simple());
    let admin_conn = || diesel::PgConnection::establish(&base_url).unwrap();
    admin_conn().batch_execute(&format!("CREATE DATABASE {name}")).unwrap();
    struct Dropped(String, String);
    impl Drop for Dropped {
        fn drop(&mut self) {
            if let Ok(mut c) = diesel::PgConnection::establish(&self.1) {
                let _ = c.batch_execute(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.0));
            }
        }
    }
    let _dropped = Dropped(name.clone(), base_url.clone());
    let (prefix, _) = base_url.rsplit_once('/').unwrap();
    let url = format!("{prefix}/{name}");

    let dir = tempfile::TempDir::new().unwrap();
    let data = dir.path().join("data");
    let (server, base) = serve(&data, &url);
    let key = populate(&base);
    let before = served(&base);
    let dump = dir.path().join("licensor.dump");
    let out =
        Command::new(&pg_dump).args(["--format=custom", "--file"]).arg(&dump).arg(&url).output().unwrap();
    assert!(out.status.success(), "pg_dump: {}", String::from_utf8_lossy(&out.stderr));
    stop(server);

    // Destroyed, then restored into a new, empty database of the same name.
    admin_conn().batch_execute(&format!("DROP DATABASE {name} WITH (FORCE)")).unwrap();
    admin_conn().batch_execute(&format!("CREATE DATABASE {name}")).unwrap();
    let out = Command::new(&pg_restore)
        .args(["--no-owner", "--exit-on-error", "--dbname"])
        .arg(&url)
        .arg(&dump)
        .output()
        .unwrap();
    assert!(out.status.success(), "pg_restore: {}", String::from_utf8_lossy(&out.stderr));
    let (server, base) = serve(&data, &url);
    assert_eq!(served(&base), before, "the restored server serves the same licenses");
    assert_eq!(check_in(&base, &key, "restored-instance")["status"], "valid");
    stop(server);
}

/// A PostgreSQL tool, or `None` with a loud notice (a failure where PostgreSQL is required).
fn tool(name: &str) -> Option<std::path::PathBuf> {
    let found = std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|dir| Path::new(dir).join(name))
        .find(|p| p.is_file());
    if found.is_none() {
        if std::env::var("LICENSOR_REQUIRE_POSTGRES").as_deref() == Ok("1") {
            panic!("{name} is required (LICENSOR_REQUIRE_POSTGRES=1) but is not on PATH");
        }
        eprintln!("\n!!! SKIPPED: the PostgreSQL backup and restore test: {name} is not on PATH\n");
    }
    found
}
