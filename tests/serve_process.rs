//! `licensor serve` as an operator runs it: the real binary in an empty directory, with no
//! configuration, stopped with SIGTERM while requests are in flight.

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
