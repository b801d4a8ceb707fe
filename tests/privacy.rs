//! The scrubber against the shared PII corpus (`tests/fixtures/pii-corpus.json`): every
//! secret vanishes and is counted under its rule, and ordinary operational text survives.

use licensor::privacy::{is_card_number, scrub};

fn corpus() -> serde_json::Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/pii-corpus.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn every_secret_in_the_corpus_is_removed_and_counted_under_its_rule() {
    let corpus = corpus();
    let fragments: Vec<&str> =
        corpus["sensitive_fragments"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    for entry in corpus["secrets"].as_array().unwrap() {
        let (rule, value) = (entry["rule"].as_str().unwrap(), entry["value"].as_str().unwrap());
        for text in
            [value.to_owned(), format!("failed for {value} while saving"), format!("{value}; retrying")]
        {
            let (out, counts) = scrub(&text);
            for fragment in &fragments {
                assert!(!out.contains(fragment), "{rule}: {fragment:?} survived in {out:?} (from {text:?})");
            }
            assert!(
                counts.by_name().get(rule).copied().unwrap_or(0) >= 1,
                "{rule} not counted for {text:?}: {counts:?} -> {out:?}"
            );
        }
    }
}

#[test]
fn ordinary_text_survives_unchanged() {
    for keep in corpus()["keep"].as_array().unwrap() {
        let keep = keep.as_str().unwrap();
        let (out, counts) = scrub(keep);
        assert_eq!(out, keep);
        assert_eq!(counts.total(), 0, "{keep:?}: {counts:?}");
    }
}

#[test]
fn a_sentence_with_several_secrets_keeps_its_shape() {
    let (out, counts) = scrub("User jane.doe@example.com (203.0.113.42) paid with 4111-1111-1111-1111");
    assert_eq!(out, "User [EMAIL] ([IP]) paid with [CARD]");
    assert_eq!(counts.total(), 3);
    // Idempotent: scrubbing scrubbed text changes nothing and counts nothing.
    let (again, counts) = scrub(&out);
    assert_eq!(again, out);
    assert_eq!(counts.total(), 0);
}

#[test]
fn card_detection_needs_luhn_and_a_network_prefix() {
    assert!(is_card_number("4111111111111111"));
    assert!(!is_card_number("4111111111111112"), "Luhn fails");
    assert!(!is_card_number("2026112110300012"), "a timestamp-like number with a valid-looking length");
    assert!(!is_card_number("1234567812345670"), "Luhn passes but no network starts with 1");
}
