//! Key files and key rings: naming, loading, refusing bad material, and keeping secrets out
//! of logs.

use licensor::keys::{KeyError, KeyRing, Signer};
use tempfile::TempDir;

#[test]
fn a_ring_loads_every_public_key_in_a_directory_and_nothing_else() {
    let dir = TempDir::new().unwrap();
    let a = Signer::generate("vendor-2025").unwrap();
    let b = Signer::generate("vendor-2026").unwrap();
    a.write_pair(dir.path()).unwrap();
    b.write_pair(dir.path()).unwrap();
    std::fs::write(dir.path().join("README.md"), "not a key").unwrap();
    std::fs::write(dir.path().join("notes.pem"), "not a key either").unwrap();

    let ring = KeyRing::load_dir(dir.path()).unwrap();
    assert_eq!(ring.kids().collect::<Vec<_>>(), ["vendor-2025", "vendor-2026"]);
    assert_eq!(ring.get("vendor-2025"), Some(&a.verifying_key()));
    assert_eq!(ring.get("vendor-2026"), Some(&b.verifying_key()));
    assert!(ring.get("vendor-2027").is_none());
}

#[test]
fn a_signer_loads_from_its_file_with_the_kid_from_the_name() {
    let dir = TempDir::new().unwrap();
    let signer = Signer::generate("acme_1").unwrap();
    let paths = signer.write_pair(dir.path()).unwrap();
    let loaded = Signer::load(&paths.private).unwrap();
    assert_eq!(loaded.kid(), "acme_1");
    assert_eq!(loaded.verifying_key(), signer.verifying_key());

    // Renamed away from the KID.private.pem pattern, it names no key id.
    let renamed = dir.path().join("acme.pem");
    std::fs::rename(&paths.private, &renamed).unwrap();
    assert!(matches!(Signer::load(&renamed), Err(KeyError::BadFileName { .. })));
}

#[test]
fn bad_key_material_is_a_clear_error() {
    let dir = TempDir::new().unwrap();
    std::fs::write(
        dir.path().join("k1.public.pem"),
        "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
    )
    .unwrap();
    let err = KeyRing::load_dir(dir.path()).unwrap_err();
    assert!(matches!(&err, KeyError::BadPem { what: "public", .. }), "{err}");
    assert!(err.to_string().contains("k1.public.pem"), "{err}");

    let private = dir.path().join("k2.private.pem");
    std::fs::write(&private, "garbage").unwrap();
    assert!(matches!(Signer::load(&private), Err(KeyError::BadPem { .. })));

    // A public key where a private one is expected.
    let pair = Signer::generate("k3").unwrap();
    std::fs::write(dir.path().join("k3.private.pem"), pair.public_pem()).unwrap();
    assert!(matches!(Signer::load(&dir.path().join("k3.private.pem")), Err(KeyError::BadPem { .. })));

    let bad_kid = dir.path().join("bad kid.public.pem");
    std::fs::write(&bad_kid, pair.public_pem()).unwrap();
    std::fs::remove_file(dir.path().join("k1.public.pem")).unwrap();
    assert!(matches!(KeyRing::load_dir(dir.path()), Err(KeyError::InvalidKid(k)) if k == "bad kid"));

    assert!(matches!(KeyRing::load_dir(&dir.path().join("missing")), Err(KeyError::Io { .. })));
}

#[test]
fn one_kid_cannot_name_two_keys() {
    let mut ring = KeyRing::new();
    let a = Signer::generate("k").unwrap();
    let b = Signer::generate("k").unwrap();
    ring.insert("k".into(), a.verifying_key()).unwrap();
    ring.insert("k".into(), a.verifying_key()).unwrap();
    assert!(matches!(ring.insert("k".into(), b.verifying_key()), Err(KeyError::DuplicateKid(k)) if k == "k"));
    ring.insert_pem("embedded", &b.public_pem()).unwrap();
    assert_eq!(ring.len(), 2);
}

#[test]
fn debug_output_never_shows_private_key_material() {
    let signer = Signer::generate("secret-kid").unwrap();
    let shown = format!("{signer:?} {signer:#?}");
    assert!(shown.contains("secret-kid"));
    let secret = signer.signing_key().to_bytes();
    for window in secret.windows(4) {
        let hex: String = window.iter().map(|b| format!("{b:02x}")).collect();
        assert!(!shown.contains(&hex), "{shown}");
        assert!(!shown.contains(&format!("{window:?}").trim_matches(|c| c == '[' || c == ']').to_owned()));
    }
}
