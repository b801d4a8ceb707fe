//! License keys through the library: issue and verify, tampering, key rotation, validity
//! boundaries, and hostile input. Every refusal is checked for its exact verdict.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use chrono::{DateTime, Duration, TimeZone as _, Utc};
use serde::{Deserialize, Serialize};

use licensor::keys::{KeyRing, Role, Signer};
use licensor::license::{self, Expiry, IssueError, LicensePayload, LicenseRequest, Tier};
use licensor::token::{self, Claims, Kind, Malformed, TokenError, Verdict};

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 21, 10, 0, 0).unwrap()
}

fn request(tier: Tier) -> LicenseRequest {
    LicenseRequest {
        licensee: "Example Manufacturing GmbH".into(),
        tier,
        expiry: Expiry::At(t0() + Duration::days(365)),
        not_before: None,
        seats: 5,
        features: vec!["sso".into(), "audit-log".into(), "sso".into()],
        check_in_interval: None,
    }
}

fn signer_and_ring(kid: &str) -> (Signer, KeyRing) {
    let signer = Signer::generate(kid, Role::License).unwrap();
    let mut ring = KeyRing::new();
    ring.insert(kid.to_owned(), Role::License, signer.verifying_key()).unwrap();
    (signer, ring)
}

fn verdict(key: &str, ring: &KeyRing, now: DateTime<Utc>) -> Verdict {
    match license::verify(key, ring, now) {
        Ok(_) => Verdict::Valid,
        Err(e) => e.verdict(),
    }
}

#[test]
fn issue_then_verify_round_trips_for_every_tier() {
    let (signer, ring) = signer_and_ring("vendor-2026");
    for tier in Tier::ALL {
        let issued = license::issue(&signer, request(tier), t0()).unwrap();
        assert!(issued.key.starts_with("LIC1."), "{}", issued.key);
        assert!(issued.key.bytes().all(|b| b.is_ascii_graphic()), "one copy-pasteable line");
        let payload = license::verify(&issued.key, &ring, t0()).unwrap();
        assert_eq!(payload, issued.payload);
        assert_eq!(payload.tier, tier);
        assert_eq!(payload.v, 1);
        assert_eq!(payload.kid, "vendor-2026");
        assert_eq!(payload.licensee, "Example Manufacturing GmbH");
        assert_eq!(payload.issued_at, t0());
        assert_eq!(payload.not_before, t0());
        assert_eq!(payload.expires_at, Some(t0() + Duration::days(365)));
        assert_eq!(payload.seats, 5);
        // Sorted and deduplicated on issue.
        assert_eq!(payload.features, vec!["audit-log", "sso"]);
        assert!(payload.has_feature("sso") && !payload.has_feature("reports"));
        assert_eq!(payload.check_in_interval(), tier.check_in_interval());
    }
}

#[test]
fn tier_schedules_follow_the_protocol() {
    assert_eq!(Tier::Community.check_in_interval(), Duration::hours(24));
    assert_eq!(Tier::Pro.check_in_interval(), Duration::days(7));
    assert_eq!(Tier::Enterprise.check_in_interval(), Duration::days(30));
    assert_eq!(Tier::Community.grace(), Duration::days(7));
    assert_eq!(Tier::Pro.grace(), Duration::days(14));
    assert_eq!(Tier::Enterprise.grace(), Duration::days(30));
    assert!(Tier::Community.telemetry_required() && Tier::Pro.telemetry_required());
    assert!(!Tier::Enterprise.telemetry_required());
    assert_eq!("Enterprise".parse::<Tier>().unwrap(), Tier::Enterprise);
    assert!("gold".parse::<Tier>().is_err());
}

#[test]
fn check_in_interval_override_is_carried_and_bounded() {
    let (signer, ring) = signer_and_ring("k1");
    let mut req = request(Tier::Pro);
    req.check_in_interval = Some(std::time::Duration::from_secs(12 * 3600));
    let issued = license::issue(&signer, req.clone(), t0()).unwrap();
    let payload = license::verify(&issued.key, &ring, t0()).unwrap();
    assert_eq!(payload.check_in_interval_s, Some(43_200));
    assert_eq!(payload.check_in_interval(), Duration::hours(12));

    req.check_in_interval = Some(std::time::Duration::from_secs(59 * 60));
    let err = license::issue(&signer, req, t0()).unwrap_err();
    assert!(matches!(&err, IssueError::Invalid(f) if f.field == "check_in_interval_s"), "{err}");
}

/// Flips every bit of every character of one key: each result must be refused. Bits 0 to 6
/// keep the text ASCII; bit 7 makes a byte that is not UTF-8 on its own, which reaches the
/// library as the replacement character, as any `&str` caller would see it.
#[test]
fn every_single_bit_flip_of_a_key_is_rejected() {
    let (signer, ring) = signer_and_ring("vendor-2026");
    let key = license::issue(&signer, request(Tier::Pro), t0()).unwrap().key;
    let sig_start = key.rfind('.').unwrap() + 1;
    let mut counts = std::collections::BTreeMap::<Verdict, usize>::new();
    let mut trailing_bit_flips = 0;
    for i in 0..key.len() {
        for bit in 0..8 {
            let mut bytes = key.clone().into_bytes();
            bytes[i] ^= 1 << bit;
            let flipped = String::from_utf8_lossy(&bytes).into_owned();
            let got = verdict(&flipped, &ring, t0());
            assert_ne!(got, Verdict::Valid, "flip of bit {bit} at {i} accepted: {flipped}");
            *counts.entry(got).or_default() += 1;
            // The last signature character carries 4 bits that canonical base64 requires to be
            // zero; a lax decoder would accept their flips as the same signature.
            if i == key.len() - 1 && bit < 7 {
                let flipped_char = bytes[i] as char;
                if flipped_char.is_ascii_alphanumeric() || flipped_char == '-' || flipped_char == '_' {
                    trailing_bit_flips += 1;
                }
            }
            if i >= sig_start && bit == 7 {
                assert_eq!(got, Verdict::Malformed);
            }
        }
    }
    assert_eq!(counts.values().sum::<usize>(), key.len() * 8);
    assert!(counts[&Verdict::BadSignature] > 0 && counts[&Verdict::Malformed] > 0, "{counts:?}");
    assert!(trailing_bit_flips > 0, "the last character must have flips that stay in the alphabet");
}

#[test]
fn signature_covers_the_prefix_and_the_encoded_payload() {
    let (signer, _) = signer_and_ring("k1");
    let key = license::issue(&signer, request(Tier::Community), t0()).unwrap().key;
    let (signed, sig) = key.rsplit_once('.').unwrap();
    let sig = URL_SAFE_NO_PAD.decode(sig).unwrap();
    let sig = ed25519_dalek::Signature::from_bytes(&sig.try_into().unwrap());
    signer.verifying_key().verify_strict(signed.as_bytes(), &sig).unwrap();
    assert!(signed.starts_with("LIC1."));
}

#[test]
fn rotation_old_and_new_keys_verify_while_both_are_in_the_ring() {
    let old = Signer::generate("vendor-2025", Role::License).unwrap();
    let new = Signer::generate("vendor-2026", Role::License).unwrap();
    let mut ring = KeyRing::new();
    ring.insert("vendor-2025".into(), Role::License, old.verifying_key()).unwrap();
    ring.insert("vendor-2026".into(), Role::License, new.verifying_key()).unwrap();
    let old_key = license::issue(&old, request(Tier::Pro), t0()).unwrap().key;
    let new_key = license::issue(&new, request(Tier::Pro), t0()).unwrap().key;
    assert_eq!(verdict(&old_key, &ring, t0()), Verdict::Valid);
    assert_eq!(verdict(&new_key, &ring, t0()), Verdict::Valid);

    // Retiring the old key: its licenses stop verifying, the new ones keep working.
    assert!(ring.remove("vendor-2025").is_some());
    assert_eq!(
        license::verify(&old_key, &ring, t0()).unwrap_err(),
        TokenError::UnknownKey { kid: "vendor-2025".into(), role: Role::License }
    );
    assert_eq!(verdict(&new_key, &ring, t0()), Verdict::Valid);
}

#[test]
fn wrong_kid_and_wrong_key_under_a_known_kid() {
    let (signer, _) = signer_and_ring("vendor-a");
    let key = license::issue(&signer, request(Tier::Pro), t0()).unwrap().key;

    let (_, other_ring) = signer_and_ring("vendor-b");
    assert_eq!(
        license::verify(&key, &other_ring, t0()).unwrap_err(),
        TokenError::UnknownKey { kid: "vendor-a".into(), role: Role::License }
    );
    assert_eq!(verdict(&key, &KeyRing::new(), t0()), Verdict::UnknownKey);

    // Another key published under the same id: the signature cannot verify.
    let impostor = Signer::generate("vendor-a", Role::License).unwrap();
    let mut ring = KeyRing::new();
    ring.insert("vendor-a".into(), Role::License, impostor.verifying_key()).unwrap();
    assert_eq!(
        license::verify(&key, &ring, t0()).unwrap_err(),
        TokenError::BadSignature { kid: "vendor-a".into() }
    );
}

#[test]
fn validity_window_boundaries_are_exact() {
    let (signer, ring) = signer_and_ring("k1");
    let not_before = t0() + Duration::days(1);
    let expires_at = t0() + Duration::days(30);
    let mut req = request(Tier::Enterprise);
    req.not_before = Some(not_before);
    req.expiry = Expiry::At(expires_at);
    let key = license::issue(&signer, req, t0()).unwrap().key;
    let nanos = Duration::nanoseconds(1);

    assert_eq!(
        license::verify(&key, &ring, not_before - nanos).unwrap_err(),
        TokenError::NotYetValid { not_before }
    );
    assert_eq!(verdict(&key, &ring, t0()), Verdict::NotYetValid);
    assert_eq!(verdict(&key, &ring, not_before), Verdict::Valid, "not_before is inclusive");
    assert_eq!(verdict(&key, &ring, expires_at - nanos), Verdict::Valid);
    assert_eq!(
        license::verify(&key, &ring, expires_at).unwrap_err(),
        TokenError::Expired { expires_at },
        "expires_at is exclusive"
    );
    assert_eq!(verdict(&key, &ring, expires_at + Duration::days(3650)), Verdict::Expired);
}

#[test]
fn perpetual_only_when_asked_and_never_by_omission() {
    let (signer, ring) = signer_and_ring("k1");
    let mut req = request(Tier::Enterprise);
    req.expiry = Expiry::Perpetual;
    let issued = license::issue(&signer, req, t0()).unwrap();
    assert_eq!(issued.payload.expires_at, None);
    let json =
        String::from_utf8(URL_SAFE_NO_PAD.decode(issued.key.split('.').nth(1).unwrap()).unwrap()).unwrap();
    assert!(json.contains("\"expires_at\":null"), "{json}");
    assert_eq!(verdict(&issued.key, &ring, t0() + Duration::days(365 * 100)), Verdict::Valid);

    // A payload that leaves expires_at out is malformed, even when properly signed.
    let mut value: serde_json::Value = serde_json::from_str(&json).unwrap();
    value.as_object_mut().unwrap().remove("expires_at");
    let key = sign_raw(token::LICENSE, &value, &signer);
    let err = license::verify(&key, &ring, t0()).unwrap_err();
    assert!(
        matches!(&err, TokenError::Malformed(Malformed::Payload(m)) if m.contains("expires_at")),
        "{err}"
    );
}

#[test]
fn issuing_refuses_bad_requests() {
    let (signer, _) = signer_and_ring("k1");
    let field_of = |req: LicenseRequest| match license::issue(&signer, req, t0()) {
        Err(IssueError::Invalid(f)) => f.field,
        other => panic!("expected a field error, got {other:?}"),
    };
    let mut req = request(Tier::Pro);
    req.expiry = Expiry::At(t0());
    assert_eq!(license::issue(&signer, req, t0()).unwrap_err(), IssueError::AlreadyExpired(t0()));

    let mut req = request(Tier::Pro);
    req.not_before = Some(t0() + Duration::days(400));
    assert_eq!(field_of(req), "expires_at");
    let mut req = request(Tier::Pro);
    req.seats = 0;
    assert_eq!(field_of(req), "seats");
    let mut req = request(Tier::Pro);
    req.licensee = "  ".into();
    assert_eq!(field_of(req), "licensee");
    let mut req = request(Tier::Pro);
    req.licensee = "Evil\nCorp".into();
    assert_eq!(field_of(req), "licensee");
    let mut req = request(Tier::Pro);
    req.features = vec!["has space".into()];
    assert_eq!(field_of(req), "features");
    let mut req = request(Tier::Pro);
    req.features = vec!["x".repeat(129)];
    assert_eq!(field_of(req), "features");
}

fn malformed(key: &str, ring: &KeyRing) -> Malformed {
    match license::verify(key, ring, t0()) {
        Err(TokenError::Malformed(m)) => m,
        other => {
            panic!("expected malformed for {:?}, got {other:?}", key.chars().take(80).collect::<String>())
        }
    }
}

#[test]
fn hostile_inputs_get_their_specific_verdict() {
    let (signer, ring) = signer_and_ring("k1");
    let key = license::issue(&signer, request(Tier::Pro), t0()).unwrap().key;
    let (_, payload, sig) = {
        let mut it = key.split('.');
        (it.next().unwrap(), it.next().unwrap(), it.next().unwrap())
    };

    assert_eq!(malformed("", &ring), Malformed::Empty);
    assert_eq!(malformed(&"A".repeat(1 << 20), &ring), Malformed::TooLong(1 << 20));
    assert_eq!(malformed("hello world", &ring), Malformed::NotAToken { expected: "LIC1." });
    assert_eq!(
        malformed(&key.replacen("LIC1.", "XYZ1.", 1), &ring),
        Malformed::NotAToken { expected: "LIC1." }
    );
    assert_eq!(
        malformed(&key.replacen("LIC1.", "lic1.", 1), &ring),
        Malformed::NotAToken { expected: "LIC1." }
    );
    assert_eq!(
        license::verify(&key.replacen("LIC1.", "LIC2.", 1), &ring, t0()).unwrap_err(),
        TokenError::UnsupportedVersion { found: "LIC2".into(), expected: "LIC1".into() }
    );
    assert_eq!(malformed(&format!("{key}.extra"), &ring), Malformed::Structure);
    assert_eq!(malformed(&format!("LIC1.{payload}"), &ring), Malformed::Structure);
    assert_eq!(malformed(&format!(" {key}"), &ring), Malformed::NotAToken { expected: "LIC1." });
    assert_eq!(malformed(&format!("{key}\n"), &ring), Malformed::Base64 { part: "signature" });
    assert_eq!(malformed(&format!("LIC1.{payload}=.{sig}"), &ring), Malformed::Base64 { part: "payload" });
    assert_eq!(malformed(&format!("LIC1.{payload}.{sig}AA"), &ring), Malformed::SignatureLength(66));
    assert_eq!(malformed(&format!("LIC1.{payload}.{}", &sig[..40]), &ring), Malformed::SignatureLength(30));
    assert_eq!(
        malformed(&format!("LIC1.{payload}.!{}", &sig[1..]), &ring),
        Malformed::Base64 { part: "signature" }
    );

    // Valid base64 of something that is not JSON, and JSON of the wrong shape.
    for body in [&b"not json at all"[..], b"", b"[1,2,3]", b"{}", b"{\"v\":1}", b"null", &[0xff, 0xfe, 0x00]]
    {
        let forged = format!("LIC1.{}.{sig}", URL_SAFE_NO_PAD.encode(body));
        assert!(matches!(malformed(&forged, &ring), Malformed::Payload(_)), "{body:?}");
    }

    // Every truncation of a real key.
    for end in 0..key.len() {
        let _ = malformed(&key[..end], &ring);
    }

    // Pseudo-random garbage of many lengths, some of it wearing the right prefix.
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    for len in (0..4096).step_by(37) {
        let garbage: String = (0..len)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                char::from(b' ' + (seed % 95) as u8)
            })
            .collect();
        assert_ne!(verdict(&garbage, &ring, t0()), Verdict::Valid);
        assert_ne!(verdict(&format!("LIC1.{garbage}"), &ring, t0()), Verdict::Valid);
    }
}

/// A stand-in for the server's lease payload, to show that a token of another family cannot
/// pass as a license key even when signed by a trusted key.
#[derive(Serialize, Deserialize)]
struct FakeLease {
    v: u32,
    kid: String,
    license_id: String,
}

impl Claims for FakeLease {
    const KIND: Kind = token::LEASE;
    const VERSION: u32 = 1;
    fn version(&self) -> u32 {
        self.v
    }
    fn kid(&self) -> &str {
        &self.kid
    }
    fn not_before(&self) -> Option<DateTime<Utc>> {
        None
    }
    fn expires_at(&self) -> Option<DateTime<Utc>> {
        None
    }
    fn check_fields(&self) -> Result<(), String> {
        Ok(())
    }
}

#[test]
fn a_lease_never_passes_as_a_license() {
    let (signer, ring) = signer_and_ring("k1");
    let lease =
        token::sign(&FakeLease { v: 1, kid: "k1".into(), license_id: "x".into() }, signer.signing_key());
    assert!(lease.starts_with("LEASE1."));
    assert_eq!(malformed(&lease, &ring), Malformed::WrongFamily { expected: "LIC", found: "LEASE" });
    // Relabelling it does not help either: the prefix is under the signature.
    let relabelled = lease.replacen("LEASE1.", "LIC1.", 1);
    assert_ne!(verdict(&relabelled, &ring, t0()), Verdict::Valid);
    // A license payload carried in a lease envelope, properly signed, is still not a license.
    let issued = license::issue(&signer, request(Tier::Pro), t0()).unwrap();
    let mut as_lease = serde_json::to_value(&issued.payload).unwrap();
    as_lease["v"] = 1.into();
    let forged = sign_raw(token::LEASE, &as_lease, &signer);
    assert_eq!(malformed(&forged, &ring), Malformed::WrongFamily { expected: "LIC", found: "LEASE" });
    assert_eq!(token::kind_of(&forged), Some(token::LEASE));
    assert_eq!(token::kind_of(&issued.key), Some(token::LICENSE));
}

#[test]
fn a_signed_payload_of_a_newer_version_is_unsupported_not_malformed() {
    let (signer, ring) = signer_and_ring("k1");
    let issued = license::issue(&signer, request(Tier::Pro), t0()).unwrap();
    let mut value = serde_json::to_value(&issued.payload).unwrap();
    value["v"] = 2.into();
    assert_eq!(
        license::verify(&sign_raw(token::LICENSE, &value, &signer), &ring, t0()).unwrap_err(),
        TokenError::UnsupportedVersion {
            found: "payload version 2".into(),
            expected: "payload version 1".into()
        }
    );
    // A v2 payload of a different shape altogether is still recognised as v2.
    let v2 = serde_json::json!({ "v": 2, "kid": "k1", "entirely": "new" });
    assert_eq!(verdict(&sign_raw(token::LICENSE, &v2, &signer), &ring, t0()), Verdict::UnsupportedVersion);
}

#[test]
fn a_signed_payload_that_breaks_the_rules_is_malformed() {
    let (signer, ring) = signer_and_ring("k1");
    let issued = license::issue(&signer, request(Tier::Pro), t0()).unwrap();
    for (field, value) in [
        ("seats", serde_json::json!(0)),
        ("licensee", serde_json::json!("")),
        ("features", serde_json::json!(["b", "a"])),
        ("expires_at", serde_json::json!("2020-01-01T00:00:00Z")),
        ("check_in_interval_s", serde_json::json!(1)),
        ("kid", serde_json::json!("k 1")),
    ] {
        let mut payload = serde_json::to_value(&issued.payload).unwrap();
        payload[field] = value;
        let key = sign_raw(token::LICENSE, &payload, &signer);
        let m = malformed(&key, &ring);
        assert!(matches!(&m, Malformed::Field(msg) if msg.starts_with(field)), "{field}: {m}");
    }
}

/// The wire format is fixed: a key issued by an earlier build, kept under `tests/fixtures`,
/// must verify to exactly the payload it was issued with.
#[test]
fn a_key_from_an_earlier_build_still_verifies() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let ring = KeyRing::load_dir(&dir.join("keys")).unwrap();
    let key = std::fs::read_to_string(dir.join("golden.license")).unwrap();
    let payload: LicensePayload = license::verify(key.trim(), &ring, t0()).unwrap();
    let expected: LicensePayload =
        serde_json::from_str(&std::fs::read_to_string(dir.join("golden.payload.json")).unwrap()).unwrap();
    assert_eq!(payload, expected);
    assert_eq!(payload.kid, "golden-2026");
    assert_eq!(payload.tier, Tier::Pro);
}

/// Signs an arbitrary JSON value under `kind`, bypassing the library's own checks.
fn sign_raw(kind: Kind, value: &serde_json::Value, signer: &Signer) -> String {
    use ed25519_dalek::Signer as _;
    let mut out = format!("{}{}", kind.prefix, URL_SAFE_NO_PAD.encode(serde_json::to_vec(value).unwrap()));
    let sig = signer.signing_key().sign(out.as_bytes());
    out.push('.');
    out.push_str(&URL_SAFE_NO_PAD.encode(sig.to_bytes()));
    out
}
