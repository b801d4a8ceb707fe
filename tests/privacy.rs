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

use licensor::privacy::{cut_stack, hash_user_id, normalize_path, Redactions};

#[test]
fn user_ids_are_keyed_hashes_that_depend_on_the_install_salt() {
    let salt_a = [7u8; 32];
    let salt_b = [8u8; 32];
    let a = hash_user_id(&salt_a, "42");
    assert_eq!(a.len(), 64);
    assert!(a.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
    assert_eq!(a, hash_user_id(&salt_a, "42"), "stable within an install");
    assert_ne!(a, hash_user_id(&salt_b, "42"), "another install cannot link it");
    assert_ne!(a, hash_user_id(&salt_a, "43"));
    // Not the plain SHA-256 of the id, which a dictionary would reverse.
    use sha2::Digest as _;
    let plain: String = sha2::Sha256::digest(b"42").iter().map(|b| format!("{b:02x}")).collect();
    assert_ne!(a, plain);
}

#[test]
fn paths_are_normalised_to_kinds_of_things() {
    for (raw, normal) in [
        ("/users/42/orders/7", "/users/:id/orders/:id"),
        ("/items/550e8400-e29b-41d4-a716-446655440000", "/items/:id"),
        ("/blobs/9f86d081884c7d659a2feaa0c55ad015", "/blobs/:id"),
        ("/by-email/jane.doe@example.com/settings", "/by-email/:id/settings"),
        ("/reset/eyJhbGciOiJIUzI1NiJ9abc123XYZ", "/reset/:id"),
        ("/api/v2/notifications?page=3&email=x@y.com", "/api/v2/notifications"),
        ("/", "/"),
        ("", "/"),
        ("/health", "/health"),
    ] {
        assert_eq!(normalize_path(raw), normal, "{raw}");
    }
}

#[test]
fn stacks_keep_five_frames_without_paths_or_pii() {
    let frames = [
        "at db::pool::get (/home/jsmith/app/src/db/pool.rs:42)",
        "at repo::load C:\\Users\\JohnDoe\\app\\repo.rs:7",
        "at handlers::show user=jane.doe@example.com",
        "",
        "at 4",
        "at 5",
        "at 6",
        "at 7",
    ];
    let mut counts = Redactions::default();
    let cut = cut_stack(&frames, &mut counts);
    assert_eq!(
        cut,
        [
            "at db::pool::get (pool.rs:42)",
            "at repo::load repo.rs:7",
            "at handlers::show user=[EMAIL]",
            "at 4",
            "at 5"
        ]
    );
    assert_eq!(counts.get(licensor::privacy::Rule::Email), 1);
}

#[test]
fn a_windows_home_path_inside_a_url_path_is_still_found() {
    let (scrubbed, counts) = licensor::privacy::scrub("GET /users/C:\\Users\\JohnDoe\\AppData\\app.exe");
    assert_eq!(scrubbed, "GET /users/C:\\Users\\[USER]\\AppData\\app.exe");
    assert_eq!(counts.get(licensor::privacy::Rule::HomePath), 1);
    // A URL's own /users/ segment is not a home directory.
    assert_eq!(licensor::privacy::scrub("GET /users/{id}/orders").0, "GET /users/{id}/orders");
}

#[test]
fn names_are_identifiers_or_dropped_and_counted() {
    use licensor::privacy::{keep_name, route_template, Redactions};
    let mut counts = Redactions::default();
    for name in [
        "export_pdf",
        "GET /users/{id}",
        "billing.invoices",
        "x86_64",
        "1.4.2+build.7",
        "@licensor/node",
        "/api/v2/customers/:id",
        "sso",
        "dd1",
    ] {
        assert_eq!(keep_name(name, &mut counts), Some(name), "{name}");
    }
    assert_eq!(counts.total(), 0);
    let long = "a".repeat(129);
    for name in [
        "",
        " export",
        "export ",
        "GET  /a",
        "Payment failed, Jane!",
        "name=value",
        "/search?q=x",
        "jane%40example.com",
        "~jdoe/bin",
        r"C:\Users\jdoe",
        "café",
        long.as_str(),
        // Fits the grammar, but a rule finds something in it.
        "user jane@example.com",
        "tenant 4111111111111111",
        "Zx9Qe4Lm2Rt7Yb1Kc8Wd",
    ] {
        assert_eq!(keep_name(name, &mut counts), None, "{name}");
    }
    assert_eq!(counts.by_name().get("dropped_name"), Some(&15));
    assert_eq!(counts.total(), 15, "a dropped name counts once, under dropped_name only");

    assert_eq!(route_template("/files/{name:.*}"), "/files/{name}");
    assert_eq!(route_template(r"/users/{id:\d+}/orders/{order}"), "/users/{id}/orders/{order}");
    assert_eq!(route_template("/a/:id"), "/a/:id");
}

#[test]
fn the_corpus_covers_forty_classes_and_twenty_keep_cases() {
    let corpus = corpus();
    let classes: std::collections::BTreeSet<&str> =
        corpus["secrets"].as_array().unwrap().iter().map(|s| s["class"].as_str().unwrap()).collect();
    assert!(classes.len() >= 40, "{} classes", classes.len());
    assert!(corpus["keep"].as_array().unwrap().len() >= 20);
}
