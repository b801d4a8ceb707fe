//! `licensor serve` as an operator runs it: the real binary in an empty directory, with no
//! configuration, stopped with SIGTERM while requests are in flight.

mod common;

use std::io::Read as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn wait_until_up(base: &str, client: &reqwest::blocking::Client) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if client.get(format!("{base}/readyz")).send().is_ok_and(|r| r.status().is_success()) {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("the server did not come up at {base}");
}

#[cfg(unix)]
#[test]
fn zero_config_start_then_sigterm_finishes_requests_in_flight() {
    let dir = tempfile::TempDir::new().unwrap();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut server = Command::new(env!("CARGO_BIN_EXE_licensor"))
        .args(["serve", "--bind", &format!("127.0.0.1:{port}")])
        .current_dir(dir.path())
        .env("RUST_LOG", "warn")
        .env_remove("DATABASE_URL")
        .env_remove("LICENSOR_ADMIN_TOKEN")
        .env_remove("LICENSOR_KEYS_DIR")
        .env_remove("LICENSOR_SIGNING_KEY")
        .env_remove("LICENSOR_ISSUING_KEY")
        .env_remove("LICENSOR_CONFIG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let client = reqwest::blocking::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
    wait_until_up(&base, &client);

    // The development set-up, in ./data.
    let data = dir.path().join("data");
    for file in [
        "licensor.db",
        "admin-token",
        "private/dev-server.lease.private.pem",
        "keys/dev-server.lease.public.pem",
        "private/vendor-dev.license.private.pem",
        "keys/vendor-dev.license.public.pem",
    ] {
        assert!(data.join(file).exists(), "{file} was not created");
    }
    // The ring of trusted public keys holds no private key: it can be copied to clients.
    let ring: Vec<String> = std::fs::read_dir(data.join("keys"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(ring.iter().all(|f| f.ends_with(".public.pem")), "{ring:?}");
    use std::os::unix::fs::PermissionsExt as _;
    let mode = |p: &str| std::fs::metadata(data.join(p)).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode("private"), 0o700);
    assert_eq!(mode(""), 0o700, "the data directory");
    assert_eq!(mode("licensor.db"), 0o600, "the database file");
    for secret in
        ["admin-token", "private/dev-server.lease.private.pem", "private/vendor-dev.license.private.pem"]
    {
        assert_eq!(
            std::fs::metadata(data.join(secret)).unwrap().permissions().mode() & 0o777,
            0o600,
            "{secret}"
        );
    }
    let token = std::fs::read_to_string(data.join("admin-token")).unwrap();
    assert!(token.starts_with("lsa_"), "generated tokens carry their prefix");

    // Issue through the admin API, with the generated token and issuing key.
    let issued: serde_json::Value = client
        .post(format!("{base}/v1/admin/licenses"))
        .bearer_auth(&token)
        .json(&serde_json::json!({ "tier": "enterprise", "licensee": "Process Test", "perpetual": true, "seats": 50 }))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let key = issued["license_key"].as_str().unwrap().to_owned();

    // Requests in flight while SIGTERM arrives all get their answer.
    let answers: Vec<u16> = std::thread::scope(|s| {
        let requests: Vec<_> = (0..20)
            .map(|i| {
                let (client, base, key) = (&client, &base, &key);
                s.spawn(move || {
                    use base64::Engine as _;
                    let nonce = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([i as u8; 16]);
                    let body = serde_json::json!({
                        "license_key": key, "instance_id": format!("proc-{i}"), "nonce": nonce,
                        "software_version": "1.0.0", "telemetry_disabled": true
                    });
                    client
                        .post(format!("{base}/v1/check-ins"))
                        .json(&body)
                        .send()
                        .map_or(0, |r| r.status().as_u16())
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(5));
        let kill = Command::new("kill").args(["-TERM", &server.id().to_string()]).status().unwrap();
        assert!(kill.success());
        requests.into_iter().map(|r| r.join().unwrap()).collect()
    });
    // A request can only fail by arriving after the listener closed (status 0, connection
    // refused); none may be cut off with an error after it was accepted.
    assert!(answers.iter().all(|s| *s == 200 || *s == 0), "{answers:?}");

    let deadline = Instant::now() + Duration::from_secs(40);
    let status = loop {
        if let Some(status) = server.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the server did not stop after SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    server.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    assert!(status.success(), "exit {status}: {stderr}");
    assert!(stderr.contains("DEVELOPMENT SET-UP"), "{stderr}");

    // A second start reuses the set-up and says so, without printing the token again.
    let port = free_port();
    let mut again = Command::new(env!("CARGO_BIN_EXE_licensor"))
        .args(["serve", "--bind", &format!("127.0.0.1:{port}")])
        .current_dir(dir.path())
        .env("RUST_LOG", "info")
        .env_remove("DATABASE_URL")
        .env_remove("LICENSOR_ADMIN_TOKEN")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    wait_until_up(&format!("http://127.0.0.1:{port}"), &client);
    Command::new("kill").args(["-TERM", &again.id().to_string()]).status().unwrap();
    let status = again.wait().unwrap();
    let mut stderr = String::new();
    again.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    assert!(status.success(), "{stderr}");
    assert!(stderr.contains("admin token read from"), "{stderr}");
    assert!(!stderr.contains(token.trim()), "the token is printed once only");
    // Logs to a pipe (a file, a journal) carry no colour codes.
    assert!(stderr.contains("licensor server listening"), "{stderr}");
    assert!(!stderr.contains('\u{1b}'), "ANSI escape codes in logs to a pipe: {stderr:?}");
}

#[test]
fn bad_configuration_is_a_clear_error() {
    let dir = tempfile::TempDir::new().unwrap();
    let run = |args: &[&str], env: &[(&str, &str)]| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_licensor"));
        command
            .arg("serve")
            .args(args)
            .current_dir(dir.path())
            .env_remove("DATABASE_URL")
            .env_remove("LICENSOR_ADMIN_TOKEN");
        for (k, v) in env {
            command.env(k, v);
        }
        let out = command.output().unwrap();
        (out.status.code().unwrap(), String::from_utf8(out.stderr).unwrap())
    };
    // A setting is named as the operator gave it: the flag typed, or the variable set.
    let (code, err) = run(&["--bind", "nowhere"], &[]);
    assert_eq!(code, 2);
    assert!(err.contains("error: --bind: \"nowhere\" is not an address"), "{err}");
    let (code, err) = run(&[], &[("LICENSOR_BIND", "nowhere")]);
    assert_eq!(code, 2);
    assert!(err.contains("error: LICENSOR_BIND: \"nowhere\" is not an address"), "{err}");
    let (code, err) = run(&[], &[("DATABASE_URL", "mysql://x")]);
    assert_eq!(code, 2);
    assert!(err.contains("DATABASE_URL") && err.contains("mysql://x"), "{err}");
    let (code, err) = run(&[], &[("LICENSOR_ADMIN_TOKEN", "short")]);
    assert_eq!(code, 2);
    assert!(err.contains("LICENSOR_ADMIN_TOKEN") && err.contains("at least 24"), "{err}");
    std::fs::write(dir.path().join("bad.toml"), "bind = \"127.0.0.1:1\"\nunknown_setting = 1\n").unwrap();
    let (code, err) = run(&["--config", "bad.toml"], &[]);
    assert_eq!(code, 2);
    assert!(err.contains("bad.toml") && err.contains("unknown_setting"), "{err}");
    // A value clap reads from the environment is named by its variable, a typed one by its flag.
    let (code, err) = run(&[], &[("LICENSOR_RETENTION_DAYS", "abc")]);
    assert_eq!(code, 2);
    assert!(err.contains("invalid value 'abc' for LICENSOR_RETENTION_DAYS"), "{err}");
    assert!(!err.contains("--retention-days"), "{err}");
    let (code, err) = run(&["--retention-days", "abc"], &[("LICENSOR_RETENTION_DAYS", "7")]);
    assert_eq!(code, 2);
    assert!(err.contains("'--retention-days <RETENTION_DAYS>'"), "{err}");
    // A file's bad value is named by its line, table and key.
    std::fs::write(dir.path().join("typed.toml"), "bind = \"127.0.0.1:1\"\n[limits]\nmax_usage = -3\n")
        .unwrap();
    let (code, err) = run(&["--config", "typed.toml"], &[]);
    assert_eq!(code, 2);
    assert!(err.contains("typed.toml: line 3, [limits] max_usage: invalid value: integer `-3`"), "{err}");
    let (code, err) = run(&["--signing-key", "missing.private.pem"], &[]);
    assert_eq!(code, 2);
    assert!(err.contains("--signing-key") && err.contains("missing.private.pem"), "{err}");
    // Each cause is said once.
    let (code, err) = run(&["--signing-key", "missing.lease.private.pem"], &[]);
    assert_eq!(code, 2);
    assert_eq!(err.matches("No such file or directory").count(), 1, "{err}");
    assert!(err.contains("error: --signing-key: missing.lease.private.pem: No such file"), "{err}");
}

/// A start that fails (the port is taken) never says it listens and leaves none of the keys,
/// token or database it generated behind.
#[test]
fn a_failed_start_leaves_nothing_generated_and_never_claims_to_listen() {
    let dir = tempfile::TempDir::new().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_licensor"))
        .args(["serve", "--bind", &taken.local_addr().unwrap().to_string()])
        .current_dir(dir.path())
        .env_remove("DATABASE_URL")
        .env_remove("LICENSOR_ADMIN_TOKEN")
        .env_remove("LICENSOR_BIND")
        .output()
        .unwrap();
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(!err.contains("listening"), "{err}");
    assert!(!err.contains("generated admin token"), "the token of a failed start is never shown: {err}");
    assert!(err.contains("cannot listen on"), "{err}");
    assert_eq!(err.matches("Address already in use").count(), 1, "{err}");
    assert!(
        !dir.path().join("data").exists(),
        "left behind: {:?}",
        std::fs::read_dir(dir.path().join("data")).map(|d| d.count())
    );
}

/// `LICENSOR_LOG_FORMAT=json`: every line on stderr is one JSON object; each line a request
/// causes carries that request's id, which the answer's `X-Request-Id` echoes (a plain id from
/// the caller is kept, anything else replaced); no license key, token or telemetry text is
/// ever logged, nor the query string.
#[cfg(unix)]
#[test]
fn json_logs_carry_request_ids_and_no_secrets() {
    let dir = tempfile::TempDir::new().unwrap();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut server = common::serve_process(port)
        .current_dir(dir.path())
        .env("LICENSOR_LOG_FORMAT", "json")
        .env("RUST_LOG", "info")
        .spawn()
        .unwrap();
    let client = reqwest::blocking::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
    wait_until_up(&base, &client);
    let token = std::fs::read_to_string(dir.path().join("data/admin-token")).unwrap();

    let issued = client
        .post(format!("{base}/v1/admin/licenses?licensee=Query+Secret"))
        .bearer_auth(&token)
        .header("x-request-id", "proxy-id-42")
        .json(&serde_json::json!({ "tier": "community", "licensee": "Json Logs Ltd", "seats": 2, "perpetual": true }))
        .send()
        .unwrap();
    assert_eq!(issued.headers()["x-request-id"], "proxy-id-42", "a plain id from the caller is kept");
    let issued: serde_json::Value = issued.json().unwrap();
    let key = issued["license_key"].as_str().unwrap_or_else(|| panic!("{issued}")).to_owned();

    use base64::Engine as _;
    let now = chrono::Utc::now();
    let body = serde_json::json!({
        "license_key": key, "instance_id": "json-logs-1",
        "nonce": base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([7u8; 16]),
        "software_version": "2.0.0",
        "telemetry": {
            "schema": 1, "batch_id": "7d0c6a5e-5b1e-4f7e-9a59-8d8c2a1f0c11",
            "period_start": licensor::time::format(&(now - chrono::Duration::hours(24))),
            "period_end": licensor::time::format(&now),
            "environment": { "app_version": "2.0.0", "os": "linux", "arch": "x86_64", "user_count_range": "1-10",
                             "modules_enabled": [], "uptime_hours": 1.0, "last_sync_status": "success", "health": {} },
            "usage": [], "performance": [],
            "sessions": { "count": 0, "total_duration_s": 0, "hourly": vec![0; 24] },
            "dropped": { "sampled": 0, "throttled": 0, "overflow": 0 },
            "errors": [{ "fingerprint": "00000000000000f0", "type": "database",
                         "message": "unique-telemetry-text-marker", "stack": ["at db::query"], "count": 1,
                         "first_seen": licensor::time::format(&now), "last_seen": licensor::time::format(&now) }]
        }
    });
    let checked_in = client
        .post(format!("{base}/v1/check-ins"))
        .header("x-request-id", "not a plain id; {injected}")
        .json(&body)
        .send()
        .unwrap();
    let check_in_id = checked_in.headers()["x-request-id"].to_str().unwrap().to_owned();
    let check_in_status = checked_in.status();
    assert_eq!(check_in_status, 200, "{}", checked_in.text().unwrap());
    assert_ne!(check_in_id, "not a plain id; {injected}");
    assert_eq!(check_in_id.len(), 32, "a new id: {check_in_id}");
    let refused = client.get(format!("{base}/v1/admin/licenses")).bearer_auth("wrong-token").send().unwrap();
    assert_eq!(refused.status(), 401);
    let refused_id = refused.headers()["x-request-id"].to_str().unwrap().to_owned();

    Command::new("kill").args(["-TERM", &server.id().to_string()]).status().unwrap();
    let status = server.wait().unwrap();
    let mut stderr = String::new();
    server.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    assert!(status.success(), "{stderr}");

    let lines: Vec<serde_json::Value> = stderr
        .lines()
        .map(|line| {
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not one JSON object ({e}): {line}"))
        })
        .collect();
    let of_request = |id: &str| -> Vec<&serde_json::Value> {
        lines.iter().filter(|l| l["span"]["request_id"] == id).collect()
    };
    let issue_lines = of_request("proxy-id-42");
    let messages: Vec<&str> = issue_lines.iter().map(|l| l["message"].as_str().unwrap()).collect();
    assert_eq!(messages, ["license issued", "answered"], "{stderr}");
    assert_eq!(issue_lines[1]["route"], "/v1/admin/licenses");
    assert_eq!(
        (issue_lines[1]["method"].as_str(), issue_lines[1]["status"].as_u64()),
        (Some("POST"), Some(201))
    );
    let check_in = of_request(&check_in_id);
    assert_eq!(check_in.len(), 1, "{stderr}");
    assert_eq!(
        (check_in[0]["route"].as_str(), check_in[0]["status"].as_u64()),
        (Some("/v1/check-ins"), Some(200))
    );
    assert_eq!(of_request(&refused_id).last().unwrap()["status"], 401);
    // Every line a request causes is inside its span.
    for line in &lines {
        if line["target"].as_str().is_some_and(|t| t.starts_with("licensor::server::"))
            && line["message"] != "licensor server listening"
            && line["message"] != "licensor server stopped"
        {
            assert!(line["span"]["request_id"].is_string(), "a request's line without its id: {line}");
        }
    }
    // The development warning is an event too, and names no secret.
    assert!(lines
        .iter()
        .any(|l| l["level"] == "WARN" && l["message"].as_str().unwrap().contains("DEVELOPMENT SET-UP")));
    for secret in [
        token.trim(),
        key.as_str(),
        "unique-telemetry-text-marker",
        "Query+Secret",
        "Query Secret",
        "wrong-token",
    ] {
        assert!(!stderr.contains(secret), "{secret:?} was logged: {stderr}");
    }
    assert!(!stderr.contains('\u{1b}'), "ANSI codes in a JSON log");
}

/// A check-in the database refuses (here a trigger; in life a constraint or a damaged row) is
/// answered 500 without `Retry-After`, so that the client backs off on its own schedule rather
/// than every few seconds; it is counted in `/metrics`; and the log says why, down to the
/// database's own words.
#[cfg(unix)]
#[test]
fn a_refused_check_in_is_answered_500_counted_and_logged_with_its_causes() {
    use diesel::connection::SimpleConnection as _;
    let dir = tempfile::TempDir::new().unwrap();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut server =
        common::serve_process(port).current_dir(dir.path()).env("RUST_LOG", "warn").spawn().unwrap();
    let client = reqwest::blocking::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
    wait_until_up(&base, &client);
    let data = dir.path().join("data");
    let token = std::fs::read_to_string(data.join("admin-token")).unwrap();
    let issued: serde_json::Value = client
        .post(format!("{base}/v1/admin/licenses"))
        .bearer_auth(&token)
        .json(&serde_json::json!({ "tier": "enterprise", "licensee": "Refused Test", "perpetual": true, "seats": 5 }))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let key = issued["license_key"].as_str().unwrap().to_owned();
    let store =
        licensor::store::Store::open(&format!("sqlite://{}", data.join("licensor.db").display()), 1).unwrap();
    store
        .conn()
        .unwrap()
        .batch_execute(
            "CREATE TRIGGER poison BEFORE INSERT ON check_ins WHEN NEW.instance_id NOT LIKE 'healthy-%' \
             BEGIN SELECT RAISE(ABORT, 'poisoned row'); END;",
        )
        .unwrap();
    let check_in = |instance: &str| {
        let body = serde_json::json!({
            "license_key": key, "instance_id": instance, "nonce": common::nonce(),
            "software_version": "1.0.0", "telemetry_disabled": true
        });
        client.post(format!("{base}/v1/check-ins")).json(&body).send().unwrap()
    };
    let refused = check_in("poison-1");
    assert_eq!(refused.status().as_u16(), 500);
    assert!(refused.headers().get("retry-after").is_none(), "{:?}", refused.headers());
    let answer: serde_json::Value = refused.json().unwrap();
    assert_eq!(answer["error"]["code"], "internal", "{answer}");
    assert!(!answer.to_string().contains("poisoned"), "no cause reaches the client: {answer}");
    assert_eq!(check_in("healthy-1").status().as_u16(), 200, "another check-in is recorded");
    let metrics = client.get(format!("{base}/metrics")).bearer_auth(&token).send().unwrap().text().unwrap();
    assert!(metrics.contains("licensor_check_in_failures_total{cause=\"refused\"} 1\n"), "{metrics}");

    // A deployment refused so retries on its own failure schedule (30 s and up, jittered down
    // to half), not at a Retry-After of a few seconds.
    let deployment = dir.path().join("deployment");
    let started = chrono::Utc::now();
    let out = Command::new(env!("CARGO_BIN_EXE_licensor"))
        .arg("check-in")
        .env("LICENSOR_LICENSE_KEY", &key)
        .env("LICENSOR_KEYS_DIR", data.join("keys"))
        .env("LICENSOR_SERVER_URL", &base)
        .env("LICENSOR_DATA_DIR", &deployment)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{said}");
    assert!(said.contains("the server answered HTTP 500"), "{said}");
    let state = licensor::client::store::LocalStore::open(&deployment).unwrap().state().unwrap().unwrap();
    let wait = state.next_check_in_at.unwrap().and_utc() - started;
    assert!(
        (15..=31).contains(&wait.num_seconds()),
        "the next attempt is {wait} away: a refusal is retried on the client's own schedule"
    );

    let kill = Command::new("kill").args(["-TERM", &server.id().to_string()]).status().unwrap();
    assert!(kill.success());
    let mut stderr = String::new();
    server.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    server.wait().unwrap();
    let line = stderr
        .lines()
        .find(|l| l.contains("the database refused one check-in"))
        .unwrap_or_else(|| panic!("{stderr}"));
    assert!(line.contains("database query failed: poisoned row"), "the whole chain: {line}");
    let line = stderr.lines().find(|l| l.contains("internal error")).unwrap_or_else(|| panic!("{stderr}"));
    assert!(
        line.contains("the database refused the check-in: database query failed: poisoned row"),
        "{line}"
    );
}

/// With only named tokens configured, the server generates no other token, writes none to the
/// data directory, prints none, and says that only the named ones are accepted.
#[cfg(unix)]
#[test]
fn named_tokens_alone_get_no_hidden_token() {
    let dir = tempfile::TempDir::new().unwrap();
    let config = dir.path().join("licensor.toml");
    std::fs::write(
        &config,
        "[[admin_tokens]]\nname = \"ops\"\nscope = \"full\"\ntoken = \"ops-token-0123456789abcdefghij\"\n",
    )
    .unwrap();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut server = common::serve_process(port)
        .current_dir(dir.path())
        .env("LICENSOR_CONFIG", &config)
        .env("RUST_LOG", "info")
        .spawn()
        .unwrap();
    let client = reqwest::blocking::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
    wait_until_up(&base, &client);
    let listing = |token: &str| {
        client.get(format!("{base}/v1/admin/licenses")).bearer_auth(token).send().unwrap().status().as_u16()
    };
    assert_eq!(listing("ops-token-0123456789abcdefghij"), 200);
    assert!(!dir.path().join("data/admin-token").exists(), "no token was written");
    let kill = Command::new("kill").args(["-TERM", &server.id().to_string()]).status().unwrap();
    assert!(kill.success());
    let mut stderr = String::new();
    server.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    server.wait().unwrap();
    assert!(stderr.contains("only the named admin tokens are accepted"), "{stderr}");
    for generated in ["the admin token:", "generated admin token", "lsa_"] {
        assert!(!stderr.contains(generated), "no token is generated or printed: {stderr}");
    }
}

/// Dashboard sessions answer to the tokens configured now: across restarts, a narrowed scope
/// narrows a session, a rotated or removed token ends it; `DELETE /v1/admin/sessions` and the
/// "sign out everywhere" button end them all, audited.
#[cfg(unix)]
#[test]
fn sessions_follow_their_tokens_across_restarts() {
    let dir = tempfile::TempDir::new().unwrap();
    let config = dir.path().join("licensor.toml");
    let named = |tokens: &[(&str, &str, &str)]| {
        let mut text = String::from("admin_token = \"main-admin-token-0123456789abcdef\"\n");
        for (name, scope, token) in tokens {
            text.push_str(&format!(
                "[[admin_tokens]]\nname = \"{name}\"\nscope = \"{scope}\"\ntoken = \"{token}\"\n"
            ));
        }
        std::fs::write(&config, text).unwrap();
    };
    let start = || {
        let port = free_port();
        let server = common::serve_process(port)
            .current_dir(dir.path())
            .env("LICENSOR_CONFIG", &config)
            .spawn()
            .unwrap();
        let base = format!("http://127.0.0.1:{port}");
        wait_until_up(&base, &reqwest::blocking::Client::new());
        (server, base)
    };
    let stop = |mut server: std::process::Child| {
        Command::new("kill").args(["-TERM", &server.id().to_string()]).status().unwrap();
        server.wait().unwrap();
    };
    let client =
        reqwest::blocking::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let sign_in = |base: &str, token: &str| -> String {
        let r = client.post(format!("{base}/admin/sign-in")).form(&[("token", token)]).send().unwrap();
        assert_eq!(r.status().as_u16(), 303, "{token}");
        r.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_owned()
    };
    // The page's status and, when it answers, its form token.
    let page = |base: &str, cookie: &str| -> (u16, Option<String>) {
        let r = client.get(format!("{base}/admin/licenses")).header("cookie", cookie).send().unwrap();
        let status = r.status().as_u16();
        let html = r.text().unwrap();
        let csrf = html.find("name=\"csrf\" value=\"").map(|at| {
            let rest = &html[at + 19..];
            rest[..rest.find('"').unwrap()].to_owned()
        });
        (status, csrf)
    };
    let post = |base: &str, cookie: &str, path: &str, csrf: &str| -> u16 {
        client
            .post(format!("{base}{path}"))
            .header("cookie", cookie)
            .header("origin", base)
            .form(&[("csrf", csrf)])
            .send()
            .unwrap()
            .status()
            .as_u16()
    };
    let main = "main-admin-token-0123456789abcdef";

    named(&[
        ("ops", "full", "ops-token-0123456789abcdefghij"),
        ("aud", "full", "aud-token-0123456789abcdefghij"),
    ]);
    let (server, base) = start();
    let ops = sign_in(&base, "ops-token-0123456789abcdefghij");
    let aud = sign_in(&base, "aud-token-0123456789abcdefghij");
    let spare = sign_in(&base, "ops-token-0123456789abcdefghij");
    stop(server);

    // ops narrowed to read, aud rotated: ops reads but may not change; aud is signed out.
    named(&[
        ("ops", "read", "ops-token-0123456789abcdefghij"),
        ("aud", "full", "aud-token-rotated-0123456789abc"),
    ]);
    let (server, base) = start();
    let (status, csrf) = page(&base, &ops);
    assert_eq!(status, 200);
    assert_eq!(
        post(&base, &ops, "/admin/sign-out-everywhere", &csrf.unwrap()),
        403,
        "a read scope changes nothing"
    );
    assert_eq!(page(&base, &aud).0, 303, "a rotated token's session ends");
    assert_eq!(page(&base, &aud).0, 303, "and stays ended");
    stop(server);

    // ops removed: its sessions end.
    named(&[("aud", "full", "aud-token-rotated-0123456789abc")]);
    let (server, base) = start();
    assert_eq!(page(&base, &ops).0, 303, "a removed token's session ends");
    assert_eq!(page(&base, &spare).0, 303);

    // Everywhere, by the API and by the button; both audited.
    let first = sign_in(&base, "aud-token-rotated-0123456789abc");
    let second = sign_in(&base, main);
    let ended: serde_json::Value =
        client.delete(format!("{base}/v1/admin/sessions")).bearer_auth(main).send().unwrap().json().unwrap();
    assert_eq!(ended["ended"], 2, "{ended}");
    assert_eq!((page(&base, &first).0, page(&base, &second).0), (303, 303));
    let first = sign_in(&base, "aud-token-rotated-0123456789abc");
    let second = sign_in(&base, main);
    let csrf = page(&base, &second).1.unwrap();
    assert_eq!(post(&base, &second, "/admin/sign-out-everywhere", &csrf), 303);
    assert_eq!((page(&base, &first).0, page(&base, &second).0), (303, 303));
    let audit: serde_json::Value =
        client.get(format!("{base}/v1/admin/audit")).bearer_auth(main).send().unwrap().json().unwrap();
    let actions: Vec<(String, String)> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["actor"].as_str().unwrap().to_owned(), e["action"].as_str().unwrap().to_owned()))
        .collect();
    for done in [("admin", "DELETE /v1/admin/sessions"), ("admin", "POST /admin/sign-out-everywhere")] {
        assert!(actions.iter().any(|(a, b)| (a.as_str(), b.as_str()) == done), "{done:?} not in {actions:?}");
    }
    stop(server);
}
