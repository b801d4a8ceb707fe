//! The license server, black-box: real HTTP against a real server, each case on SQLite and on
//! PostgreSQL. Every protocol status is reached for real, and outcomes are asserted exactly.

mod common;

use chrono::Duration;
use reqwest::Method;
use serde_json::{json, Value};

use common::{batch, nonce, Harness};
use licensor::lease;
use licensor::license::{Expiry, Tier};
use licensor::protocol::{self, CheckInStatus};

on_both_backends!(
    a_valid_check_in_answers_a_lease_bound_to_the_nonce,
    tier_rules_for_each_tier,
    seats_are_limited_and_free_themselves,
    revoke_then_check_in_then_reinstate,
    expired_and_not_yet_valid_licenses,
    untrusted_and_unreadable_keys,
    the_same_batch_sent_twice_is_stored_once,
    the_same_batch_sent_concurrently_is_stored_once,
    malformed_requests_get_exact_errors,
    admin_routes_require_the_token,
    admin_issue_list_summary_and_erase,
    pii_in_every_batch_string_never_reaches_the_tables,
    rate_limit_answers_429_with_retry_after,
    a_batch_repeating_a_fingerprint_is_merged,
    concurrent_new_instances_never_exceed_the_seats,
    the_summary_merges_sketches_instead_of_averaging_percentiles,
);

/// One batch of a route at 10 ms and one at 1,000 ms: averaging their medians would say
/// 505 ms, which no request took. The merged sketches say 10 ms (within 1%); a route whose
/// batches carry no sketch falls back to the average and says so.
fn the_summary_merges_sketches_instead_of_averaging_percentiles(h: Harness) {
    let key = h.license(Tier::Pro, 3);
    let route_batch = |ms: f64, n: u64, sketched: bool| {
        let mut sketch = licensor::sketch::Sketch::default();
        sketch.add_n(ms, n);
        let mut b = batch(uuid::Uuid::new_v4(), 0, 0, 0);
        b["performance"] = json!([
            { "method": "GET", "route": "/sketched", "count": n, "errors": 0, "p50_ms": ms, "p95_ms": ms,
              "p99_ms": ms, "max_ms": ms, "sketch": sketch.encode() },
            { "method": "GET", "route": "/plain", "count": n, "errors": 0, "p50_ms": ms, "p95_ms": ms,
              "p99_ms": ms, "max_ms": ms, "sketch": if sketched { sketch.encode() } else { String::new() } },
        ]);
        b.to_string()
    };
    assert_eq!(status(&h.check_in(&key, "merged", Some(&route_batch(10.0, 101, true)))), "valid");
    h.advance(Duration::minutes(5));
    assert_eq!(status(&h.check_in(&key, "merged", Some(&route_batch(1000.0, 100, false)))), "valid");
    let s = summary(&h, "merged", 24);
    let route = |name: &str| {
        s["performance"].as_array().unwrap().iter().find(|r| r["route"] == name).unwrap().clone()
    };
    let sketched = route("/sketched");
    assert_eq!(
        (sketched["count"].as_i64(), sketched["percentiles"].as_str()),
        (Some(201), Some("merged_sketches"))
    );
    assert!((sketched["p50_ms"].as_f64().unwrap() - 10.0).abs() <= 0.1, "{sketched}");
    assert!((sketched["p99_ms"].as_f64().unwrap() - 1000.0).abs() <= 10.0, "{sketched}");
    assert_eq!(sketched["max_ms"], 1000.0);
    let plain = route("/plain");
    assert_eq!(plain["percentiles"], "weighted_average");
    let average = (10.0 * 101.0 + 1000.0 * 100.0) / 201.0;
    assert!((plain["p50_ms"].as_f64().unwrap() - average).abs() < 1e-9, "{plain}");
}

fn concurrent_new_instances_never_exceed_the_seats(h: Harness) {
    let key = h.license(Tier::Enterprise, 3);
    let statuses: Vec<String> = std::thread::scope(|s| {
        let runs: Vec<_> = (0..10)
            .map(|i| {
                let (h, key) = (&h, &key);
                s.spawn(move || status(&h.check_in(key, &format!("rush-{i}"), None)).to_owned())
            })
            .collect();
        runs.into_iter().map(|r| r.join().unwrap()).collect()
    });
    assert_eq!(statuses.iter().filter(|s| *s == "valid").count(), 3, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| *s == "seat_limit_exceeded").count(), 7, "{statuses:?}");
    let (_, list) = h.admin(Method::GET, "/v1/admin/licenses", None);
    assert_eq!(list["licenses"][0]["seats_in_use"], 3);
    // Refused newcomers leave their check-in in the history and no instance behind.
    assert_eq!(list["licenses"][0]["instance_count"], 3);
}

fn a_batch_repeating_a_fingerprint_is_merged(h: Harness) {
    let key = h.license(Tier::Pro, 1);
    let mut b = batch(uuid::Uuid::new_v4(), 1, 0, 2);
    b["errors"][1]["fingerprint"] = b["errors"][0]["fingerprint"].clone();
    b["errors"][1]["message"] = json!("the later message");
    assert_eq!(status(&h.check_in(&key, "repeats", Some(&b.to_string()))), "valid");
    let s = summary(&h, "repeats", 24);
    assert_eq!(s["errors"].as_array().unwrap().len(), 1, "{s}");
    assert_eq!(s["errors"][0]["count"], 4);
    // A second batch adds to the same group.
    b["batch_id"] = json!(uuid::Uuid::new_v4());
    assert_eq!(status(&h.check_in(&key, "repeats", Some(&b.to_string()))), "valid");
    assert_eq!(summary(&h, "repeats", 24)["errors"][0]["count"], 8);
}

fn status(v: &Value) -> &str {
    v["status"].as_str().unwrap()
}

fn a_valid_check_in_answers_a_lease_bound_to_the_nonce(h: Harness) {
    let key = h.license(Tier::Pro, 3);
    let batch_id = uuid::Uuid::new_v4();
    let telemetry = batch(batch_id, 50, 20, 5).to_string();
    let my_nonce = nonce();
    let body = h.check_in_body(&key, "inst-1", &my_nonce, Some(&telemetry));
    let (code, r) = h.post_raw("/v1/check-ins", "application/json", body);
    assert_eq!(code, 200, "{r}");
    assert_eq!(status(&r), "valid");
    let now = h.now();
    assert_eq!(r["server_time"], licensor::time::format(&now));
    assert_eq!(r["next_check_in_at"], licensor::time::format(&(now + Duration::days(7))));
    assert_eq!(r["valid_until"], licensor::time::format(&(now + Duration::days(7 + 14))));
    assert_eq!(r["telemetry"]["batch_id"], batch_id.to_string());
    assert_eq!(r["telemetry"]["accepted"], true);
    assert_eq!(r["telemetry"]["duplicate"], false);
    assert_eq!(r["telemetry"]["digest"], protocol::digest(telemetry.as_bytes()));

    let lease_text = r["lease"].as_str().unwrap();
    let lease =
        lease::verify_signature(lease_text, &h.ring).expect("the lease verifies with the ring clients trust");
    assert_eq!(lease.kid, "lease-test");
    assert_eq!(lease.status, CheckInStatus::Valid);
    assert_eq!(lease.nonce, my_nonce);
    assert_eq!(lease.instance_id, "inst-1");
    assert_eq!(lease.license_id.to_string(), r["license_id"].as_str().unwrap());
    assert_eq!(licensor::time::format(&lease.valid_until), r["valid_until"].as_str().unwrap());
    assert_eq!(licensor::time::format(&lease.next_check_in_at), r["next_check_in_at"].as_str().unwrap());
    assert_eq!(lease.server_time, now);

    // A different nonce gets a different lease: an old answer cannot serve a new request.
    let again = h.check_in(&key, "inst-1", Some(&batch(uuid::Uuid::new_v4(), 1, 0, 0).to_string()));
    assert_ne!(again["lease"], r["lease"]);

    // One raw payload row per batch; the errors deduplicated by fingerprint.
    let counts = h.store.telemetry_counts("inst-1").unwrap();
    assert_eq!(counts["telemetry_batches"], 2);
    assert_eq!(counts["telemetry_payloads"], 2);
    assert_eq!(counts["telemetry_errors"], 5);
    let s = summary(&h, "inst-1", 24);
    assert_eq!(s["usage"].as_array().unwrap().len(), 50);
    let feature_0 = s["usage"].as_array().unwrap().iter().find(|u| u["name"] == "feature_0").unwrap();
    assert_eq!(feature_0["count"], 20, "10 from each batch");
    assert_eq!(s["performance"].as_array().unwrap().len(), 20);
    assert_eq!(s["sessions"]["count"], 28);
}

fn tier_rules_for_each_tier(h: Harness) {
    let telemetry = || batch(uuid::Uuid::new_v4(), 3, 1, 1).to_string();
    for (tier, interval, grace) in [(Tier::Community, 1, 7), (Tier::Pro, 7, 14)] {
        let key = h.license(tier, 5);
        let instance = format!("{tier}-no-telemetry");
        let r = h.check_in(&key, &instance, None);
        assert_eq!(status(&r), "telemetry_required", "{tier}");
        assert_eq!(r["valid_until"], r["server_time"], "{tier}: the lease is not extended");
        assert!(r["telemetry"].is_null());
        let lease = lease::verify_signature(r["lease"].as_str().unwrap(), &h.ring).unwrap();
        assert_eq!(lease.status, CheckInStatus::TelemetryRequired);
        assert_eq!(h.store.telemetry_counts(&instance).unwrap()["telemetry_batches"], 0);

        let r = h.check_in(&key, &format!("{tier}-with-telemetry"), Some(&telemetry()));
        assert_eq!(status(&r), "valid", "{tier}");
        let now = h.now();
        assert_eq!(r["next_check_in_at"], licensor::time::format(&(now + Duration::days(interval))));
        assert_eq!(r["valid_until"], licensor::time::format(&(now + Duration::days(interval + grace))));
    }
    let key = h.license(Tier::Enterprise, 5);
    let r = h.check_in(&key, "ent-air-gapped", None);
    assert_eq!(status(&r), "valid", "Enterprise may disable telemetry");
    assert_eq!(r["valid_until"], licensor::time::format(&(h.now() + Duration::days(60))));
    assert!(r["telemetry"].is_null());
    let r = h.check_in(&key, "ent-sharing", Some(&telemetry()));
    assert_eq!(status(&r), "valid");
    assert_eq!(r["telemetry"]["accepted"], true);

    // A license's own check-in interval overrides the tier's.
    let key = h.license_with(Tier::Community, 1, |r| {
        r.check_in_interval = Some(std::time::Duration::from_secs(6 * 3600))
    });
    let r = h.check_in(&key, "community-6h", Some(&telemetry()));
    assert_eq!(r["next_check_in_at"], licensor::time::format(&(h.now() + Duration::hours(6))));
    assert_eq!(r["valid_until"], licensor::time::format(&(h.now() + Duration::hours(6) + Duration::days(7))));
}

fn seats_are_limited_and_free_themselves(h: Harness) {
    let key = h.license(Tier::Community, 2);
    let t = || Some(batch(uuid::Uuid::new_v4(), 1, 0, 0).to_string());
    assert_eq!(status(&h.check_in(&key, "a", t().as_deref())), "valid");
    assert_eq!(status(&h.check_in(&key, "b", t().as_deref())), "valid");
    let r = h.check_in(&key, "c", t().as_deref());
    assert_eq!(status(&r), "seat_limit_exceeded");
    assert_eq!(r["valid_until"], r["server_time"]);
    assert_eq!(r["telemetry"]["accepted"], false, "a refused check-in stores nothing");
    assert_eq!(h.store.telemetry_counts("c").unwrap()["telemetry_batches"], 0);
    // The holders keep working.
    assert_eq!(status(&h.check_in(&key, "a", t().as_deref())), "valid");

    // b keeps checking in; a stops. Community leases last 1 day + 7 days of grace.
    h.advance(Duration::days(5));
    assert_eq!(status(&h.check_in(&key, "b", t().as_deref())), "valid");
    assert_eq!(status(&h.check_in(&key, "c", t().as_deref())), "seat_limit_exceeded");
    h.advance(Duration::days(3) + Duration::seconds(1));
    // a's lease has run out: its seat is free for c, and then the license is full again.
    assert_eq!(status(&h.check_in(&key, "c", t().as_deref())), "valid");
    assert_eq!(status(&h.check_in(&key, "a", t().as_deref())), "seat_limit_exceeded");
}

fn revoke_then_check_in_then_reinstate(h: Harness) {
    let key = h.license(Tier::Pro, 2);
    let t = || Some(batch(uuid::Uuid::new_v4(), 1, 0, 0).to_string());
    let r = h.check_in(&key, "inst", t().as_deref());
    assert_eq!(status(&r), "valid");
    let license_id = r["license_id"].as_str().unwrap().to_owned();

    let (code, body) = h.admin(
        Method::POST,
        &format!("/v1/admin/licenses/{license_id}/revoke"),
        Some(&json!({ "reason": "chargeback" })),
    );
    assert_eq!(code, 200, "{body}");
    assert_eq!(body, json!({ "license_id": license_id, "revoked": true }));
    let r = h.check_in(&key, "inst", t().as_deref());
    assert_eq!(status(&r), "revoked");
    assert!(r["message"].as_str().unwrap().contains("chargeback"));
    assert_eq!(r["valid_until"], r["server_time"]);
    assert_eq!(
        lease::verify_signature(r["lease"].as_str().unwrap(), &h.ring).unwrap().status,
        CheckInStatus::Revoked
    );
    // Revocation holds for every instance, new ones included.
    assert_eq!(status(&h.check_in(&key, "other", t().as_deref())), "revoked");

    let (code, _) = h.admin(Method::POST, &format!("/v1/admin/licenses/{license_id}/reinstate"), None);
    assert_eq!(code, 200);
    assert_eq!(status(&h.check_in(&key, "inst", t().as_deref())), "valid");

    // Revoking needs a license id; reinstating, a license this server knows.
    let (code, body) = h.admin(Method::POST, "/v1/admin/licenses/not-a-uuid/revoke", None);
    assert_eq!((code, body["error"]["code"].as_str()), (400, Some("invalid_license_id")));
    let (code, body) =
        h.admin(Method::POST, "/v1/admin/licenses/00000000-0000-0000-0000-000000000000/reinstate", None);
    assert_eq!(code, 404);
    assert_eq!(body["error"]["code"], "not_found");
}

fn expired_and_not_yet_valid_licenses(h: Harness) {
    let t = || Some(batch(uuid::Uuid::new_v4(), 1, 0, 0).to_string());
    let later = h.license_with(Tier::Pro, 1, |r| r.not_before = Some(common::t0() + Duration::days(2)));
    let r = h.check_in(&later, "early", t().as_deref());
    assert_eq!(status(&r), "not_yet_valid");
    assert_eq!(r["next_check_in_at"], licensor::time::format(&(common::t0() + Duration::days(2))));

    let short = h.license_with(Tier::Pro, 1, |r| r.expiry = Expiry::At(common::t0() + Duration::days(10)));
    let r = h.check_in(&short, "late", t().as_deref());
    assert_eq!(status(&r), "valid");
    assert_eq!(
        r["valid_until"],
        licensor::time::format(&(common::t0() + Duration::days(10))),
        "a lease never outlives its license"
    );
    h.advance(Duration::days(10));
    let r = h.check_in(&short, "late", t().as_deref());
    assert_eq!(status(&r), "expired");
    assert_eq!(r["telemetry"]["accepted"], false);
    assert_eq!(status(&h.check_in(&later, "early", t().as_deref())), "valid");
}

fn untrusted_and_unreadable_keys(h: Harness) {
    let t = Some(batch(uuid::Uuid::new_v4(), 1, 0, 0).to_string());
    let key = h.license(Tier::Pro, 1);
    let mut tampered = key.clone().into_bytes();
    let i = tampered.len() - 5;
    tampered[i] = if tampered[i] == b'A' { b'B' } else { b'A' };
    let r = h.check_in(&String::from_utf8(tampered).unwrap(), "x", t.as_deref());
    assert_eq!(status(&r), "bad_signature");
    assert!(r["lease"].is_string(), "a readable license gets a lease saying so");
    assert_eq!(r["telemetry"]["accepted"], false);

    // The server's own lease key, stolen from the internet-facing server, mints a perpetual
    // million-seat license: its key is trusted for leases only, so the license is unknown.
    let lease_key =
        licensor::keys::Signer::load(&h.dir.path().join("keys/lease-test.lease.private.pem")).unwrap();
    let minted = licensor::token::sign(
        &licensor::license::LicensePayload {
            v: 1,
            kid: "lease-test".into(),
            license_id: uuid::Uuid::new_v4(),
            licensee: "Mallory".into(),
            tier: Tier::Enterprise,
            issued_at: common::t0(),
            not_before: common::t0(),
            expires_at: None,
            seats: 1_000_000,
            features: vec![],
            check_in_interval_s: None,
        },
        lease_key.signing_key(),
    );
    let r = h.check_in(&minted, "x", t.as_deref());
    assert_eq!(status(&r), "unknown_key", "{r}");
    assert_eq!(
        licensor::license::verify(&minted, &h.ring, h.now()).unwrap_err().verdict(),
        licensor::Verdict::UnknownKey
    );
    assert!(matches!(
        licensor::license::issue(
            &lease_key,
            licensor::license::LicenseRequest {
                licensee: "Mallory".into(),
                tier: Tier::Enterprise,
                expiry: Expiry::Perpetual,
                not_before: None,
                seats: 1,
                features: vec![],
                check_in_interval: None,
            },
            h.now()
        ),
        Err(licensor::license::IssueError::NotALicenseKey { .. })
    ));

    let stranger = licensor::keys::Signer::generate("stranger", licensor::keys::Role::License).unwrap();
    let foreign = licensor::license::issue(
        &stranger,
        licensor::license::LicenseRequest {
            licensee: "Nobody".into(),
            tier: Tier::Enterprise,
            expiry: Expiry::Perpetual,
            not_before: None,
            seats: 100,
            features: vec![],
            check_in_interval: None,
        },
        common::t0(),
    )
    .unwrap();
    let r = h.check_in(&foreign.key, "x", t.as_deref());
    assert_eq!(status(&r), "unknown_key");
    assert!(r["message"].as_str().unwrap().contains("stranger"));

    for garbage in ["", "garbage", "LEASE1.e30.AAAA", &"A".repeat(20_000)] {
        let r = h.check_in(garbage, "x", t.as_deref());
        assert_eq!(status(&r), "malformed", "{garbage:.20}");
        assert!(r.get("lease").is_none() && r.get("license_id").is_none(), "{r}");
    }
    // Nothing about untrusted licenses was recorded as a license.
    let (_, list) = h.admin(Method::GET, "/v1/admin/licenses", None);
    assert_eq!(list["licenses"].as_array().unwrap().len(), 0, "{list}");
}

fn the_same_batch_sent_twice_is_stored_once(h: Harness) {
    let key = h.license(Tier::Community, 1);
    let telemetry = batch(uuid::Uuid::new_v4(), 10, 3, 2).to_string();
    let first = h.check_in(&key, "retrier", Some(&telemetry));
    let second = h.check_in(&key, "retrier", Some(&telemetry));
    assert_eq!(first["telemetry"]["duplicate"], false);
    assert_eq!(second["telemetry"]["duplicate"], true);
    assert_eq!(second["telemetry"]["accepted"], true);
    assert_eq!(second["telemetry"]["digest"], first["telemetry"]["digest"]);
    let counts = h.store.telemetry_counts("retrier").unwrap();
    assert_eq!(counts["telemetry_batches"], 1);
    assert_eq!(counts["telemetry_payloads"], 1);
    let summary = summary(&h, "retrier", 24);
    assert_eq!(summary["errors"][0]["count"], 2, "error counts are not added twice: {summary}");
    assert_eq!(summary["usage"][0]["count"], 19);
}

fn the_same_batch_sent_concurrently_is_stored_once(h: Harness) {
    let key = h.license(Tier::Community, 1);
    let telemetry = batch(uuid::Uuid::new_v4(), 20, 5, 3).to_string();
    let duplicates: Vec<bool> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|_| {
                s.spawn(|| {
                    h.check_in(&key, "racer", Some(&telemetry))["telemetry"]["duplicate"].as_bool().unwrap()
                })
            })
            .collect();
        handles.into_iter().map(|t| t.join().unwrap()).collect()
    });
    assert_eq!(duplicates.iter().filter(|d| !**d).count(), 1, "{duplicates:?}");
    let counts = h.store.telemetry_counts("racer").unwrap();
    assert_eq!(counts["telemetry_batches"], 1);
    assert_eq!(counts["telemetry_payloads"], 1);
    assert_eq!(counts["telemetry_errors"], 3);
    assert_eq!(summary(&h, "racer", 24)["usage"][0]["count"], 29, "counted once");
    assert_eq!(summary(&h, "racer", 24)["errors"][0]["count"], 2);
}

fn error_code(h: &Harness, content_type: &str, body: Vec<u8>) -> (u16, String) {
    let (code, v) = h.post_raw("/v1/check-ins", content_type, body);
    let message = v["error"]["message"].as_str().unwrap_or_default();
    assert!(!message.is_empty(), "{v}");
    (code, v["error"]["code"].as_str().unwrap().to_owned())
}

fn malformed_requests_get_exact_errors(h: Harness) {
    let key = h.license(Tier::Pro, 1);
    let good = |f: &dyn Fn(&mut Value)| {
        let mut v = json!({
            "license_key": key, "instance_id": "i", "nonce": nonce(), "software_version": "1",
            "telemetry": batch(uuid::Uuid::new_v4(), 1, 0, 0)
        });
        f(&mut v);
        serde_json::to_vec(&v).unwrap()
    };
    let json_ct = "application/json";
    assert_eq!(error_code(&h, json_ct, b"{not json".to_vec()), (400, "invalid_request".into()));
    assert_eq!(error_code(&h, json_ct, b"".to_vec()), (400, "invalid_request".into()));
    assert_eq!(
        error_code(&h, json_ct, good(&|v| v["instance_id"] = json!(5))),
        (400, "invalid_request".into())
    );
    assert_eq!(
        error_code(&h, json_ct, good(&|v| v["telemetry_disabled"] = json!("yes"))),
        (400, "invalid_request".into())
    );
    assert_eq!(
        error_code(
            &h,
            json_ct,
            good(&|v| {
                v.as_object_mut().unwrap().remove("nonce");
            })
        ),
        (400, "invalid_request".into())
    );
    assert_eq!(
        error_code(&h, json_ct, good(&|v| v["nonce"] = json!("short"))),
        (400, "invalid_nonce".into())
    );
    assert_eq!(
        error_code(&h, json_ct, good(&|v| v["instance_id"] = json!("has space"))),
        (400, "invalid_instance_id".into())
    );
    assert_eq!(
        error_code(&h, json_ct, good(&|v| v["telemetry_disabled"] = json!(true))),
        (400, "conflicting_telemetry".into())
    );
    assert_eq!(
        error_code(
            &h,
            json_ct,
            good(&|v| {
                v.as_object_mut().unwrap().remove("telemetry");
            })
        ),
        (400, "missing_telemetry".into())
    );
    assert_eq!(
        error_code(&h, json_ct, good(&|v| v["telemetry"]["schema"] = json!(2))),
        (400, "unsupported_schema".into())
    );
    assert_eq!(
        error_code(&h, json_ct, good(&|v| v["telemetry"] = json!("text"))),
        (400, "invalid_telemetry".into())
    );
    assert_eq!(
        error_code(&h, json_ct, good(&|v| v["telemetry"]["usage"][0]["kind"] = json!("telepathy"))),
        (400, "invalid_telemetry".into())
    );
    assert_eq!(
        error_code(&h, json_ct, good(&|v| v["telemetry"]["usage"][0]["name"] = json!("x".repeat(129)))),
        (400, "invalid_telemetry".into())
    );
    assert_eq!(
        error_code(
            &h,
            json_ct,
            good(&|v| v["telemetry"]["usage"] =
                json!(vec![json!({"kind": "api", "name": "n", "count": 1}); 2001]))
        ),
        (400, "telemetry_limit_exceeded".into())
    );
    assert_eq!(error_code(&h, "text/plain", good(&|_| {})), (415, "unsupported_media_type".into()));
    let huge = good(&|v| v["padding"] = json!("x".repeat(300 * 1024)));
    assert_eq!(error_code(&h, json_ct, huge), (413, "body_too_large".into()));

    let response = h.http.get(h.url("/v1/check-ins")).send().unwrap();
    assert_eq!(response.status().as_u16(), 405);
    assert_eq!(response.json::<Value>().unwrap()["error"]["code"], "method_not_allowed");
    let response = h.http.get(h.url("/nowhere")).send().unwrap();
    assert_eq!(response.status().as_u16(), 404);
    assert_eq!(response.json::<Value>().unwrap()["error"]["code"], "not_found");

    // Unknown fields are ignored, as the protocol says.
    let (code, v) = h.post_raw("/v1/check-ins", json_ct, good(&|v| v["future_field"] = json!({"x": 1})));
    assert_eq!((code, v["status"].as_str()), (200, Some("valid")));

    for path in ["/healthz", "/readyz"] {
        let response = h.http.get(h.url(path)).send().unwrap();
        assert_eq!(response.status().as_u16(), 200, "{path}");
    }
}

fn admin_routes_require_the_token(h: Harness) {
    let routes = [
        (Method::POST, "/v1/admin/licenses"),
        (Method::GET, "/v1/admin/licenses"),
        (Method::POST, "/v1/admin/licenses/x/revoke"),
        (Method::POST, "/v1/admin/licenses/x/reinstate"),
        (Method::GET, "/v1/admin/instances"),
        (Method::GET, "/v1/admin/telemetry/summary?instance_id=x"),
        (Method::DELETE, "/v1/admin/instances/x/telemetry"),
    ];
    for (method, path) in routes {
        for auth in
            [None, Some("Bearer wrong-token-wrong-token-wrong"), Some("Basic dXNlcjpwYXNz"), Some("Bearer ")]
        {
            let mut request = h.http.request(method.clone(), h.url(path));
            if let Some(auth) = auth {
                request = request.header("authorization", auth);
            }
            let response = request.send().unwrap();
            assert_eq!(response.status().as_u16(), 401, "{method} {path} with {auth:?}");
            assert_eq!(response.headers()["www-authenticate"], "Bearer");
            assert_eq!(response.json::<Value>().unwrap()["error"]["code"], "unauthorized");
        }
    }
    let (code, _) = h.admin(Method::GET, "/v1/admin/licenses", None);
    assert_eq!(code, 200);
}

fn summary(h: &Harness, instance: &str, hours: u32) -> Value {
    let (code, v) = h.admin(
        Method::GET,
        &format!("/v1/admin/telemetry/summary?instance_id={instance}&hours={hours}"),
        None,
    );
    assert_eq!(code, 200, "{v}");
    v
}

fn admin_issue_list_summary_and_erase(h: Harness) {
    let (code, issued) = h.admin(
        Method::POST,
        "/v1/admin/licenses",
        Some(&json!({ "tier": "pro", "licensee": "Admin Issued GmbH", "expires_at": "2027-06-01T00:00:00Z", "seats": 4, "features": ["sso"] })),
    );
    assert_eq!(code, 201, "{issued}");
    let key = issued["license_key"].as_str().unwrap();
    assert_eq!(issued["payload"]["seats"], 4);
    let license_id = issued["payload"]["license_id"].as_str().unwrap();

    for (body, code_expected) in [
        (json!({ "tier": "pro", "licensee": "X" }), "invalid_request"),
        (json!({ "tier": "gold", "licensee": "X", "perpetual": true }), "invalid_request"),
        (json!({ "tier": "pro", "licensee": "", "perpetual": true }), "invalid_license"),
        (json!({ "tier": "pro", "licensee": "X", "expires_at": "2001-01-01T00:00:00Z" }), "invalid_license"),
    ] {
        let (code, v) = h.admin(Method::POST, "/v1/admin/licenses", Some(&body));
        assert_eq!((code, v["error"]["code"].as_str().unwrap()), (400, code_expected), "{body}");
    }

    let telemetry = batch(uuid::Uuid::new_v4(), 4, 2, 1).to_string();
    assert_eq!(status(&h.check_in(key, "summarised", Some(&telemetry))), "valid");

    let (_, list) = h.admin(Method::GET, "/v1/admin/licenses", None);
    let licenses = list["licenses"].as_array().unwrap();
    assert_eq!(licenses.len(), 1);
    let l = &licenses[0];
    assert_eq!(l["license_id"], license_id);
    assert_eq!(l["licensee"], "Admin Issued GmbH");
    assert_eq!(l["issued_here"], true);
    assert_eq!(l["revoked"], false);
    assert_eq!(l["instance_count"], 1);
    assert_eq!(l["seats_in_use"], 1);
    assert_eq!(l["last_check_in_at"], licensor::time::format(&h.now()));

    let (_, instances) = h.admin(Method::GET, "/v1/admin/instances", None);
    let i = &instances["instances"][0];
    assert_eq!(i["instance_id"], "summarised");
    assert_eq!(i["license_id"], license_id);
    assert_eq!(i["software_version"], "1.4.2");
    assert_eq!(i["last_status"], "valid");

    let s = summary(&h, "summarised", 24);
    assert_eq!(s["batches"], 1);
    assert_eq!(s["usage"].as_array().unwrap().len(), 4);
    assert_eq!(s["usage"][0], json!({ "kind": "ui_action", "name": "feature_3", "count": 13 }));
    assert_eq!(s["performance"].as_array().unwrap().len(), 2);
    assert_eq!(s["performance"][0]["count"], 50);
    assert_eq!(s["performance"][0]["p99_ms"], 88.0);
    assert_eq!(s["errors"][0]["message"], "query 0 timed out");
    assert_eq!(s["sessions"]["count"], 14);
    assert_eq!(s["sessions"]["total_duration_s"], 9120);
    assert_eq!(s["sessions"]["hourly"].as_array().unwrap().len(), 24);

    // Past the window, nothing is summarised (errors are kept, but last seen before it).
    h.advance(Duration::hours(30));
    let s = summary(&h, "summarised", 24);
    assert_eq!((s["batches"].as_i64(), s["usage"].as_array().unwrap().len()), (Some(0), 0));
    assert_eq!(s["errors"].as_array().unwrap().len(), 0);

    let (code, v) = h.admin(Method::GET, "/v1/admin/telemetry/summary?instance_id=ghost", None);
    assert_eq!((code, v["error"]["code"].as_str().unwrap()), (404, "not_found"));
    let (code, _) = h.admin(Method::GET, "/v1/admin/telemetry/summary?instance_id=summarised&hours=0", None);
    assert_eq!(code, 400);
    let (code, _) = h.admin(Method::GET, "/v1/admin/telemetry/summary", None);
    assert_eq!(code, 400);

    let (code, erased) = h.admin(Method::DELETE, "/v1/admin/instances/summarised/telemetry", None);
    assert_eq!(code, 200, "{erased}");
    assert_eq!(erased["removed"]["telemetry_payloads"], 1);
    assert_eq!(erased["removed"]["telemetry_batches"], 1);
    assert_eq!(erased["removed"]["telemetry_errors"], 1);
    assert!(h.store.telemetry_counts("summarised").unwrap().values().all(|n| *n == 0));
}

fn pii_in_every_batch_string_never_reaches_the_tables(h: Harness) {
    let (secrets, fragments) = common::pii_corpus();
    let key = h.license(Tier::Pro, 100);
    for (i, secret) in secrets.iter().enumerate() {
        // Names may not hold control characters; the PEM key goes where free text may.
        let name_safe = !secret.contains('\n');
        let name = |prefix: &str| if name_safe { format!("{prefix} {secret}") } else { prefix.to_owned() };
        let mut b = batch(uuid::Uuid::new_v4(), 1, 1, 1);
        b["environment"]["app_version"] =
            json!(if name_safe && secret.len() < 60 { secret.clone() } else { "1".into() });
        b["environment"]["os"] = json!(name("linux"));
        b["environment"]["arch"] = json!(name("x86_64"));
        b["environment"]["modules_enabled"] = json!([name("module")]);
        b["environment"]["health"] = json!({ name("svc"): "healthy" });
        b["usage"][0]["name"] = json!(name("feature"));
        b["performance"][0]["route"] = json!(name("/api"));
        b["performance"][0]["method"] =
            json!(if name_safe && secret.len() <= 16 { secret.clone() } else { "GET".into() });
        b["performance"][0]["sketch"] = json!(format!("sketch {secret}"));
        b["errors"][0]["type"] = json!(name("db"));
        b["errors"][0]["message"] = json!(format!("failed for {secret} at step 3"));
        b["errors"][0]["stack"] = json!([format!("at {secret}"), "at main"]);
        b["errors"][0]["fingerprint"] = json!(format!("{:x}", 0xabc0 + i));
        if secret.len() < 55 {
            b["redactions"] = json!({ name("rule"): 1 });
        }
        let r = h.check_in(&key, &format!("pii-{i}"), Some(&b.to_string()));
        assert_eq!(status(&r), "valid", "{secret}: {r}");
    }
    // The request's own version goes through the name rules too.
    let body = h.check_in_body(
        &key,
        "pii-version",
        &nonce(),
        Some(&batch(uuid::Uuid::new_v4(), 1, 0, 0).to_string()),
    );
    let body = String::from_utf8(body).unwrap().replace("\"1.4.2\"", "\"1.4.2 jane.doe@example.com\"");
    let (code, _) = h.post_raw("/v1/check-ins", "application/json", body.into_bytes());
    assert_eq!(code, 200);
    let (_, instances) = h.admin(Method::GET, "/v1/admin/instances", None);
    let version = instances["instances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["instance_id"] == "pii-version")
        .unwrap()["software_version"]
        .clone();
    // A version is a name: one carrying an address is dropped (stored empty), never renamed.
    assert_eq!(version, "");
    let stored = common::ids_masked(&h.store.telemetry_text().unwrap().join("\n"));
    assert!(stored.contains("[EMAIL]") && stored.contains("[CARD]"), "the corpus went through the tables");
    for fragment in &fragments {
        assert!(!stored.contains(fragment.as_str()), "{fragment:?} reached the telemetry tables");
    }
    for i in 0..secrets.len() {
        let s = common::ids_masked(&summary(&h, &format!("pii-{i}"), 24).to_string());
        for fragment in &fragments {
            assert!(!s.contains(fragment.as_str()), "{fragment:?} in the summary of pii-{i}");
        }
    }
}

fn rate_limit_answers_429_with_retry_after(h: Harness) {
    drop(h);
    let Some(h) = Harness::start_with(common::Db::Sqlite, |c| c.rate_limit_per_minute = 60) else { return };
    // Seats enough that the license's own limit (2 per seat and 30 a minute) is not reached.
    let key = h.license(Tier::Enterprise, 100);
    // A burst of a minute's allowance passes; then one more every second.
    let started = std::time::Instant::now();
    let mut passed = 0;
    let response = loop {
        let response = h
            .http
            .post(h.url("/v1/check-ins"))
            .header("content-type", "application/json")
            .body(h.check_in_body(&key, "looper", &nonce(), None))
            .send()
            .unwrap();
        if response.status().as_u16() != 200 {
            break response;
        }
        passed += 1;
        assert!(passed <= 200, "never limited");
    };
    let replenished = started.elapsed().as_secs() as usize + 1;
    assert!((60..=60 + replenished).contains(&passed), "{passed} passed in {:?}", started.elapsed());
    assert_eq!(response.status().as_u16(), 429);
    assert_eq!(response.headers()["retry-after"], "1", "one check-in a second replenishes");
    assert_eq!(response.json::<Value>().unwrap()["error"]["code"], "too_many_requests");
    // Other instances are not held back by one that loops.
    assert_eq!(status(&h.check_in(&key, "calm", None)), "valid");
    // A second later (by the limiters' clock) one more check-in of the looper is let through.
    h.server.as_ref().unwrap().limiter_clock.skip(std::time::Duration::from_millis(1_100));
    assert_eq!(status(&h.check_in(&key, "looper", None)), "valid");
}

/// `licensor inspect` reads a lease from a real check-in, as it reads license keys.
#[test]
fn inspect_reads_a_lease() {
    let h = Harness::start(common::Db::Sqlite).unwrap();
    let key = h.license(Tier::Enterprise, 1);
    let r = h.check_in(&key, "inspected", None);
    let lease = r["lease"].as_str().unwrap();
    let keys = h.dir.path().join("keys");
    let run = |at: &str| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_licensor"))
            .args(["inspect", lease, "--json", "--keys", keys.to_str().unwrap(), "--at", at])
            .output()
            .unwrap();
        (out.status.code().unwrap(), serde_json::from_slice::<Value>(&out.stdout).unwrap())
    };
    let (code, report) = run(&licensor::time::format(&h.now()));
    assert_eq!(code, 0, "{report}");
    assert_eq!(report["kind"], "lease");
    assert_eq!(report["verdict"], "valid");
    assert_eq!(report["payload"]["instance_id"], "inspected");
    assert_eq!(report["payload"]["status"], "valid");
    assert_eq!(report["payload"]["valid_until"], r["valid_until"]);
    let (code, report) = run(r["valid_until"].as_str().unwrap());
    assert_eq!((code, report["verdict"].as_str()), (1, Some("expired")));
}

fn licensor_cli(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_licensor"));
    command.args(args).env_remove("LICENSOR_ADMIN_TOKEN").env_remove("LICENSOR_SERVER_URL");
    for (k, v) in env {
        command.env(k, v);
    }
    let out = command.output().unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

/// The admin commands of the CLI against a real server, with their exit codes.
#[test]
fn admin_cli_talks_to_the_server() {
    let h = Harness::start(common::Db::Sqlite).unwrap();
    let env = [("LICENSOR_ADMIN_TOKEN", common::ADMIN_TOKEN), ("LICENSOR_SERVER_URL", h.base.as_str())];
    let (code, out, err) = licensor_cli(
        &[
            "admin",
            "issue",
            "--tier",
            "community",
            "--licensee",
            "CLI Corp",
            "--expires",
            "2027-01-01",
            "--seats",
            "3",
        ],
        &env,
    );
    assert_eq!(code, 0, "{out}{err}");
    let issued: Value = serde_json::from_str(&out).unwrap();
    let license_id = issued["payload"]["license_id"].as_str().unwrap().to_owned();
    assert_eq!(issued["payload"]["seats"], 3);

    let (code, out, _) = licensor_cli(&["admin", "revoke", &license_id, "--reason", "testing"], &env);
    assert_eq!(code, 0);
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap()["revoked"], true);
    let (code, out, _) = licensor_cli(&["admin", "licenses"], &env);
    assert_eq!(code, 0);
    let list: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(list["licenses"][0]["revoked_reason"], "testing");
    let (code, _, _) = licensor_cli(&["admin", "reinstate", &license_id], &env);
    assert_eq!(code, 0);

    // Instances, a page at a time and filtered, and a seat released from the command line.
    let key = issued["license_key"].as_str().unwrap();
    for instance in ["cli-a", "cli-b"] {
        let telemetry = batch(uuid::Uuid::new_v4(), 1, 1, 0).to_string();
        assert_eq!(status(&h.check_in(key, instance, Some(&telemetry))), "valid");
    }
    let (code, out, _) =
        licensor_cli(&["admin", "instances", "--limit", "1", "--license-id", &license_id], &env);
    assert_eq!(code, 0);
    let page: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(page["instances"].as_array().unwrap().len(), 1);
    let cursor = page["next_cursor"].as_str().unwrap().to_owned();
    let (_, out, _) = licensor_cli(&["admin", "instances", "--limit", "1", "--cursor", &cursor], &env);
    let next: Value = serde_json::from_str(&out).unwrap();
    assert_ne!(next["instances"][0]["instance_id"], page["instances"][0]["instance_id"]);
    let (code, out, _) = licensor_cli(&["admin", "deactivate", &license_id, "cli-a"], &env);
    assert_eq!(code, 0, "{out}");
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap()["held_seat"], true);
    let (code, out, _) = licensor_cli(&["admin", "instances", "--license-id", &license_id], &env);
    assert_eq!(code, 0);
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap()["instances"].as_array().unwrap().len(), 1);
    assert_eq!(licensor_cli(&["admin", "deactivate", &license_id, "cli-a"], &env).0, 1, "already released");

    // Renew and change from the command line: each answers the new key.
    let (code, out, err) = licensor_cli(&["admin", "renew", &license_id, "--expires", "2028-01-01"], &env);
    assert_eq!(code, 0, "{out}{err}");
    let renewed: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(renewed["payload"]["expires_at"], "2028-01-01T00:00:00Z");
    assert_eq!(renewed["payload"]["license_id"], license_id.as_str());
    let (code, out, err) = licensor_cli(
        &["admin", "update", &license_id, "--seats", "5", "--feature", "export", "--feature", "audit"],
        &env,
    );
    assert_eq!(code, 0, "{out}{err}");
    let updated: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(updated["payload"]["seats"], 5);
    assert_eq!(updated["payload"]["features"], serde_json::json!(["audit", "export"]));
    assert_eq!(updated["payload"]["expires_at"], "2028-01-01T00:00:00Z");
    let (code, out, _) = licensor_cli(&["admin", "update", &license_id, "--clear-features"], &env);
    assert_eq!(code, 0, "{out}");
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap()["payload"]["features"], serde_json::json!([]));
    let telemetry = batch(uuid::Uuid::new_v4(), 1, 1, 0).to_string();
    let answer = h.check_in(key, "cli-b", Some(&telemetry));
    assert_eq!(status(&answer), "valid");
    assert!(answer["license_key"].as_str().unwrap().starts_with("LIC1."), "{answer}");
    // Insights and jobs from the command line.
    let (code, out, err) = licensor_cli(&["admin", "jobs", "run", "rollup", "--day", "2026-11-21"], &env);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap()["run_key"], "2026-11-21");
    let (code, out, _) = licensor_cli(&["admin", "insights", "overview", "--days", "1"], &env);
    assert_eq!(code, 0, "{out}");
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap()["period"]["days"], 1);
    let (code, out, _) =
        licensor_cli(&["admin", "insights", "usage", "--kind", "feature", "--days", "2", "--csv"], &env);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.starts_with(
            "\"name\",\"count\",\"installs\",\"share\",\"previous_count\",\"change\",\"rising\"\n"
        ),
        "{out}"
    );
    assert_eq!(licensor_cli(&["admin", "insights", "usage"], &env).0, 2, "usage needs --kind");
    let (code, out, _) = licensor_cli(&["admin", "license", &license_id], &env);
    assert_eq!(code, 0, "{out}");
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap()["license"]["license_id"], license_id.as_str());
    let (code, out, _) = licensor_cli(&["admin", "licenses", "--search", "cli co"], &env);
    assert_eq!(code, 0, "{out}");
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap()["licenses"].as_array().unwrap().len(), 1);
    let (_, out, _) = licensor_cli(&["admin", "licenses", "--search", "nobody%"], &env);
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap()["licenses"], serde_json::json!([]));

    // Nothing to change is a usage error (exit 2), before any request.
    assert_eq!(licensor_cli(&["admin", "update", &license_id], &env).0, 2);
    assert_eq!(licensor_cli(&["admin", "renew", &license_id], &env).0, 2);

    // A refusal from the server is exit 1; no server at all is exit 2.
    let (code, out, _) = licensor_cli(&["admin", "summary", "--instance", "ghost"], &env);
    assert_eq!(code, 1);
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap()["error"]["code"], "not_found");
    let wrong =
        [("LICENSOR_ADMIN_TOKEN", "wrong-token-wrong-token-wrong"), ("LICENSOR_SERVER_URL", h.base.as_str())];
    assert_eq!(licensor_cli(&["admin", "instances"], &wrong).0, 1);
    let nowhere =
        [("LICENSOR_ADMIN_TOKEN", common::ADMIN_TOKEN), ("LICENSOR_SERVER_URL", "http://127.0.0.1:9")];
    let (code, _, err) = licensor_cli(&["admin", "instances"], &nowhere);
    assert_eq!(code, 2);
    assert!(err.contains("no answer from http://127.0.0.1:9"), "{err}");
}

/// `licensor admin webhooks ...` and `licensor admin audit` against a real server.
#[test]
fn admin_cli_manages_webhooks_and_reads_the_audit_log() {
    let h = Harness::start(common::Db::Sqlite).unwrap();
    let env = [("LICENSOR_ADMIN_TOKEN", common::ADMIN_TOKEN), ("LICENSOR_SERVER_URL", h.base.as_str())];
    let (code, out, err) = licensor_cli(
        &[
            "admin",
            "webhooks",
            "add",
            "--url",
            "https://hooks.example.com/licensor",
            "--event",
            "license.revoked",
        ],
        &env,
    );
    assert_eq!(code, 0, "{out}{err}");
    let created: Value = serde_json::from_str(&out).unwrap();
    assert!(created["secret"].as_str().unwrap().starts_with("whsec_"));
    let id = created["id"].as_str().unwrap().to_owned();
    let (code, out, _) = licensor_cli(&["admin", "webhooks", "list"], &env);
    assert_eq!(code, 0);
    let listed: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(listed["endpoints"][0]["events"], serde_json::json!(["license.revoked"]));
    let (code, out, _) = licensor_cli(&["admin", "webhooks", "deliveries", &id], &env);
    assert_eq!(
        (code, serde_json::from_str::<Value>(&out).unwrap()),
        (0, serde_json::json!({ "deliveries": [] }))
    );
    let (code, _, err) = licensor_cli(&["admin", "webhooks", "redeliver", &id, "evt_none"], &env);
    assert_eq!(code, 1, "{err}");
    let (code, out, _) = licensor_cli(&["admin", "webhooks", "remove", &id], &env);
    assert_eq!((code, out.trim()), (0, "204"));
    let (code, _, _) =
        licensor_cli(&["admin", "webhooks", "add", "--url", "ftp://x", "--event", "license.revoked"], &env);
    assert_eq!(code, 1);

    let (code, out, _) = licensor_cli(&["admin", "audit", "--actor", "admin", "--limit", "10"], &env);
    assert_eq!(code, 0, "{out}");
    let audit: Value = serde_json::from_str(&out).unwrap();
    let actions: Vec<(&str, i64)> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["action"].as_str().unwrap(), e["status"].as_i64().unwrap()))
        .collect();
    assert_eq!(
        actions,
        [
            ("POST /v1/admin/webhooks", 400),
            ("DELETE /v1/admin/webhooks/{endpoint_id}", 204),
            ("POST /v1/admin/webhooks/{endpoint_id}/deliveries/{event_id}/redeliver", 404),
            ("POST /v1/admin/webhooks", 201),
        ]
    );
}

/// The load tool runs end to end (its figures are for `licensor bench`, not for this test).
#[test]
fn the_load_tool_fires_real_check_ins() {
    let h = Harness::start(common::Db::Sqlite).unwrap();
    let env = [("LICENSOR_ADMIN_TOKEN", common::ADMIN_TOKEN)];
    let args = [
        "bench",
        "check-ins",
        "--url",
        &h.base,
        "--licenses",
        "3",
        "--instances",
        "30",
        "--requests",
        "60",
        "--concurrency",
        "4",
    ];
    let (code, out, err) = licensor_cli(&args, &env);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("check-ins:   60 in"), "{out}");
    assert!(out.contains("  valid: 60"), "every check-in is valid: {out}");
    let instances = h.store.list_instances(&Default::default(), 1000, None).unwrap().items;
    assert_eq!(instances.len(), 30);
}

/// On PostgreSQL the load tool also says what the run stored per check-in (a figure the README
/// quotes): a positive number, from the growth of the tables a check-in writes.
#[test]
fn the_load_tool_measures_storage_on_postgres() {
    let Some(h) = Harness::start(common::Db::Postgres) else { return };
    let env = [("LICENSOR_ADMIN_TOKEN", common::ADMIN_TOKEN)];
    let args = [
        "bench",
        "check-ins",
        "--url",
        &h.base,
        "--licenses",
        "2",
        "--instances",
        "20",
        "--requests",
        "40",
        "--concurrency",
        "4",
        "--database-url",
        &h.database_url,
    ];
    let (code, out, err) = licensor_cli(&args, &env);
    assert_eq!(code, 0, "{out}{err}");
    let line = out.lines().find(|l| l.starts_with("stored:")).unwrap_or_else(|| panic!("{out}"));
    let per_check_in: f64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    // Every check-in of the run is a new instance with five error groups: well over 2 KB each
    // (a figure that left out the tables a check-in writes most would be far under).
    assert!(per_check_in > 2_000.0, "{line}");
}

/// The insights benchmark runs end to end on a tiny fleet (its figures are for the README, not
/// for this test): seeding, the roll-up of a day, every view and page answering 200.
#[test]
fn the_insights_benchmark_seeds_rolls_up_and_times_every_view() {
    let Some(pg) = common::PgSchema::create() else { return };
    let args = [
        "bench",
        "insights",
        "--database-url",
        &pg.url,
        "--installs",
        "60",
        "--days",
        "3",
        "--requests",
        "2",
    ];
    let (code, out, err) = licensor_cli(&args, &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("seeded 60 installs x 3 days"), "{out}");
    assert!(out.contains("roll-up of "), "{out}");
    for line in [
        "install_days                   180 rows",
        "/v1/admin/insights/usage?kind=feature&days=30",
        "/admin/licenses/00000000-0000-4000-8000-000000000000",
        "worst p95:",
    ] {
        assert!(out.contains(line), "{line} in {out}");
    }
    // A database that holds licenses is not seeded again, unless asked to reuse it.
    let (code, _, err) = licensor_cli(&args, &[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("already holds licenses"), "{err}");
    let mut reuse = args.to_vec();
    reuse.push("--reuse");
    assert_eq!(licensor_cli(&reuse, &[]).0, 0);
    let sqlite = licensor_cli(&["bench", "insights", "--database-url", "sqlite://x.db"], &[]);
    assert_eq!(sqlite.0, 2, "{}", sqlite.2);
    assert!(sqlite.2.contains("runs on PostgreSQL"), "{}", sqlite.2);
}
