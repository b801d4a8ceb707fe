//! Property-based tests of every parser that reads outside input: the token envelope (license
//! keys, leases, receipts), the telemetry batch, the usage report and receipt files, the latency
//! sketch's wire form, and the PII scrubber. On any input: no panic, and a typed answer.
//!
//! `cargo test` runs each property on 256 cases (proptest's default). Release checks run more:
//! `PROPTEST_CASES=20000 cargo test --release --test fuzz`, documented in the README. The
//! parsers' time is linear in their input by construction (the regex crate's matching is, and
//! token and sketch decoding are single passes over input bounded by the protocol's limits), so
//! no case can run unbounded; these properties check the answers, not the clock.

use proptest::prelude::*;

use licensor::keys::{KeyRing, Role, Signer};
use licensor::lease::LeasePayload;
use licensor::license::{self, Expiry, LicensePayload, LicenseRequest, Tier};
use licensor::privacy;
use licensor::protocol::{self, BatchLimits};
use licensor::receipt::ReceiptPayload;
use licensor::sketch::Sketch;
use licensor::token;

fn signer_and_ring() -> (Signer, KeyRing, String) {
    let signer = Signer::generate("fuzz", Role::License).unwrap();
    let mut ring = KeyRing::new();
    ring.insert_pem("fuzz", Role::License, &signer.public_pem()).unwrap();
    let key = license::issue(
        &signer,
        LicenseRequest {
            licensee: "Fuzz GmbH".into(),
            tier: Tier::Pro,
            expiry: Expiry::Perpetual,
            not_before: None,
            seats: 3,
            features: vec!["a".into()],
            check_in_interval: None,
        },
        chrono::Utc::now(),
    )
    .unwrap()
    .key;
    (signer, ring, key)
}

/// Text that looks like a token: a known or unknown prefix, then base64url-ish parts.
fn token_like() -> impl Strategy<Value = String> {
    let prefix = prop_oneof!["LIC1\\.", "LEASE1\\.", "RECEIPT1\\.", "LIC2\\.", "[A-Z]{1,6}[0-9]{0,3}\\.", ""];
    (prefix, "[A-Za-z0-9_=+/.-]{0,200}").prop_map(|(p, rest)| format!("{p}{rest}"))
}

proptest! {
    #[test]
    fn tokens_of_any_shape_get_a_verdict(text in prop_oneof![token_like(), any::<String>()]) {
        let (_, ring, _) = signer_and_ring();
        let now = chrono::Utc::now();
        let _ = token::verify::<LicensePayload>(&text, &ring, now);
        let _ = token::decode::<LeasePayload>(&text);
        let _ = token::decode::<ReceiptPayload>(&text);
        let _ = token::kind_of(&text);
        for kind in token::KINDS {
            let _ = token::decode_json(&text, kind);
        }
    }

    #[test]
    fn payloads_of_any_json_get_a_verdict(json in any::<Vec<u8>>(), sig in "[A-Za-z0-9_-]{86}") {
        use base64::Engine as _;
        let (_, ring, _) = signer_and_ring();
        let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&json);
        let text = format!("LIC1.{payload}.{sig}");
        let err = token::verify::<LicensePayload>(&text, &ring, chrono::Utc::now());
        prop_assert!(err.is_err(), "an unsigned payload verified");
    }

    #[test]
    fn no_change_to_a_signed_key_verifies(position in any::<prop::sample::Index>(), replacement in any::<char>()) {
        let (_, ring, key) = signer_and_ring();
        let mut chars: Vec<char> = key.chars().collect();
        let i = position.index(chars.len());
        prop_assume!(chars[i] != replacement);
        chars[i] = replacement;
        let altered: String = chars.into_iter().collect();
        prop_assert!(license::verify(&altered, &ring, chrono::Utc::now()).is_err(), "{altered}");
    }

    #[test]
    fn usage_files_of_any_json_get_a_verdict(value in json_value(), text in any::<String>()) {
        for input in [value.to_string(), text] {
            let _ = licensor::usage_report::read_report(&input);
            let _ = licensor::usage_report::read_receipt(&input);
        }
    }

    #[test]
    fn no_change_to_a_signed_report_verifies(position in any::<prop::sample::Index>(), replacement in any::<char>()) {
        let key = ed25519_dalek::SigningKey::from_bytes(&[9u8; 32]);
        let text = licensor::usage_report::write_report(&licensor::usage_report::ReportBody {
            license_key: "LIC1.a.b".into(),
            instance_id: "install-1".into(),
            software_version: "1.0".into(),
            sequence: 1,
            previous_digest: None,
            nonce: "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA".into(),
            created_at: chrono::Utc::now(),
            install_key: licensor::usage_report::encode_install_key(&key.verifying_key()),
            level: licensor::usage_report::ReportLevel::Full,
            telemetry: serde_json::value::RawValue::from_string("{\"schema\":1,\"usage\":[7]}".into()).unwrap(),
        }, &key);
        // Any character of the signed bytes: the `report` value, from its brace to its brace.
        let start = text.find("\"report\": ").unwrap() + "\"report\": ".len();
        let end = text.find(",\n  \"signature\"").unwrap();
        let mut chars: Vec<char> = text.chars().collect();
        let i = start + position.index(end - start);
        prop_assume!(chars[i] != replacement);
        chars[i] = replacement;
        let altered: String = chars.into_iter().collect();
        prop_assert!(licensor::usage_report::read_report(&altered).is_err(), "{altered}");
    }

    #[test]
    fn batches_of_any_text_get_a_verdict(text in any::<String>()) {
        if let Ok(batch) = protocol::parse_batch(&text) {
            let _ = batch.check(&BatchLimits::default());
        }
    }

    #[test]
    fn batches_of_any_json_get_a_verdict(value in json_value()) {
        let text = value.to_string();
        if let Ok(batch) = protocol::parse_batch(&text) {
            let _ = batch.check(&BatchLimits::default());
        }
    }

    #[test]
    fn sketches_of_any_text_get_a_verdict(text in prop_oneof![sketch_like(), any::<String>()]) {
        if let Ok(sketch) = Sketch::decode(&text) {
            // A sketch that decodes is consistent: quantiles are in order and finite.
            let q = |p| sketch.quantile(p).unwrap_or(0.0);
            prop_assert!(q(0.5) <= q(0.99) && q(0.99).is_finite());
        }
    }

    #[test]
    fn sketches_round_trip(values in prop::collection::vec(0.0f64..1e7, 0..300)) {
        let mut sketch = Sketch::with_alpha(licensor::sketch::ALPHA);
        for v in &values {
            sketch.add(*v);
        }
        let again = Sketch::decode(&sketch.encode()).unwrap();
        prop_assert_eq!(again.encode(), sketch.encode());
        prop_assert_eq!(again.quantile(0.95), sketch.quantile(0.95));
    }

    #[test]
    fn negative_or_empty_runs_never_decode(run in -5000i64..=0, count in 1u64..100) {
        let text = format!("dd1:0.01:0:10:{count},~{run},{count}");
        prop_assert!(Sketch::decode(&text).is_err(), "{text}");
    }

    #[test]
    fn the_scrubber_takes_any_text(text in any::<String>()) {
        let (out, counts) = privacy::scrub(&text);
        // What was not counted was not changed.
        if counts.total() == 0 {
            prop_assert_eq!(out, text);
        }
    }

    #[test]
    fn a_random_base62_token_is_masked_wherever_it_stands(
        before in "[ -~]{0,24}",
        token in "[A-Za-z0-9]{20,48}",
        after in "[ -~]{0,24}",
    ) {
        let text = format!("{before}{token}{after}");
        let (out, counts) = privacy::scrub(&text);
        prop_assert!(!out.contains(&token), "{token:?} survived in {out:?}");
        prop_assert!(counts.total() > 0);
    }

    #[test]
    fn no_keep_case_is_changed_in_any_sentence(
        before in "[a-z]{0,12}( [a-z]{1,12}){0,3}",
        after in "[a-z]{0,12}( [a-z]{1,12}){0,3}",
        pick in any::<prop::sample::Index>(),
    ) {
        let corpus = corpus();
        let keep = corpus["keep"].as_array().unwrap();
        let keep = keep[pick.index(keep.len())].as_str().unwrap();
        let text = format!("{before} {keep} {after}");
        let (out, counts) = privacy::scrub(&text);
        prop_assert_eq!(&out, &text);
        prop_assert_eq!(counts.total(), 0);
    }

    #[test]
    fn scrubbing_twice_changes_nothing_more(text in any::<String>()) {
        let (once, _) = privacy::scrub(&text);
        let (twice, counts) = privacy::scrub(&once);
        prop_assert_eq!(twice, once);
        prop_assert_eq!(counts.total(), 0);
    }

    #[test]
    fn corpus_secrets_in_any_sentence_are_removed(
        before in "[a-z]{0,12}( [a-z]{1,12}){0,3}",
        after in "[a-z]{0,12}( [a-z]{1,12}){0,3}",
        pick in any::<prop::sample::Index>(),
    ) {
        let corpus = corpus();
        let secrets = corpus["secrets"].as_array().unwrap();
        let secret = secrets[pick.index(secrets.len())]["value"].as_str().unwrap();
        let text = format!("{before} {secret} {after}");
        let (out, counts) = privacy::scrub(&text);
        prop_assert!(counts.total() > 0, "{text:?}");
        for fragment in corpus["sensitive_fragments"].as_array().unwrap() {
            let fragment = fragment.as_str().unwrap();
            prop_assert!(!out.contains(fragment), "{fragment:?} survived in {out:?}");
        }
    }
}

fn corpus() -> serde_json::Value {
    serde_json::from_str(include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/pii-corpus.json")))
        .unwrap()
}

/// Text shaped like a sketch's wire form, with runs and counts of any sign and size.
fn sketch_like() -> impl Strategy<Value = String> {
    let item = prop_oneof![
        any::<i64>().prop_map(|n| format!("~{n}")),
        any::<u64>().prop_map(|n| n.to_string()),
        "[0-9~,-]{0,6}",
    ];
    (
        prop_oneof![Just("0.01".to_owned()), any::<f64>().prop_map(|f| f.to_string())],
        any::<u64>(),
        -3000i32..3000,
        prop::collection::vec(item, 0..40),
    )
        .prop_map(|(alpha, zeros, offset, items)| format!("dd1:{alpha}:{zeros}:{offset}:{}", items.join(",")))
}

/// Any JSON value, biased towards the batch's own shape so that validation runs deep.
fn json_value() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::{json, Value};
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        any::<f64>().prop_filter("JSON numbers are finite", |f| f.is_finite()).prop_map(|f| json!(f)),
        any::<String>().prop_map(Value::String),
        Just(json!("2026-11-21T10:00:00Z")),
        Just(json!(1)),
    ];
    let value = leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    Just("schema".to_owned()),
                    Just("batch_id".to_owned()),
                    Just("usage".to_owned()),
                    Just("count".to_owned()),
                    Just("name".to_owned()),
                    Just("kind".to_owned()),
                    Just("errors".to_owned()),
                    "[a-z_]{1,10}",
                ],
                inner,
                0..8
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    });
    // Half of the cases: a valid batch with one part replaced by anything.
    (value, any::<prop::sample::Index>(), any::<bool>()).prop_map(|(junk, which, graft)| {
        if !graft {
            return junk;
        }
        let mut batch = json!({
            "schema": 1, "batch_id": "6f1b3a7e-1d2c-4b5a-9e8f-0a1b2c3d4e5f",
            "period_start": "2026-11-21T09:00:00Z", "period_end": "2026-11-21T10:00:00Z",
            "environment": { "app_version": "1", "os": "linux", "arch": "x86_64", "user_count_range": "1-10",
                             "uptime_hours": 1.0, "last_sync_status": "none" },
            "usage": [{ "kind": "feature", "name": "a", "count": 1 }],
            "performance": [{ "method": "GET", "route": "/", "count": 1, "errors": 0, "p50_ms": 1.0,
                              "p95_ms": 1.0, "p99_ms": 1.0, "max_ms": 1.0, "sketch": "dd1:0.01:0:0:1" }],
            "errors": [{ "fingerprint": "ab", "type": "t", "message": "m", "count": 1,
                         "first_seen": "2026-11-21T09:00:00Z", "last_seen": "2026-11-21T10:00:00Z" }],
            "sessions": { "count": 1, "total_duration_s": 1, "hourly": [0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0] }
        });
        let keys: Vec<String> = batch.as_object().unwrap().keys().cloned().collect();
        let key = &keys[which.index(keys.len())];
        batch[key.as_str()] = junk;
        batch
    })
}
