//! License verification throughput: licensor's parse-plus-verify of a license key beside raw
//! ed25519-dalek verification of a message of the same size, in the same run.
//!
//! Run with `cargo bench --bench license_verify`. Rounds of the two alternate so that a
//! change in machine load hits both alike; the median round of each is reported.
//! Target: licensor at least 90% of raw throughput (decoding must not dominate).

use chrono::{Duration, Utc};
use ed25519_dalek::Signature;
use std::hint::black_box;
use std::time::Instant;

use licensor::keys::{KeyRing, Role, Signer};
use licensor::license::{self, Expiry, LicenseRequest, Tier};

const ROUNDS: usize = 9;
const PER_ROUND: u32 = 20_000;

fn main() {
    let signer = Signer::generate("bench-2026", Role::License).expect("valid kid");
    let mut ring = KeyRing::new();
    ring.insert("bench-2026".into(), Role::License, signer.verifying_key()).expect("fresh ring");
    let now = Utc::now();
    let issued = license::issue(
        &signer,
        LicenseRequest {
            licensee: "Example Manufacturing GmbH".into(),
            tier: Tier::Pro,
            expiry: Expiry::At(now + Duration::days(365)),
            not_before: None,
            seats: 25,
            features: ["audit-log", "org-chart", "reports", "signatures", "sso"].map(String::from).to_vec(),
            check_in_interval: None,
        },
        now,
    )
    .expect("issue");
    let key = issued.key;

    // The raw baseline verifies the very bytes the license signature covers, so both sides
    // hash a message of the same size.
    let (signed, sig_b64) = key.rsplit_once('.').expect("three parts");
    let sig_bytes: [u8; 64] = base64_decode(sig_b64).try_into().expect("64 bytes");
    let signature = Signature::from_bytes(&sig_bytes);
    let vk = signer.verifying_key();
    assert!(vk.verify_strict(signed.as_bytes(), &signature).is_ok());
    assert!(license::verify(&key, &ring, now).is_ok());

    let mut raw = Vec::new();
    let mut ours = Vec::new();
    let mut decode_only = Vec::new();
    for _ in 0..ROUNDS {
        raw.push(rate(|| {
            black_box(vk.verify_strict(black_box(signed.as_bytes()), black_box(&signature))).is_ok()
        }));
        ours.push(rate(|| black_box(license::verify(black_box(&key), &ring, now)).is_ok()));
        decode_only.push(rate(|| {
            black_box(licensor::token::decode::<license::LicensePayload>(black_box(&key))).is_ok()
        }));
    }
    let raw = median(raw);
    let ours = median(ours);
    let decode_only = median(decode_only);
    println!("license key: {} bytes, signed part {} bytes", key.len(), signed.len());
    println!("raw ed25519-dalek verify_strict:      {:>9.0} verifications/s ({:.2} us each)", raw, 1e6 / raw);
    println!(
        "licensor parse + verify (license):    {:>9.0} verifications/s ({:.2} us each)",
        ours,
        1e6 / ours
    );
    println!(
        "licensor decode only (no signature):  {:>9.0} decodes/s ({:.2} us each)",
        decode_only,
        1e6 / decode_only
    );
    let ratio = ours / raw * 100.0;
    let verdict = if ratio >= 90.0 { "meets" } else { "MISSES" };
    println!("licensor / raw = {ratio:.1}% ({verdict} the 90% target)");
}

/// Runs `f` PER_ROUND times and returns calls per second; every call must succeed.
fn rate(mut f: impl FnMut() -> bool) -> f64 {
    let start = Instant::now();
    for _ in 0..PER_ROUND {
        assert!(f());
    }
    f64::from(PER_ROUND) / start.elapsed().as_secs_f64()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn base64_decode(s: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(s).expect("canonical base64")
}
