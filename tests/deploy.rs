//! The files in `deploy/`, exercised as far as these machines allow: the systemd unit is
//! verified and rated by `systemd-analyze`, the Kubernetes manifests are validated against the
//! Kubernetes schemas (`kubernetes-validate`, from PyPI), and the container's entry point runs
//! as the image and the compose file configure it (there is no container engine here to run
//! the image itself).
//!
//! A tool that is missing skips its test with a loud notice, unless
//! `LICENSOR_REQUIRE_DEPLOY_CHECKS=1` (as `.ci/run` sets), which makes it fail instead.

mod common;

use std::collections::BTreeMap;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn deploy(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy").join(file)
}

/// The tool's path, or `None` with a loud notice (or a failure where the checks are required).
fn tool(name: &str, env: &str) -> Option<PathBuf> {
    let found = std::env::var_os(env).map(PathBuf::from).or_else(|| {
        std::env::var_os("PATH")?
            .to_str()?
            .split(':')
            .map(|dir| Path::new(dir).join(name))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        if std::env::var("LICENSOR_REQUIRE_DEPLOY_CHECKS").as_deref() == Ok("1") {
            panic!(
                "{name} is required (LICENSOR_REQUIRE_DEPLOY_CHECKS=1) but is neither at ${env} nor on PATH"
            );
        }
        eprintln!(
            "\n!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n\
             !!! SKIPPED: a check of deploy/ that needs {name} (not found; set ${env}).\n\
             !!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n"
        );
    }
    found
}

/// `systemd-analyze verify` accepts the unit (with the binary where it will be installed taken
/// from this build), and `systemd-analyze security --offline=yes` rates it 2.0 ("OK") at most.
#[test]
fn the_systemd_unit_verifies_and_is_rated_ok() {
    let Some(analyze) = tool("systemd-analyze", "LICENSOR_SYSTEMD_ANALYZE") else { return };
    let unit = std::fs::read_to_string(deploy("systemd/licensor.service")).unwrap();
    assert!(unit.contains("ExecStart=/usr/local/bin/licensor serve"), "the unit runs `licensor serve`");
    // verify checks that the command exists: the one built here stands in for the installed one.
    let dir = tempfile::TempDir::new().unwrap();
    let copy = dir.path().join("licensor.service");
    std::fs::write(&copy, unit.replace("/usr/local/bin/licensor", env!("CARGO_BIN_EXE_licensor"))).unwrap();
    let out = Command::new(&analyze).arg("verify").arg(&copy).output().unwrap();
    let said = String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "systemd-analyze verify: {said}");
    assert!(!said.contains("licensor.service:"), "verify found something to say about the unit: {said}");

    let out = Command::new(&analyze)
        .args(["security", "--offline=yes"])
        .arg(deploy("systemd/licensor.service"))
        .output();
    let out = out.unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.contains("Overall exposure level for licensor.service"))
        .unwrap_or_else(|| panic!("no rating: {text} {}", String::from_utf8_lossy(&out.stderr)));
    let level: f64 =
        line.split(": ").nth(1).and_then(|r| r.split_whitespace().next()).unwrap().parse().unwrap();
    assert!(level <= 2.0, "rated {level}, over 2.0: {line}");
}

/// Every manifest validates strictly (unknown fields are errors) against the Kubernetes schemas,
/// and they hold what a production deployment needs: two replicas, probes on /readyz and
/// /healthz, requests, a disruption budget, secrets as files.
#[test]
fn the_kubernetes_manifests_match_the_schemas() {
    let manifests = [
        "namespace.yaml",
        "secret.yaml",
        "keys.yaml",
        "postgres.yaml",
        "deployment.yaml",
        "service.yaml",
        "pdb.yaml",
    ];
    let kustomization = std::fs::read_to_string(deploy("kubernetes/kustomization.yaml")).unwrap();
    for file in manifests {
        assert!(kustomization.contains(&format!("  - {file}\n")), "kustomization.yaml does not list {file}");
    }
    let deployment = std::fs::read_to_string(deploy("kubernetes/deployment.yaml")).unwrap();
    for needed in [
        "replicas: 2",
        "path: /readyz",
        "path: /healthz",
        "requests:",
        "LICENSOR_ADMIN_TOKEN_FILE",
        "LICENSOR_DATABASE_URL_FILE",
        "readOnlyRootFilesystem: true",
        "runAsNonRoot: true",
    ] {
        assert!(deployment.contains(needed), "deployment.yaml lacks {needed:?}");
    }
    let Some(validate) = tool("kubernetes-validate", "LICENSOR_KUBERNETES_VALIDATE") else { return };
    let out = Command::new(&validate)
        .arg("--strict")
        .args(manifests.iter().map(|f| deploy(&format!("kubernetes/{f}"))))
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "kubernetes-validate: {said}");
    assert_eq!(said.matches(" passed for resource ").count(), 8, "eight resources validated: {said}");
    assert!(!said.contains("ERROR") && !said.contains("WARN"), "{said}");

    // The validator does fail a broken manifest: the check above can fail.
    let dir = tempfile::TempDir::new().unwrap();
    let broken = dir.path().join("deployment.yaml");
    std::fs::write(&broken, deployment.replace("replicas: 2", "replicas: two")).unwrap();
    let out = Command::new(&validate).arg("--strict").arg(&broken).output().unwrap();
    assert!(!out.status.success(), "a broken manifest passed");
}

/// The `ENV`, `ENTRYPOINT`, `CMD` and `HEALTHCHECK` of the Dockerfile.
struct Image {
    env: BTreeMap<String, String>,
    command: Vec<String>,
    healthcheck: Vec<String>,
}

fn json_array(text: &str) -> Vec<String> {
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("not an exec-form array ({e}): {text}"))
}

fn read_dockerfile() -> Image {
    let text = std::fs::read_to_string(deploy("Dockerfile")).unwrap().replace("\\\n", " ");
    // The runtime stage is the last one.
    let runtime = text.rsplit("\nFROM ").next().unwrap();
    let mut image = Image { env: BTreeMap::new(), command: Vec::new(), healthcheck: Vec::new() };
    let mut cmd = Vec::new();
    for line in runtime.lines() {
        if let Some(rest) = line.strip_prefix("ENV ") {
            for pair in rest.split_whitespace() {
                let (k, v) = pair.split_once('=').unwrap();
                image.env.insert(k.to_owned(), v.to_owned());
            }
        } else if let Some(rest) = line.strip_prefix("ENTRYPOINT ") {
            image.command = json_array(rest);
        } else if let Some(rest) = line.strip_prefix("CMD ") {
            cmd = json_array(rest);
        } else if let Some(rest) = line.strip_prefix("HEALTHCHECK ") {
            image.healthcheck = json_array(rest.split(" CMD ").nth(1).unwrap());
        }
    }
    image.command.extend(cmd);
    image
}

/// The licensor service's `environment` and `healthcheck.test` in compose.yaml (its layout is
/// the one this file writes: two-space indents, `KEY: value`).
fn read_compose() -> (BTreeMap<String, String>, Vec<String>) {
    let text = std::fs::read_to_string(deploy("compose.yaml")).unwrap();
    let service =
        text.split("\n  licensor:\n").nth(1).expect("a licensor service").split("\n\n").next().unwrap();
    let mut env = BTreeMap::new();
    let mut in_env = false;
    let mut test = Vec::new();
    for line in service.lines() {
        if line == "    environment:" {
            in_env = true;
            continue;
        }
        if in_env {
            match line.strip_prefix("      ") {
                Some(pair) if !pair.starts_with('#') && !pair.starts_with(' ') => {
                    let (k, v) = pair.split_once(": ").unwrap();
                    env.insert(k.to_owned(), v.to_owned());
                }
                Some(_) => {}
                None => in_env = false,
            }
        }
        if let Some(rest) = line.trim_start().strip_prefix("test: ") {
            test = json_array(rest);
            // Exec form: ["CMD", program, args...] (no shell in the image for CMD-SHELL).
            assert_eq!(test.first().map(String::as_str), Some("CMD"), "{test:?}");
            test.remove(0);
        }
    }
    (env, test)
}

/// Where the container's paths are, on this machine.
fn local_path(dir: &Path, path: &str) -> String {
    for (inside, here) in
        [("/run/secrets/", "secrets/"), ("/etc/licensor/keys", "keys"), ("/var/lib/licensor", "data")]
    {
        if let Some(rest) = path.strip_prefix(inside) {
            return dir.join(here).join(rest.trim_start_matches('/')).display().to_string();
        }
    }
    path.to_owned()
}

/// The image's entry point, configured as compose.yaml configures it (secrets as files, the
/// key ring read-only, JSON logs), serves on PostgreSQL: its health checks (the binary checks
/// itself, for the image has no shell) pass, the admin token from the file works, a check-in
/// is answered, and every log line is JSON.
#[test]
fn the_container_entry_point_serves_as_compose_configures_it() {
    let image = read_dockerfile();
    assert_eq!(image.command, ["/usr/local/bin/licensor", "serve"]);
    assert_eq!(image.healthcheck[..2], ["/usr/local/bin/licensor", "healthcheck"]);
    assert_eq!(image.env.get("LICENSOR_LOG_FORMAT").map(String::as_str), Some("json"));
    let (compose_env, compose_health) = read_compose();
    for needed in [
        "LICENSOR_DATABASE_URL_FILE",
        "LICENSOR_ADMIN_TOKEN_FILE",
        "LICENSOR_KEYS_DIR",
        "LICENSOR_SIGNING_KEY",
        "LICENSOR_ISSUING_KEY",
    ] {
        assert!(compose_env.contains_key(needed), "compose.yaml does not set {needed}");
    }
    // Every key the compose file points at is one of its secrets, mounted under its name.
    let compose = std::fs::read_to_string(deploy("compose.yaml")).unwrap();
    for setting in ["LICENSOR_SIGNING_KEY", "LICENSOR_ISSUING_KEY"] {
        let name = compose_env[setting].strip_prefix("/run/secrets/").unwrap();
        assert!(compose.contains(&format!("target: {name}")), "{setting}: no secret mounted as {name}");
        assert!(compose.contains(&format!("file: ./secrets/{name}")), "{setting}: no secret file {name}");
    }
    // The header's commands exist.
    for line in compose.lines().filter_map(|l| l.strip_prefix("#   licensor ")) {
        let args: Vec<&str> = line.split_whitespace().take_while(|a| *a != "#").collect();
        let out = Command::new(env!("CARGO_BIN_EXE_licensor")).args(&args).arg("--help").output().unwrap();
        assert!(out.status.success(), "compose.yaml's header runs `licensor {line}`, which does not exist");
    }
    let Some(schema) = common::PgSchema::create() else { return };

    // The files compose mounts: secrets, and the key ring with public keys only.
    let dir = tempfile::TempDir::new().unwrap();
    let (secrets, keys) = (dir.path().join("secrets"), dir.path().join("keys"));
    std::fs::create_dir_all(&keys).unwrap();
    std::fs::create_dir_all(dir.path().join("data")).unwrap();
    let signing = local_path(dir.path(), &compose_env["LICENSOR_SIGNING_KEY"]);
    let kid =
        Path::new(&signing).file_name().unwrap().to_str().unwrap().split('.').next().unwrap().to_owned();
    let lease = licensor::keys::Signer::generate(&kid, licensor::keys::Role::Lease).unwrap();
    lease.write_pair(&secrets).unwrap();
    std::fs::copy(
        secrets.join(format!("{kid}.lease.public.pem")),
        keys.join(format!("{kid}.lease.public.pem")),
    )
    .unwrap();
    let issuing = local_path(dir.path(), &compose_env["LICENSOR_ISSUING_KEY"]);
    let vendor_kid =
        Path::new(&issuing).file_name().unwrap().to_str().unwrap().split('.').next().unwrap().to_owned();
    let vendor = licensor::keys::Signer::generate(&vendor_kid, licensor::keys::Role::License).unwrap();
    vendor.write_pair(&secrets).unwrap();
    std::fs::copy(
        secrets.join(format!("{vendor_kid}.license.public.pem")),
        keys.join(format!("{vendor_kid}.license.public.pem")),
    )
    .unwrap();
    let token = format!("compose-token-{}", uuid::Uuid::new_v4().simple());
    std::fs::write(local_path(dir.path(), &compose_env["LICENSOR_ADMIN_TOKEN_FILE"]), format!("{token}\n"))
        .unwrap();
    std::fs::write(local_path(dir.path(), &compose_env["LICENSOR_DATABASE_URL_FILE"]), &schema.url).unwrap();

    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut command = Command::new(env!("CARGO_BIN_EXE_licensor"));
    command.args(&image.command[1..]).env_clear().env("PATH", std::env::var_os("PATH").unwrap_or_default());
    for (k, v) in image.env.iter().chain(&compose_env) {
        command.env(k, local_path(dir.path(), v));
    }
    // The container's port 8080 is this test's free port.
    command.env("LICENSOR_BIND", format!("127.0.0.1:{port}"));
    let mut server = command.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    let here = |args: &[String]| -> Vec<String> {
        args.iter().map(|a| a.replace("127.0.0.1:8080", &format!("127.0.0.1:{port}"))).collect()
    };
    let health = |args: Vec<String>| {
        Command::new(env!("CARGO_BIN_EXE_licensor")).args(&args[1..]).output().unwrap().status.code()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while health(here(&compose_health)) != Some(0) {
        if let Ok(Some(status)) = server.try_wait() {
            let mut err = String::new();
            server.stderr.take().unwrap().read_to_string(&mut err).unwrap();
            panic!("the server stopped ({status}): {err}");
        }
        if Instant::now() > deadline {
            let args = here(&compose_health);
            let out = Command::new(env!("CARGO_BIN_EXE_licensor")).args(&args[1..]).output().unwrap();
            let _ = Command::new("kill").arg(server.id().to_string()).status();
            let mut err = String::new();
            server.stderr.take().unwrap().read_to_string(&mut err).unwrap();
            panic!(
                "compose's health check never passed: {args:?}: {} {}; the server said: {err}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(health(here(&image.healthcheck)), Some(0), "the image's health check");

    let client = reqwest::blocking::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    let issued: serde_json::Value = client
        .post(format!("{base}/v1/admin/licenses"))
        .bearer_auth(&token)
        .json(&serde_json::json!({ "tier": "enterprise", "licensee": "Compose Ltd", "perpetual": true, "seats": 5 }))
        .send()
        .unwrap()
        .json()
        .unwrap();
    // The server issues with the issuing key the compose file configures, and renews.
    let key = issued["license_key"].as_str().unwrap_or_else(|| panic!("{issued}")).to_owned();
    let license_id = issued["payload"]["license_id"].as_str().unwrap();
    let renewed = client
        .patch(format!("{base}/v1/admin/licenses/{license_id}"))
        .bearer_auth(&token)
        .json(&serde_json::json!({ "seats": 6 }))
        .send()
        .unwrap();
    assert_eq!(renewed.status().as_u16(), 200);
    use base64::Engine as _;
    let answer: serde_json::Value = client
        .post(format!("{base}/v1/check-ins"))
        .json(&serde_json::json!({
            "license_key": key, "instance_id": "compose-1", "software_version": "1.0.0",
            "nonce": base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([3u8; 16]),
            "telemetry_disabled": true
        }))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(answer["status"], "valid", "{answer}");

    Command::new("kill").args(["-TERM", &server.id().to_string()]).status().unwrap();
    let status = server.wait().unwrap();
    let mut err = String::new();
    server.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert!(status.success(), "{err}");
    for line in err.lines() {
        serde_json::from_str::<serde_json::Value>(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
    }
    assert!(!err.contains(&token) && !err.contains(&key), "a secret was logged: {err}");
    assert!(!err.contains("DEVELOPMENT"), "nothing was generated: {err}");
}

/// The example configuration names every setting, beside its environment variable, and is
/// valid: uncommented, each line parses as the server's own file format (unknown keys are
/// errors there) and resolves.
#[test]
fn the_example_configuration_names_every_setting_and_parses() {
    let text = std::fs::read_to_string(deploy("licensor.example.toml")).unwrap();
    for (key, _flag, env) in licensor::server::SETTINGS {
        assert!(text.contains(&format!("\n# {key} = ")), "the example lacks {key}");
        assert!(text.contains(env), "the example does not name {env}");
    }
    assert!(text.contains("\n# jobs = ") && text.contains("\n# [limits]\n"));
    let uncommented: String = text
        .lines()
        .filter_map(|l| l.strip_prefix("# "))
        .filter(|l| {
            l.starts_with('[')
                || l.split_once(" = ")
                    .is_some_and(|(k, _)| k.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
        })
        .map(|l| format!("{l}\n"))
        .collect();
    let parsed: licensor::server::config::FileConfig =
        toml::from_str(&uncommented).unwrap_or_else(|e| panic!("{e}\n{uncommented}"));
    assert_eq!(
        parsed.limits.unwrap(),
        licensor::protocol::BatchLimits::default(),
        "the limits shown are the defaults"
    );
    assert_eq!(parsed.retention_days, Some(90));
    assert_eq!(parsed.trusted_proxies.map(|p| p.len()), Some(2));
}

/// The image's build stage gets everything cargo reads to build the binary: the manifest and
/// lock file, the build script, the sources, the embedded migrations and the targets the
/// manifest names; the ignore file lets each of them through.
#[test]
fn the_image_build_copies_what_cargo_needs() {
    let dockerfile = std::fs::read_to_string(deploy("Dockerfile")).unwrap();
    let ignore = std::fs::read_to_string(deploy("Dockerfile.dockerignore")).unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for needed in ["Cargo.toml", "Cargo.lock", "build.rs", "src", "migrations", "benches", "tests"] {
        assert!(root.join(needed).exists(), "{needed} is not in the repository");
        assert!(
            dockerfile
                .lines()
                .any(|l| l.starts_with("COPY ")
                    && l.split_whitespace().any(|w| w.trim_end_matches('/') == needed)),
            "the Dockerfile does not copy {needed}"
        );
        let allowed = if root.join(needed).is_dir() { format!("!{needed}/") } else { format!("!{needed}") };
        assert!(ignore.lines().any(|l| l.trim() == allowed), "Dockerfile.dockerignore keeps out {needed}");
    }
}
