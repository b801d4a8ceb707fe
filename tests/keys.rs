//! Key files and key rings: naming, roles, loading, refusing bad material, keeping secrets out
//! of logs, and private keys that other tools read.

use licensor::keys::{KeyError, KeyRing, Role, Signer};
use tempfile::TempDir;

#[test]
fn a_ring_loads_every_public_key_in_a_directory_with_its_role_and_nothing_else() {
    let dir = TempDir::new().unwrap();
    let a = Signer::generate("vendor-2025", Role::License).unwrap();
    let b = Signer::generate("vendor-2026", Role::License).unwrap();
    let server = Signer::generate("server-2026", Role::Lease).unwrap();
    for signer in [&a, &b, &server] {
        signer.write_pair(dir.path()).unwrap();
    }
    assert!(dir.path().join("vendor-2025.license.public.pem").exists());
    assert!(dir.path().join("server-2026.lease.private.pem").exists());
    std::fs::write(dir.path().join("README.md"), "not a key").unwrap();
    std::fs::write(dir.path().join("notes.pem"), "not a key either").unwrap();

    let ring = KeyRing::load_dir(dir.path()).unwrap();
    assert_eq!(ring.kids().collect::<Vec<_>>(), ["server-2026", "vendor-2025", "vendor-2026"]);
    assert_eq!(ring.get("vendor-2025", Role::License), Some(&a.verifying_key()));
    assert_eq!(ring.get("vendor-2026", Role::License), Some(&b.verifying_key()));
    assert_eq!(ring.get("server-2026", Role::Lease), Some(&server.verifying_key()));
    // One key, one role: each is found for its own role only.
    assert!(ring.get("server-2026", Role::License).is_none());
    assert!(ring.get("vendor-2025", Role::Lease).is_none());
    assert!(ring.get("vendor-2027", Role::License).is_none());
    assert_eq!(ring.role("server-2026"), Some(Role::Lease));
}

#[test]
fn the_old_layout_without_roles_is_refused_with_the_way_out() {
    let dir = TempDir::new().unwrap();
    let signer = Signer::generate("acme-2026", Role::License).unwrap();
    std::fs::write(dir.path().join("acme-2026.public.pem"), signer.public_pem()).unwrap();
    let err = KeyRing::load_dir(dir.path()).unwrap_err();
    assert!(matches!(&err, KeyError::NoRole { kid, .. } if kid == "acme-2026"), "{err}");
    let message = err.to_string();
    for part in ["acme-2026.public.pem", "acme-2026.license.public.pem", "acme-2026.lease.public.pem"] {
        assert!(message.contains(part), "{message}");
    }
    // A private key of the old layout, likewise.
    let private = dir.path().join("old.private.pem");
    std::fs::write(&private, "whatever").unwrap();
    assert!(matches!(Signer::load(&private), Err(KeyError::NoRole { .. })));
    // A role that does not exist is a bad name, not a role.
    std::fs::remove_file(dir.path().join("acme-2026.public.pem")).unwrap();
    std::fs::write(dir.path().join("acme-2026.admin.public.pem"), signer.public_pem()).unwrap();
    assert!(matches!(KeyRing::load_dir(dir.path()), Err(KeyError::BadFileName { .. })));
}

#[test]
fn one_key_cannot_hold_two_roles() {
    let key = Signer::generate("vendor", Role::License).unwrap();
    let mut ring = KeyRing::new();
    ring.insert_pem("vendor", Role::License, &key.public_pem()).unwrap();
    // The same material again under another id and the other role.
    let err = ring.insert_pem("server", Role::Lease, &key.public_pem()).unwrap_err();
    assert!(matches!(&err, KeyError::TwoRoles(a, b) if a == "vendor" && b == "server"), "{err}");
    // The same id with the other role.
    assert!(matches!(
        ring.insert("vendor".into(), Role::Lease, key.verifying_key()),
        Err(KeyError::DuplicateKid(_))
    ));
    // A lease key never issues a license.
    let lease = Signer::generate("server", Role::Lease).unwrap();
    let request = licensor::license::LicenseRequest {
        licensee: "Mallory".into(),
        tier: licensor::license::Tier::Enterprise,
        expiry: licensor::license::Expiry::Perpetual,
        not_before: None,
        seats: 1_000_000,
        features: vec![],
        check_in_interval: None,
    };
    assert!(matches!(
        licensor::license::issue(&lease, request, chrono::Utc::now()),
        Err(licensor::license::IssueError::NotALicenseKey { .. })
    ));
    // And loading a key for the wrong role says so.
    let dir = TempDir::new().unwrap();
    let paths = lease.write_pair(dir.path()).unwrap();
    let err = Signer::load_for(&paths.private, Role::License).unwrap_err();
    assert!(matches!(err, KeyError::WrongRole { expected: Role::License, found: Role::Lease, .. }), "{err}");
}

#[test]
fn a_signer_loads_from_its_file_with_the_kid_and_role_from_the_name() {
    let dir = TempDir::new().unwrap();
    let signer = Signer::generate("acme_1", Role::Lease).unwrap();
    let paths = signer.write_pair(dir.path()).unwrap();
    let loaded = Signer::load(&paths.private).unwrap();
    assert_eq!((loaded.kid(), loaded.role()), ("acme_1", Role::Lease));
    assert_eq!(loaded.verifying_key(), signer.verifying_key());

    // Renamed away from the KID.ROLE.private.pem pattern, it names no key id.
    let renamed = dir.path().join("acme.pem");
    std::fs::rename(&paths.private, &renamed).unwrap();
    assert!(matches!(Signer::load(&renamed), Err(KeyError::BadFileName { .. })));
}

#[test]
fn split_writing_keeps_the_private_key_out_of_the_ring() {
    let dir = TempDir::new().unwrap();
    let (private_dir, ring_dir) = (dir.path().join("private"), dir.path().join("ring"));
    let signer = Signer::generate("server", Role::Lease).unwrap();
    let paths = signer.write_split(&private_dir, &ring_dir).unwrap();
    assert_eq!(paths.private.parent().unwrap(), private_dir);
    let in_ring: Vec<String> = std::fs::read_dir(&ring_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(in_ring, ["server.lease.public.pem"]);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&private_dir), 0o700);
        assert_eq!(mode(&paths.private), 0o600);
    }
}

/// Private keys are PKCS#8 that OpenSSL 3 reads (the v2 form with the public key appended is
/// refused by it as "extra data"), and keys written by earlier builds (v2) still load.
#[test]
fn private_keys_are_pkcs8_that_openssl_reads() {
    let dir = TempDir::new().unwrap();
    let signer = Signer::generate("interop", Role::License).unwrap();
    let paths = signer.write_pair(dir.path()).unwrap();
    let out = match std::process::Command::new("openssl")
        .args(["pkey", "-in"])
        .arg(&paths.private)
        .args(["-pubout"])
        .output()
    {
        Ok(out) => out,
        Err(e) if std::env::var("CI").is_ok() => panic!("openssl is needed here: {e}"),
        Err(e) => {
            eprintln!("SKIPPED: openssl is not installed ({e}); the PKCS#8 interop check did not run");
            return;
        }
    };
    assert!(out.status.success(), "openssl refused the key: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        signer.public_pem(),
        "openssl derives the same public key"
    );

    // The old v2 form still loads.
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/keys/golden-2026.license.private.pem");
    assert_eq!(Signer::load(&fixture).unwrap().kid(), "golden-2026");
}

#[test]
fn bad_key_material_is_a_clear_error() {
    let dir = TempDir::new().unwrap();
    std::fs::write(
        dir.path().join("k1.license.public.pem"),
        "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
    )
    .unwrap();
    let err = KeyRing::load_dir(dir.path()).unwrap_err();
    assert!(matches!(&err, KeyError::BadPem { what: "public", .. }), "{err}");
    assert!(err.to_string().contains("k1.license.public.pem"), "{err}");

    let private = dir.path().join("k2.license.private.pem");
    std::fs::write(&private, "garbage").unwrap();
    assert!(matches!(Signer::load(&private), Err(KeyError::BadPem { .. })));

    // A public key where a private one is expected.
    let pair = Signer::generate("k3", Role::License).unwrap();
    std::fs::write(dir.path().join("k3.license.private.pem"), pair.public_pem()).unwrap();
    assert!(matches!(Signer::load(&dir.path().join("k3.license.private.pem")), Err(KeyError::BadPem { .. })));

    let bad_kid = dir.path().join("bad kid.license.public.pem");
    std::fs::write(&bad_kid, pair.public_pem()).unwrap();
    std::fs::remove_file(dir.path().join("k1.license.public.pem")).unwrap();
    assert!(matches!(KeyRing::load_dir(dir.path()), Err(KeyError::InvalidKid(k)) if k == "bad kid"));

    assert!(matches!(KeyRing::load_dir(&dir.path().join("missing")), Err(KeyError::Io { .. })));
}

#[test]
fn one_kid_cannot_name_two_keys() {
    let mut ring = KeyRing::new();
    let a = Signer::generate("k", Role::License).unwrap();
    let b = Signer::generate("k", Role::License).unwrap();
    ring.insert("k".into(), Role::License, a.verifying_key()).unwrap();
    ring.insert("k".into(), Role::License, a.verifying_key()).unwrap();
    assert!(matches!(
        ring.insert("k".into(), Role::License, b.verifying_key()),
        Err(KeyError::DuplicateKid(k)) if k == "k"
    ));
    ring.insert_pem("embedded", Role::License, &b.public_pem()).unwrap();
    assert_eq!(ring.len(), 2);
}

#[test]
fn debug_output_never_shows_private_key_material() {
    let signer = Signer::generate("secret-kid", Role::License).unwrap();
    let shown = format!("{signer:?} {signer:#?}");
    assert!(shown.contains("secret-kid"));
    let secret = signer.signing_key().to_bytes();
    for window in secret.windows(4) {
        let hex: String = window.iter().map(|b| format!("{b:02x}")).collect();
        assert!(!shown.contains(&hex), "{shown}");
        assert!(!shown.contains(&format!("{window:?}").trim_matches(|c| c == '[' || c == ']').to_owned()));
    }
}
