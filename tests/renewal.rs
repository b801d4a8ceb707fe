//! Renewals and changes without a new key in the customer's hands: `PATCH
//! /v1/admin/licenses/{id}` issues a new key for the same license, which the next check-in of
//! every instance delivers in its signed answer; the server judges under the newest key and an
//! older key never rolls the license back. Real HTTP against a real server, on SQLite and on
//! PostgreSQL.

mod common;

use chrono::Duration;
use reqwest::Method;
use serde_json::{json, Value};

use common::{Db, Harness};
use licensor::lease;
use licensor::license::{self, Expiry, LicensePayload, Tier};

on_both_backends!(
    a_damaged_stored_key_fails_only_its_own_license,
    a_renewal_reaches_every_instance_in_its_next_signed_answer,
    a_renewal_revives_an_expired_license,
    the_older_of_two_keys_in_one_group_never_wins,
);

fn lease_of(h: &Harness, answer: &Value) -> lease::LeasePayload {
    lease::verify_signature(answer["lease"].as_str().expect("a lease"), &h.ring).unwrap()
}

fn patch(h: &Harness, license_id: &str, body: Value) -> (u16, Value) {
    h.admin(Method::PATCH, &format!("/v1/admin/licenses/{license_id}"), Some(&body))
}

fn seats_listed(h: &Harness, license_id: &str) -> Value {
    let (status, list) = h.admin(Method::GET, "/v1/admin/licenses", None);
    assert_eq!(status, 200);
    list["licenses"].as_array().unwrap().iter().find(|l| l["license_id"] == license_id).unwrap()["seats"]
        .clone()
}

fn a_renewal_reaches_every_instance_in_its_next_signed_answer(h: Harness) {
    {
        let t0 = h.now();
        // One seat, three days left: the old key clips the lease at its expiry.
        let old = h.license_with(Tier::Pro, 1, |r| r.expiry = Expiry::At(t0 + Duration::days(3)));
        let old_payload = license::verify(&old, &h.ring, t0).unwrap();
        let id = old_payload.license_id.to_string();
        let a = h.check_in(&old, "inst-a", None);
        assert_eq!(a["status"], "telemetry_required", "Pro needs telemetry");
        let batch = common::batch(uuid::Uuid::new_v4(), 1, 0, 0).to_string();
        let a = h.check_in(&old, "inst-a", Some(&batch));
        assert_eq!(a["status"], "valid");
        assert_eq!(a["valid_until"], licensor::time::format(&(t0 + Duration::days(3))));
        assert!(a.get("license_key").is_none(), "nothing to deliver: {a}");

        let (status, renewed) = patch(
            &h,
            &id,
            json!({ "expires_at": licensor::time::format(&(t0 + Duration::days(400))), "seats": 2,
                    "features": ["reports", "export", "export"] }),
        );
        assert_eq!(status, 200, "{renewed}");
        let new_key = renewed["license_key"].as_str().unwrap().to_owned();
        let new_payload = license::verify(&new_key, &h.ring, t0).unwrap();
        assert_eq!(new_payload.license_id, old_payload.license_id);
        assert_eq!(new_payload.licensee, old_payload.licensee);
        assert_eq!(new_payload.tier, Tier::Pro);
        assert_eq!(new_payload.not_before, old_payload.not_before);
        assert_eq!(new_payload.seats, 2);
        assert_eq!(new_payload.features, vec!["export".to_string(), "reports".to_string()]);
        assert_eq!(new_payload.expires_at, Some(t0 + Duration::days(400)));
        assert_eq!(new_payload.issued_at, t0, "issued now, later than the old key");
        assert_eq!(serde_json::to_value(&new_payload).unwrap(), renewed["payload"]);

        // A second instance on the old key: judged under the new key (a second seat, the
        // new expiry), and handed the new key inside the signed lease.
        let batch = common::batch(uuid::Uuid::new_v4(), 1, 0, 0).to_string();
        let b = h.check_in(&old, "inst-b", Some(&batch));
        assert_eq!(b["status"], "valid", "{b}");
        assert_eq!(b["license_key"], new_key.as_str());
        let signed = lease_of(&h, &b);
        assert_eq!(signed.license_key.as_deref(), Some(new_key.as_str()));
        assert_eq!(b["valid_until"], licensor::time::format(&(t0 + Duration::days(7 + 14))));

        // The first instance, on the new key now: nothing more to deliver.
        let batch = common::batch(uuid::Uuid::new_v4(), 1, 0, 0).to_string();
        let a = h.check_in(&new_key, "inst-a", Some(&batch));
        assert_eq!(a["status"], "valid");
        assert!(a.get("license_key").is_none(), "{a}");
        assert!(lease_of(&h, &a).license_key.is_none());

        // The old key again, after the new one was presented: it rolls nothing back.
        let batch = common::batch(uuid::Uuid::new_v4(), 1, 0, 0).to_string();
        let b = h.check_in(&old, "inst-b", Some(&batch));
        assert_eq!(b["license_key"], new_key.as_str());
        assert_eq!(seats_listed(&h, &id), 2);

        // A second renewal in the same second is still strictly newer.
        let (status, again) = patch(&h, &id, json!({ "seats": 3 }));
        assert_eq!(status, 200, "{again}");
        let newest = license::verify(again["license_key"].as_str().unwrap(), &h.ring, t0).unwrap();
        assert_eq!(newest.issued_at, t0 + Duration::seconds(1));
        assert_eq!(newest.expires_at, Some(t0 + Duration::days(400)), "kept from the first renewal");
        assert_eq!(newest.features, new_payload.features);
        let batch = common::batch(uuid::Uuid::new_v4(), 1, 0, 0).to_string();
        let a = h.check_in(&new_key, "inst-a", Some(&batch));
        assert_eq!(a["license_key"], again["license_key"]);

        // Revocation wins over any key, and a revoked license is handed none.
        let (status, _) = h.admin(Method::POST, &format!("/v1/admin/licenses/{id}/revoke"), None);
        assert_eq!(status, 200);
        let a = h.check_in(&old, "inst-a", None);
        assert_eq!(a["status"], "revoked");
        assert!(a.get("license_key").is_none(), "{a}");
        assert!(lease_of(&h, &a).license_key.is_none());
    }
}

fn a_renewal_revives_an_expired_license(h: Harness) {
    {
        let t0 = h.now();
        let old = h.license_with(Tier::Enterprise, 1, |r| r.expiry = Expiry::At(t0 + Duration::days(2)));
        let id = license::verify(&old, &h.ring, t0).unwrap().license_id.to_string();
        assert_eq!(h.check_in(&old, "inst", None)["status"], "valid");
        h.advance(Duration::days(3));
        assert_eq!(h.check_in(&old, "inst", None)["status"], "expired");
        let (status, renewed) =
            patch(&h, &id, json!({ "expires_at": licensor::time::format(&(t0 + Duration::days(60))) }));
        assert_eq!(status, 200, "{renewed}");
        let answer = h.check_in(&old, "inst", None);
        assert_eq!(answer["status"], "valid");
        assert_eq!(answer["license_key"], renewed["license_key"]);
        // A perpetual renewal is allowed too.
        let (status, perpetual) = patch(&h, &id, json!({ "perpetual": true }));
        assert_eq!(status, 200, "{perpetual}");
        assert_eq!(perpetual["payload"]["expires_at"], Value::Null);
    }
}

fn the_older_of_two_keys_in_one_group_never_wins(h: Harness) {
    {
        let t0 = h.now();
        let old = h.license_with(Tier::Enterprise, 1, |_| {});
        let old_payload = license::verify(&old, &h.ring, t0).unwrap();
        // A newer key of the same license, issued by the vendor offline (say, handed to one
        // customer site): the first check-in presenting it makes it the license's key.
        let newer = license::renew(
            &h.vendor,
            &old_payload,
            license::Changes { seats: Some(5), ..Default::default() },
            t0,
        )
        .unwrap();
        assert_eq!(h.check_in(&newer.key, "site-1", None)["status"], "valid");
        let answer = h.check_in(&old, "site-2", None);
        assert_eq!(answer["license_key"], newer.key.as_str(), "the server hands on the newest key it saw");
        assert_eq!(seats_listed(&h, &old_payload.license_id.to_string()), 5);
        // Concurrent check-ins presenting both keys land in shared groups: the newest stays.
        std::thread::scope(|s| {
            for i in 0..16 {
                let key = if i % 2 == 0 { &old } else { &newer.key };
                let h = &h;
                s.spawn(move || h.check_in(key, &format!("site-{}", i % 4), None));
            }
        });
        assert_eq!(seats_listed(&h, &old_payload.license_id.to_string()), 5);
        assert_eq!(h.check_in(&old, "site-2", None)["license_key"], newer.key.as_str());
    }
}

#[test]
fn changing_a_license_is_refused_with_a_precise_error() {
    let h = Harness::start(Db::Sqlite).unwrap();
    let t0 = h.now();
    let key = h.license(Tier::Pro, 1);
    let id = license::verify(&key, &h.ring, t0).unwrap().license_id.to_string();
    let unseen = uuid::Uuid::new_v4().to_string();
    let code = |answer: &Value| answer["error"]["code"].as_str().unwrap_or_default().to_owned();

    // Never seen: not found; revoked by id before any check-in: no key to build on.
    let (status, answer) = patch(&h, &unseen, json!({ "seats": 2 }));
    assert_eq!((status, code(&answer).as_str()), (404, "not_found"));
    assert_eq!(h.admin(Method::POST, &format!("/v1/admin/licenses/{unseen}/revoke"), None).0, 200);
    let (status, answer) = patch(&h, &unseen, json!({ "seats": 2 }));
    assert_eq!((status, code(&answer).as_str()), (409, "license_not_seen"));

    assert_eq!(
        h.check_in(&key, "inst", Some(&common::batch(uuid::Uuid::new_v4(), 1, 0, 0).to_string()))["status"],
        "valid"
    );
    let cases = [
        (json!({}), 400, "invalid_request"),
        (json!({ "perpetual": true, "expires_at": "2030-01-01T00:00:00Z" }), 400, "invalid_request"),
        (json!({ "expires_at": "tomorrow" }), 400, "invalid_request"),
        (json!({ "expires_at": licensor::time::format(&(t0 - Duration::days(1))) }), 400, "invalid_license"),
        (json!({ "seats": 0 }), 400, "invalid_license"),
        (json!({ "features": ["no spaces"] }), 400, "invalid_license"),
        (json!({ "tier": "platinum" }), 400, "invalid_request"),
        (json!({ "seats": "two" }), 400, "invalid_request"),
    ];
    for (body, want_status, want_code) in cases {
        let (status, answer) = patch(&h, &id, body.clone());
        assert_eq!((status, code(&answer).as_str()), (want_status, want_code), "{body}: {answer}");
    }
    // Nothing changed: the instance is handed no key.
    let answer = h.check_in(&key, "inst", Some(&common::batch(uuid::Uuid::new_v4(), 1, 0, 0).to_string()));
    assert!(answer.get("license_key").is_none(), "{answer}");

    let response =
        h.http.patch(h.url(&format!("/v1/admin/licenses/{id}"))).json(&json!({ "seats": 2 })).send().unwrap();
    assert_eq!(response.status().as_u16(), 401);

    // A server without an issuing key cannot renew.
    let h = Harness::start_with(Db::Sqlite, |c| c.issuing_key = None).unwrap();
    let key = h.license(Tier::Enterprise, 1);
    let payload: LicensePayload = license::verify(&key, &h.ring, t0).unwrap();
    assert_eq!(h.check_in(&key, "inst", None)["status"], "valid");
    let (status, answer) = patch(&h, &payload.license_id.to_string(), json!({ "seats": 2 }));
    assert_eq!((status, code(&answer).as_str()), (409, "issuing_disabled"));
}

/// A license whose stored newest key no longer reads (damage) fails its own check-ins with
/// 500 (retrying cannot help), never another license's: the writer isolates it like any
/// content the database refuses.
fn a_damaged_stored_key_fails_only_its_own_license(h: Harness) {
    let damaged = h.license(Tier::Enterprise, 2);
    let healthy = h.license(Tier::Enterprise, 2);
    let id = license::verify(&damaged, &h.ring, h.now()).unwrap().license_id.to_string();
    assert_eq!(h.check_in(&damaged, "d1", None)["status"], "valid");
    assert_eq!(patch(&h, &id, json!({ "seats": 3 })).0, 200);
    h.store.set_license_key(&id, "LIC1.bm90.a2V5").unwrap();
    std::thread::scope(|s| {
        let refused = s.spawn(|| {
            let body = h.check_in_body(&damaged, "d1", &common::nonce(), None);
            h.post_raw("/v1/check-ins", "application/json", body)
        });
        let fine = s.spawn(|| h.check_in(&healthy, "h1", None));
        let (status, answer) = refused.join().unwrap();
        assert_eq!((status, answer["error"]["code"].as_str()), (500, Some("internal")), "{answer}");
        assert_eq!(fine.join().unwrap()["status"], "valid");
    });
}
