//! `licensor serve` terminating TLS itself: an https check-in end to end with a certificate of a
//! private authority that the client trusts through `LICENSOR_CA_CERT`, the certificate
//! replaced on SIGHUP without a restart (and kept when the new files do not load), and clear
//! errors for a certificate and key that do not fit.

mod common;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose};
use std::io::Read as _;
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

fn authority(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

/// A server certificate for localhost and 127.0.0.1, signed by `ca`: (certificate, key) in PEM.
fn server_certificate(ca: &CertifiedIssuer<'static, KeyPair>) -> (String, String) {
    let params = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, ca).unwrap();
    (cert.pem(), key.serialize_pem())
}

/// Writes a file as a renewal tool does: whole, then renamed into place.
fn replace(path: &Path, text: &str) {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A client that trusts only `ca` (not the system's roots), with a new connection (a new
/// handshake) for every request: a connection already open keeps its certificate.
fn trusting(ca: &CertifiedIssuer<'static, KeyPair>) -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .pool_max_idle_per_host(0)
        .tls_certs_only([reqwest::Certificate::from_pem(ca.pem().as_bytes()).unwrap()])
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

fn ready(client: &reqwest::blocking::Client, base: &str) -> bool {
    client.get(format!("{base}/readyz")).send().is_ok_and(|r| r.status().is_success())
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn stop(mut server: Child) -> String {
    Command::new("kill").args(["-TERM", &server.id().to_string()]).status().unwrap();
    let status = server.wait().unwrap();
    let mut err = String::new();
    if let Some(mut stderr) = server.stderr.take() {
        stderr.read_to_string(&mut err).unwrap();
    }
    assert!(status.success(), "{err}");
    err
}

/// The server's log as it is written (the process's stderr, read by a thread of its own, which
/// ends when the process does).
type Tail = (std::sync::Arc<std::sync::Mutex<String>>, std::thread::JoinHandle<()>);

fn tail(server: &mut Child) -> Tail {
    let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let (mut stderr, written) = (server.stderr.take().unwrap(), log.clone());
    let reader = std::thread::spawn(move || {
        let mut buffer = [0u8; 4096];
        while let Ok(n @ 1..) = stderr.read(&mut buffer) {
            written.lock().unwrap().push_str(&String::from_utf8_lossy(&buffer[..n]));
        }
    });
    (log, reader)
}

#[cfg(unix)]
#[test]
fn https_check_in_end_to_end_and_the_certificate_reloads_on_sighup() {
    let dir = tempfile::TempDir::new().unwrap();
    let first_ca = authority("licensor test authority 1");
    let (cert, key) = server_certificate(&first_ca);
    let (cert_file, key_file) = (dir.path().join("server.crt"), dir.path().join("server.key"));
    std::fs::write(&cert_file, cert).unwrap();
    std::fs::write(&key_file, key).unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, first_ca.pem()).unwrap();

    let port = free_port();
    let base = format!("https://localhost:{port}");
    let mut server = common::serve_process(port)
        .current_dir(dir.path())
        .env("LICENSOR_TLS_CERT", &cert_file)
        .env("LICENSOR_TLS_KEY", &key_file)
        .env("LICENSOR_LOG_FORMAT", "json")
        .spawn()
        .unwrap();
    let (log, reader) = tail(&mut server);
    let first = trusting(&first_ca);
    wait_for("the https server", || ready(&first, &base));
    // Only TLS is spoken on the port.
    let plain = reqwest::blocking::get(format!("http://127.0.0.1:{port}/readyz"));
    assert!(plain.is_err() || !plain.unwrap().status().is_success(), "plain http was answered");

    // A license issued over https, and a deployment that checks in over https, trusting the
    // private authority through its configuration.
    let token = std::fs::read_to_string(dir.path().join("data/admin-token")).unwrap();
    let issued: serde_json::Value = first
        .post(format!("{base}/v1/admin/licenses"))
        .bearer_auth(token.trim())
        .json(&serde_json::json!({ "tier": "pro", "licensee": "TLS GmbH", "perpetual": true, "seats": 2 }))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let license_key = issued["license_key"].as_str().unwrap_or_else(|| panic!("{issued}")).to_owned();
    let check_in = |client_dir: &str, ca: Option<&Path>| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_licensor"));
        command
            .arg("check-in")
            .env("LICENSOR_SERVER_URL", &base)
            .env("LICENSOR_LICENSE_KEY", &license_key)
            .env("LICENSOR_KEYS_DIR", dir.path().join("data/keys"))
            .env("LICENSOR_DATA_DIR", dir.path().join(client_dir))
            .env("LICENSOR_INSTANCE_URL", "https://erp.example.org")
            .env("LICENSOR_SOFTWARE_VERSION", "3.1.0")
            .env_remove("TELEMETRY_DISABLED")
            .env_remove("DO_NOT_TRACK")
            .env_remove("LICENSOR_CA_CERT");
        if let Some(ca) = ca {
            command.env("LICENSOR_CA_CERT", ca);
        }
        let out = command.output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let (code, said) = check_in("trusting", Some(&ca_file));
    assert_eq!(code, Some(0), "an https check-in trusting the authority: {said}");
    assert!(said.contains("valid"), "{said}");
    // Without the authority the certificate is not trusted, and no answer comes.
    let (code, said) = check_in("not-trusting", None);
    assert_eq!(code, Some(2), "{said}");
    // A root certificate file that holds none is a clear error.
    let bogus = dir.path().join("bogus.pem");
    std::fs::write(&bogus, "not a certificate").unwrap();
    let (code, said) = check_in("bogus", Some(&bogus));
    assert_eq!(code, Some(2), "{said}");
    assert!(said.contains("LICENSOR_CA_CERT") && said.contains("bogus.pem"), "{said}");

    // The vendor's commands that connect trust the authority the same way.
    let vendor = |args: &[&str], ca: Option<&Path>| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_licensor"));
        command.args(args).env("LICENSOR_ADMIN_TOKEN", token.trim()).env_remove("LICENSOR_CA_CERT");
        if let Some(ca) = ca {
            command.env("LICENSOR_CA_CERT", ca);
        }
        let out = command.output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let readyz = format!("{base}/readyz");
    for ca in [Some(ca_file.as_path()), None] {
        let want = if ca.is_some() { Some(0) } else { Some(2) };
        let (code, said) = vendor(&["healthcheck", "--url", &readyz], ca);
        assert_eq!(code, want, "healthcheck, trusting {ca:?}: {said}");
        let (code, said) = vendor(&["admin", "--url", &base, "licenses"], ca);
        assert_eq!(code, want, "admin, trusting {ca:?}: {said}");
    }
    let (code, said) =
        vendor(&["healthcheck", "--url", &readyz, "--ca-cert", ca_file.to_str().unwrap()], None);
    assert_eq!(code, Some(0), "the flag: {said}");

    // A renewed certificate from another authority: served after SIGHUP, not before.
    let second_ca = authority("licensor test authority 2");
    let second = trusting(&second_ca);
    let (cert, key) = server_certificate(&second_ca);
    replace(&cert_file, &cert);
    replace(&key_file, &key);
    assert!(!ready(&second, &base), "the new certificate was served before SIGHUP");
    assert!(ready(&first, &base));
    Command::new("kill").args(["-HUP", &server.id().to_string()]).status().unwrap();
    wait_for("the reloaded certificate", || ready(&second, &base));
    assert!(!ready(&first, &base), "the old certificate is still served");

    // A reload that fails (a certificate half-written) keeps the certificate in use.
    replace(&cert_file, "-----BEGIN CERTIFICATE-----\nAAAA\n");
    Command::new("kill").args(["-HUP", &server.id().to_string()]).status().unwrap();
    // The server says when it has handled the signal; then the certificate in use is asked for.
    let refused = "TLS certificate not reloaded; the previous one stays in use";
    wait_for("the failed reload to be logged", || log.lock().unwrap().contains(refused));
    assert!(ready(&second, &base), "a failed reload must keep the certificate in use");

    stop(server);
    reader.join().unwrap();
    let log = log.lock().unwrap().clone();
    let lines: Vec<serde_json::Value> = log.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let messages: Vec<&str> = lines.iter().filter_map(|l| l["message"].as_str()).collect();
    assert!(messages.contains(&"TLS certificate reloaded (SIGHUP)"), "{log}");
    let failed = lines.iter().find(|l| l["message"] == refused).unwrap_or_else(|| panic!("{log}"));
    assert!(failed["error"].as_str().unwrap().contains("server.crt"), "{failed}");
    assert!(lines.iter().any(|l| l["message"] == "licensor server listening" && l["scheme"] == "https"));
}

#[test]
fn a_certificate_and_key_that_do_not_fit_are_refused_at_start() {
    let dir = tempfile::TempDir::new().unwrap();
    let ca = authority("licensor test authority");
    let (cert, _key) = server_certificate(&ca);
    let (_other_cert, other_key) = server_certificate(&ca);
    std::fs::write(dir.path().join("server.crt"), cert).unwrap();
    std::fs::write(dir.path().join("other.key"), other_key).unwrap();
    std::fs::write(dir.path().join("empty.crt"), "").unwrap();
    let run = |args: &[&str], env: &[(&str, &str)]| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_licensor"));
        command.arg("serve").args(["--bind", "127.0.0.1:0"]).args(args).current_dir(dir.path());
        command.env_remove("LICENSOR_TLS_CERT").env_remove("LICENSOR_TLS_KEY").env_remove("DATABASE_URL");
        for (k, v) in env {
            command.env(k, v);
        }
        let out = command.output().unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (code, err) = run(&[], &[("LICENSOR_TLS_CERT", "server.crt"), ("LICENSOR_TLS_KEY", "other.key")]);
    assert_eq!(code, Some(2));
    assert!(
        err.contains(
            "error: LICENSOR_TLS_KEY: private key other.key does not belong to the certificate server.crt"
        ),
        "{err}"
    );
    let (code, err) = run(&["--tls-cert", "empty.crt", "--tls-key", "other.key"], &[]);
    assert_eq!(code, Some(2));
    assert!(err.contains("error: --tls-cert: certificate empty.crt: no PEM certificate"), "{err}");
    let (code, err) = run(&["--tls-cert", "server.crt"], &[]);
    assert_eq!(code, Some(2));
    assert!(err.contains("error: --tls-cert: needs the certificate's key as well (tls_key)"), "{err}");
    let (code, err) = run(&[], &[("LICENSOR_TLS_KEY", "missing.key"), ("LICENSOR_TLS_CERT", "server.crt")]);
    assert_eq!(code, Some(2));
    assert!(err.contains("error: LICENSOR_TLS_KEY: private key missing.key: "), "{err}");
    // Nothing of a development set-up stays behind after a start refused this way.
    assert!(!dir.path().join("data").exists());
}

/// The private authority recipe in docs/operations.md, run as written (with `localhost` for the
/// name): the server serves the certificate it makes, and a client trusting the authority
/// (`licensor healthcheck --ca-cert`) connects; a lone self-signed certificate trusted as its own
/// authority is refused, as the guide says.
#[test]
fn the_guides_private_authority_makes_a_certificate_rustls_accepts() {
    let guide = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/operations.md")).unwrap();
    let block = guide
        .split("<!-- private-ca -->\n```sh\n")
        .nth(1)
        .and_then(|rest| rest.split("\n```").next())
        .expect("docs/operations.md has the private-ca block");
    assert!(block.starts_with("NAME=licensor.internal"), "{block}");
    let script = block.replacen("NAME=licensor.internal", "NAME=localhost", 1);
    let dir = tempfile::TempDir::new().unwrap();
    let out = Command::new("bash")
        .args(["-euo", "pipefail", "-c", &script])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "the guide's commands failed: {}", String::from_utf8_lossy(&out.stderr));
    // A certificate that is its own authority, as `openssl req -x509` makes by default.
    let out = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "30",
        ])
        .args(["-keyout", "lone.key", "-out", "lone.pem", "-subj", "/CN=localhost"])
        .args(["-addext", "subjectAltName=DNS:localhost"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let check = |(cert, key): (&str, &str), trusted: &str| {
        let port = free_port();
        let server = common::serve_process(port)
            .env("LICENSOR_TLS_CERT", dir.path().join(cert))
            .env("LICENSOR_TLS_KEY", dir.path().join(key))
            .current_dir(dir.path())
            .spawn()
            .unwrap();
        let health = || {
            Command::new(env!("CARGO_BIN_EXE_licensor"))
                .args(["healthcheck", "--url", &format!("https://localhost:{port}/healthz")])
                .arg("--ca-cert")
                .arg(dir.path().join(trusted))
                .env_remove("LICENSOR_CA_CERT")
                .output()
                .unwrap()
        };
        // The server listens once a plain connection is taken; then the handshake decides.
        wait_for("the server to listen", || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
        let mut out = health();
        let deadline = Instant::now() + Duration::from_secs(20);
        while out.status.code() == Some(2) && !String::from_utf8_lossy(&out.stderr).contains("certificate") {
            assert!(Instant::now() < deadline, "{}", String::from_utf8_lossy(&out.stderr));
            std::thread::sleep(Duration::from_millis(50));
            out = health();
        }
        stop(server);
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    assert_eq!(check(("server.pem", "server.key"), "ca.pem").0, Some(0));
    let (code, err) = check(("lone.pem", "lone.key"), "lone.pem");
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("CaUsedAsEndEntity"), "{err}");
}
