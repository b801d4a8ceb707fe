//! The vendor CLI as a vendor runs it: the real `licensor` binary, real files, exit codes.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use tempfile::TempDir;

const EXIT_NOT_VALID: i32 = 1;
const EXIT_ERROR: i32 = 2;

fn licensor(args: &[&str]) -> Output {
    licensor_with_stdin(args, None)
}

fn licensor_with_stdin(args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_licensor"))
        .args(args)
        // The environment must not leak into the tests' expectations.
        .env_remove("LICENSOR_KEYS_DIR")
        .env_remove("LICENSOR_ISSUING_KEY")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the licensor binary runs");
    let mut pipe = child.stdin.take().unwrap();
    if let Some(bytes) = stdin {
        // A child that stops reading early (it refused the input) closes the pipe: fine.
        let _ = pipe.write_all(bytes);
    }
    drop(pipe);
    child.wait_with_output().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8(o.stderr.clone()).unwrap()
}

fn code(o: &Output) -> i32 {
    o.status.code().expect("exited, not killed")
}

/// A vendor's key directory with one pair, `vendor-1`.
struct Vendor {
    dir: TempDir,
}

impl Vendor {
    fn new() -> Vendor {
        let dir = TempDir::new().unwrap();
        let out = licensor(&["keygen", "--kid", "vendor-1", "--out-dir", dir.path().to_str().unwrap()]);
        assert_eq!(code(&out), 0, "{}", stderr(&out));
        Vendor { dir }
    }

    fn keys(&self) -> &str {
        self.dir.path().to_str().unwrap()
    }

    fn private_key(&self) -> String {
        self.dir.path().join("vendor-1.license.private.pem").to_str().unwrap().to_owned()
    }

    fn issue(&self, extra: &[&str]) -> Output {
        let key = self.private_key();
        let mut args = vec!["issue", "--private-key", &key];
        args.extend_from_slice(extra);
        licensor(&args)
    }

    fn issue_json(&self, extra: &[&str]) -> serde_json::Value {
        let mut args = extra.to_vec();
        args.push("--json");
        let out = self.issue(&args);
        assert_eq!(code(&out), 0, "{}", stderr(&out));
        serde_json::from_str(&stdout(&out)).unwrap()
    }

    fn inspect(&self, key: &str, extra: &[&str]) -> Output {
        let mut args = vec!["inspect", key, "--keys", self.keys()];
        args.extend_from_slice(extra);
        licensor(&args)
    }
}

fn inspect_json(out: &Output) -> serde_json::Value {
    serde_json::from_str(&stdout(out)).unwrap_or_else(|e| panic!("{e}: {}", stdout(out)))
}

#[test]
fn keygen_writes_a_0600_private_key_and_refuses_to_overwrite() {
    let dir = TempDir::new().unwrap();
    let out_dir = dir.path().join("nested/keys");
    let out = licensor(&["keygen", "--kid", "acme-2026", "--out-dir", out_dir.to_str().unwrap()]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let private = out_dir.join("acme-2026.license.private.pem");
    let public = out_dir.join("acme-2026.license.public.pem");
    let printed = stdout(&out);
    assert!(printed.contains(private.to_str().unwrap()) && printed.contains(public.to_str().unwrap()));
    let private_pem = std::fs::read_to_string(&private).unwrap();
    assert!(private_pem.starts_with("-----BEGIN PRIVATE KEY-----"), "PKCS#8: {private_pem}");
    assert!(std::fs::read_to_string(&public).unwrap().starts_with("-----BEGIN PUBLIC KEY-----"));
    assert!(!printed.contains("PRIVATE KEY") && !stderr(&out).contains("PRIVATE KEY"), "never print the key");

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(std::fs::metadata(&private).unwrap().permissions().mode() & 0o777, 0o600);
    }

    let again = licensor(&["keygen", "--kid", "acme-2026", "--out-dir", out_dir.to_str().unwrap()]);
    assert_eq!(code(&again), EXIT_ERROR);
    assert!(stderr(&again).contains("already exists"), "{}", stderr(&again));
    assert_eq!(std::fs::read_to_string(&private).unwrap(), private_pem, "the old key is untouched");

    // A lease key for the license server: named for its role, refused for issuing.
    let lease =
        licensor(&["keygen", "--kid", "server-1", "--role", "lease", "--out-dir", out_dir.to_str().unwrap()]);
    assert_eq!(code(&lease), 0, "{}", stderr(&lease));
    let lease_private = out_dir.join("server-1.lease.private.pem");
    assert!(lease_private.exists() && out_dir.join("server-1.lease.public.pem").exists());
    let refused = licensor(&[
        "issue",
        "--private-key",
        lease_private.to_str().unwrap(),
        "--tier",
        "pro",
        "--licensee",
        "Mallory",
        "--perpetual",
    ]);
    assert_eq!(code(&refused), EXIT_ERROR);
    assert!(
        stderr(&refused).contains("a lease key") || stderr(&refused).contains("license key is needed"),
        "{}",
        stderr(&refused)
    );
    let bad_role =
        licensor(&["keygen", "--kid", "x", "--role", "admin", "--out-dir", out_dir.to_str().unwrap()]);
    assert_eq!(code(&bad_role), EXIT_ERROR);

    // Only the public half left behind still blocks a new pair under that id.
    std::fs::remove_file(&private).unwrap();
    let again = licensor(&["keygen", "--kid", "acme-2026", "--out-dir", out_dir.to_str().unwrap()]);
    assert_eq!(code(&again), EXIT_ERROR);
    assert!(!private.exists(), "nothing written on refusal");
}

#[test]
fn keygen_rejects_a_bad_kid() {
    let dir = TempDir::new().unwrap();
    let out = licensor(&["keygen", "--kid", "../escape", "--out-dir", dir.path().to_str().unwrap()]);
    assert_eq!(code(&out), EXIT_ERROR);
    assert!(stderr(&out).contains("invalid key id"), "{}", stderr(&out));
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn issue_and_inspect_round_trip_for_every_tier() {
    let vendor = Vendor::new();
    for tier in ["community", "pro", "enterprise"] {
        let issued = vendor.issue_json(&[
            "--tier",
            tier,
            "--licensee",
            "Acme Corp",
            "--expires",
            "2099-01-01",
            "--seats",
            "7",
            "--feature",
            "sso",
            "--feature",
            "reports",
        ]);
        let key = issued["license_key"].as_str().unwrap();
        assert!(key.starts_with("LIC1.") && !key.contains(char::is_whitespace));
        let payload = &issued["payload"];
        assert_eq!(payload["tier"], tier);
        assert_eq!(payload["licensee"], "Acme Corp");
        assert_eq!(payload["expires_at"], "2099-01-01T00:00:00Z");
        assert_eq!(payload["seats"], 7);
        assert_eq!(payload["features"], serde_json::json!(["reports", "sso"]));
        assert_eq!(payload["kid"], "vendor-1");

        // Plain output is the key alone, on one line.
        let plain = vendor.issue(&["--tier", tier, "--licensee", "Acme Corp", "--expires", "2099-01-01"]);
        assert_eq!(code(&plain), 0);
        let line = stdout(&plain);
        assert_eq!(line.lines().count(), 1);
        assert!(line.starts_with("LIC1."));

        let out = vendor.inspect(key, &[]);
        assert_eq!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));
        assert!(stdout(&out).starts_with("verdict: valid\n"), "{}", stdout(&out));
        let out = vendor.inspect(key, &["--json"]);
        let report = inspect_json(&out);
        assert_eq!(report["verdict"], "valid");
        assert_eq!(&report["payload"], payload);
    }
}

#[test]
fn inspect_reads_the_key_from_stdin() {
    let vendor = Vendor::new();
    let issued = vendor.issue_json(&["--tier", "pro", "--licensee", "X", "--expires", "2099-01-01"]);
    let key = format!("{}\n", issued["license_key"].as_str().unwrap());
    let out = licensor_with_stdin(&["inspect", "-", "--keys", vendor.keys(), "--json"], Some(key.as_bytes()));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(inspect_json(&out)["verdict"], "valid");

    // A megabyte of garbage on stdin is a verdict, not a crash.
    let garbage: Vec<u8> = (0..1 << 20).map(|i| (i * 7 % 251) as u8).collect();
    let out = licensor_with_stdin(&["inspect", "-", "--keys", vendor.keys(), "--json"], Some(&garbage));
    assert_eq!(code(&out), EXIT_NOT_VALID, "{}", stderr(&out));
    assert_eq!(inspect_json(&out)["verdict"], "malformed");
}

#[test]
fn inspect_gives_each_verdict_with_exit_code_one() {
    let vendor = Vendor::new();
    let issued = vendor.issue_json(&[
        "--tier",
        "pro",
        "--licensee",
        "X",
        "--not-before",
        "2098-01-01",
        "--expires",
        "2099-01-01T00:00:00Z",
    ]);
    let key = issued["license_key"].as_str().unwrap().to_owned();
    let verdict_of = |out: &Output| {
        assert_eq!(code(out), EXIT_NOT_VALID, "{}{}", stdout(out), stderr(out));
        inspect_json(out)["verdict"].as_str().unwrap().to_owned()
    };

    assert_eq!(verdict_of(&vendor.inspect(&key, &["--json"])), "not_yet_valid");
    let valid = vendor.inspect(&key, &["--json", "--at", "2098-01-01"]);
    assert_eq!(code(&valid), 0, "the not-before instant itself is valid");
    assert_eq!(verdict_of(&vendor.inspect(&key, &["--json", "--at", "2099-01-01"])), "expired");

    let mut tampered = key.clone().into_bytes();
    let i = tampered.len() - 5;
    tampered[i] = if tampered[i] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    let out = vendor.inspect(&tampered, &["--json", "--at", "2098-06-01"]);
    assert_eq!(verdict_of(&out), "bad_signature");
    assert_eq!(inspect_json(&out)["payload"]["licensee"], "X", "the payload is shown even when refused");

    let other = TempDir::new().unwrap();
    let other_keys = other.path().to_str().unwrap();
    assert_eq!(code(&licensor(&["keygen", "--kid", "someone-else", "--out-dir", other_keys])), 0);
    let out = licensor(&["inspect", &key, "--keys", other_keys, "--at", "2098-06-01"]);
    assert_eq!(code(&out), EXIT_NOT_VALID);
    assert!(stdout(&out).starts_with("verdict: unknown_key\n"), "{}", stdout(&out));

    assert_eq!(verdict_of(&vendor.inspect("LIC1.garbage", &["--json"])), "malformed");
    assert_eq!(
        verdict_of(&vendor.inspect(&key.replacen("LIC1.", "LIC9.", 1), &["--json"])),
        "unsupported_version"
    );
}

#[test]
fn inspect_without_a_key_ring_is_an_io_error() {
    let out = licensor(&["inspect", "LIC1.x.y", "--keys", "/nonexistent/licensor-keys"]);
    assert_eq!(code(&out), EXIT_ERROR);
    // The path and the cause, each said once.
    assert_eq!(
        stderr(&out).trim_end(),
        "error: loading the key ring: /nonexistent/licensor-keys: No such file or directory (os error 2)"
    );
}

/// A reader that goes away (`| head`, `| true`) ends the output: exit 0, no panic, whatever
/// the command. The read end is closed before the command writes anything.
#[test]
fn a_closed_pipe_ends_the_output_quietly() {
    let vendor = Vendor::new();
    let key = vendor.issue_json(&["--tier", "pro", "--licensee", "X", "--expires", "2099-01-01"])
        ["license_key"]
        .as_str()
        .unwrap()
        .to_owned();
    let demo_dir = TempDir::new().unwrap();
    for args in [
        vec!["inspect", key.as_str(), "--keys", vendor.keys()],
        vec!["inspect", key.as_str(), "--keys", vendor.keys(), "--json"],
        vec!["demo", "--dir", demo_dir.path().to_str().unwrap()],
        vec!["--help"],
    ] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = Command::new(env!("CARGO_BIN_EXE_licensor"))
            .args(&args)
            .stdout(writer)
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        assert_eq!(code(&out), 0, "{args:?}: {}", stderr(&out));
        assert!(!stderr(&out).contains("panicked"), "{args:?}: {}", stderr(&out));
    }
}

#[test]
fn issue_options_perpetual_and_check_in_interval() {
    let vendor = Vendor::new();
    let issued = vendor.issue_json(&["--tier", "enterprise", "--licensee", "Forever", "--perpetual"]);
    assert_eq!(issued["payload"]["expires_at"], serde_json::Value::Null);
    assert_eq!(code(&vendor.inspect(issued["license_key"].as_str().unwrap(), &["--at", "2999-01-01"])), 0);

    let issued = vendor.issue_json(&[
        "--tier",
        "community",
        "--licensee",
        "X",
        "--expires",
        "2099-01-01",
        "--check-in-interval",
        "12h",
    ]);
    assert_eq!(issued["payload"]["check_in_interval_s"], 43_200);
}

#[test]
fn issue_usage_errors_exit_with_two() {
    let vendor = Vendor::new();
    for (args, needle) in [
        (&["--tier", "pro", "--licensee", "X"][..], "--expires"),
        (&["--tier", "pro", "--licensee", "X", "--expires", "2099-01-01", "--perpetual"][..], "--perpetual"),
        (&["--tier", "gold", "--licensee", "X", "--expires", "2099-01-01"][..], "unknown tier"),
        (&["--tier", "pro", "--licensee", "X", "--expires", "tomorrow"][..], "not a date"),
        (&["--tier", "pro", "--licensee", "X", "--expires", "2001-01-01"][..], "not in the future"),
        (&["--tier", "pro", "--licensee", "X", "--expires", "2099-01-01", "--seats", "0"][..], "seats"),
        (
            &["--tier", "pro", "--licensee", "X", "--expires", "2099-01-01", "--check-in-interval", "1m"][..],
            "1 hour",
        ),
    ] {
        let out = vendor.issue(args);
        assert_eq!(code(&out), EXIT_ERROR, "{args:?}");
        assert!(stderr(&out).contains(needle), "{args:?}: {}", stderr(&out));
        assert!(stdout(&out).is_empty(), "{args:?}: no key on failure");
    }
    let out = licensor(&[
        "issue",
        "--private-key",
        "/nonexistent/k.private.pem",
        "--tier",
        "pro",
        "--licensee",
        "X",
        "--perpetual",
    ]);
    assert_eq!(code(&out), EXIT_ERROR);
    assert!(stderr(&out).contains("/nonexistent/k.private.pem"), "{}", stderr(&out));
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn bulk_issue_writes_every_row_with_its_license() {
    let vendor = Vendor::new();
    let work = TempDir::new().unwrap();
    let input = write(
        work.path(),
        "customers.csv",
        "licensee,tier,expires,not_before,seats,features\n\
         Acme Corp,pro,2099-01-01,,5,sso;reports\n\
         \"Smith, Jones & Co\",community,2099-06-30T12:00:00Z,2026-01-01,,\n\
         Big Bank,enterprise,perpetual,,100,audit-log\n",
    );
    let output = work.path().join("licenses.csv");
    let out = vendor.issue(&["--from", input.to_str().unwrap(), "--out", output.to_str().unwrap()]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(stderr(&out).contains("issued 3 licenses"), "{}", stderr(&out));

    let mut reader = csv::Reader::from_path(&output).unwrap();
    let headers: Vec<String> = reader.headers().unwrap().iter().map(str::to_owned).collect();
    assert_eq!(
        headers,
        ["licensee", "tier", "expires", "not_before", "seats", "features", "license_id", "license_key"]
    );
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), 3);
    let expected = [
        (
            "Acme Corp",
            "pro",
            serde_json::json!("2099-01-01T00:00:00Z"),
            5,
            serde_json::json!(["reports", "sso"]),
        ),
        (
            "Smith, Jones & Co",
            "community",
            serde_json::json!("2099-06-30T12:00:00Z"),
            1,
            serde_json::json!([]),
        ),
        ("Big Bank", "enterprise", serde_json::Value::Null, 100, serde_json::json!(["audit-log"])),
    ];
    let mut ids = std::collections::HashSet::new();
    for (row, (licensee, tier, expires, seats, features)) in rows.iter().zip(expected) {
        assert_eq!(&row[0], licensee);
        let report = inspect_json(&vendor.inspect(&row[7], &["--json", "--at", "2027-01-01"]));
        assert_eq!(report["verdict"], "valid", "{report}");
        let payload = &report["payload"];
        assert_eq!(payload["license_id"], row[6].to_string());
        assert_eq!(payload["licensee"], licensee);
        assert_eq!(payload["tier"], tier);
        assert_eq!(payload["expires_at"], expires);
        assert_eq!(payload["seats"], seats);
        assert_eq!(payload["features"], features);
        assert!(ids.insert(row[6].to_string()), "license ids are unique");
    }
    assert_eq!(rows[1][3].to_string(), "2026-01-01");

    // Running it again must not clobber what was already sent to customers.
    let again = vendor.issue(&["--from", input.to_str().unwrap(), "--out", output.to_str().unwrap()]);
    assert_eq!(code(&again), EXIT_ERROR);
    assert!(stderr(&again).contains("already exists"), "{}", stderr(&again));
}

#[test]
fn bulk_issue_names_every_bad_row_and_writes_nothing() {
    let vendor = Vendor::new();
    let work = TempDir::new().unwrap();
    let input = write(
        work.path(),
        "customers.csv",
        "licensee,tier,expires,seats,features\n\
         Good Corp,pro,2099-01-01,3,sso\n\
         Bad Tier,gold,2099-01-01,3,\n\
         Bad Date,pro,someday,3,\n\
         Bad Seats,pro,2099-01-01,many,\n\
         ,pro,2099-01-01,1,\n\
         Bad Feature,pro,2099-01-01,1,has space\n\
         Short Row,pro\n\
         Long Row,pro,2099-01-01,1,sso,extra\n",
    );
    let output = work.path().join("licenses.csv");
    let out = vendor.issue(&["--from", input.to_str().unwrap(), "--out", output.to_str().unwrap()]);
    assert_eq!(code(&out), EXIT_ERROR);
    let err = stderr(&out);
    for needle in [
        "7 bad row(s), nothing written",
        "line 3, column tier: unknown tier \"gold\"",
        "line 4, column expires: \"someday\" is not a date",
        "line 5, column seats: \"many\" is not a whole number",
        "line 6, column licensee: licensee: must not be empty",
        "line 7, column features: features: \"has space\"",
        "line 8: 2 fields where the header has 5",
        "line 9: 6 fields where the header has 5",
    ] {
        assert!(err.contains(needle), "missing {needle:?} in:\n{err}");
    }
    assert!(!err.contains("line 2"), "the good row is not blamed:\n{err}");
    assert!(!output.exists());
    let leftovers: Vec<_> = std::fs::read_dir(work.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(leftovers.len(), 1, "no temporary file left: {leftovers:?}");
}

#[test]
fn bulk_issue_rejects_bad_headers_and_ragged_rows() {
    let vendor = Vendor::new();
    let work = TempDir::new().unwrap();
    let output = work.path().join("out.csv");
    for (text, needle) in [
        ("licensee,tier,expires,not_befor\nX,pro,2099-01-01,\n", "unknown column \"not_befor\""),
        ("licensee,tier\nX,pro\n", "required column \"expires\" is missing"),
        ("licensee,tier,expires,tier\nX,pro,2099-01-01,pro\n", "\"tier\" appears twice"),
        ("licensee,tier,expires\nX,pro,2099-01-01,extra\n", "line 2: 4 fields where the header has 3"),
        ("licensee,tier,expires\n", "no rows"),
    ] {
        let input = write(work.path(), "in.csv", text);
        let out = vendor.issue(&["--from", input.to_str().unwrap(), "--out", output.to_str().unwrap()]);
        assert_eq!(code(&out), EXIT_ERROR, "{text}");
        assert!(stderr(&out).contains(needle), "{text}: {}", stderr(&out));
        assert!(!output.exists());
    }
}

#[test]
fn demo_runs_the_vendor_flow() {
    let dir = TempDir::new().unwrap();
    let keys = dir.path().join("demo");
    let out = licensor(&["demo", "--dir", keys.to_str().unwrap()]);
    assert_eq!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));
    let text = stdout(&out);
    assert_eq!(text.matches("verdict: valid").count(), 3, "{text}");
    assert_eq!(text.matches("tampered copy: bad_signature").count(), 3, "{text}");
}

/// Every flag and argument of every command says what it is for in `--help`.
#[test]
fn every_flag_of_every_command_has_help_text() {
    use clap::CommandFactory as _;
    fn walk(command: &clap::Command, path: &str, missing: &mut Vec<String>) {
        for arg in command.get_arguments() {
            let id = arg.get_id().as_str();
            if id != "help" && id != "version" && arg.get_help().is_none() && arg.get_long_help().is_none() {
                missing.push(format!("{path} {id}"));
            }
        }
        for sub in command.get_subcommands() {
            walk(sub, &format!("{path} {}", sub.get_name()), missing);
        }
    }
    let mut missing = Vec::new();
    walk(&licensor::cli::Cli::command(), "licensor", &mut missing);
    assert!(missing.is_empty(), "without help text: {missing:?}");
}
