//! Keys issued offline made known before their first check-in, and tier changes that reach the
//! deployment (issue 22, part 4). Black-box: HTTP, the library and the real binary against a
//! real server, on both backends.

mod common;

use chrono::Duration;
use reqwest::Method;
use serde_json::{json, Value};

use common::{block_on, client_config, Harness};
use licensor::client::licensing::CheckInOutcome;
use licensor::client::{InvalidReason, Licensing, Status};
use licensor::license::{self, LicensePayload, Tier};
use licensor::protocol::CheckInStatus;

fn payload(key: &str) -> LicensePayload {
    licensor::token::decode::<LicensePayload>(key).unwrap().claims
}

fn register(h: &Harness, keys: &[&str]) -> (u16, Value) {
    h.admin(Method::POST, "/v1/admin/licenses/register", Some(&json!({ "license_keys": keys })))
}

fn listed(h: &Harness, query: &str) -> Vec<Value> {
    let (status, page) = h.admin(Method::GET, &format!("/v1/admin/licenses?{query}"), None);
    assert_eq!(status, 200, "{page}");
    page["licenses"].as_array().unwrap().clone()
}

fn a_registered_offline_key_can_be_revoked_before_it_is_ever_seen(h: Harness) {
    let first = h.license(Tier::Pro, 3);
    let second = h.license(Tier::Community, 1);
    let (first_id, second_id) =
        (payload(&first).license_id.to_string(), payload(&second).license_id.to_string());

    // One key that does not verify: nothing is registered, and the answer names it.
    let forged = format!("{}x", &second[..second.len() - 1]);
    let (status, body) = register(&h, &[&first, &forged]);
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("invalid_license")), "{body}");
    assert!(body["error"]["message"].as_str().unwrap().starts_with("license_keys[1] "), "{body}");
    assert!(listed(&h, "").is_empty());
    for (bad, why) in [(json!({"license_keys": []}), "none"), (json!({"keys": [first]}), "unknown field")] {
        let (status, body) = h.admin(Method::POST, "/v1/admin/licenses/register", Some(&bad));
        assert_eq!(status, 400, "{why}: {body}");
    }

    let (status, body) = register(&h, &[&first, &second]);
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["licenses"],
        json!([
            {"license_id": first_id, "licensee": "Acme Test Corp", "tier": "pro", "outcome": "registered"},
            {"license_id": second_id, "licensee": "Acme Test Corp", "tier": "community", "outcome": "registered"},
        ])
    );
    // Known, with their fields, and silent: no deployment checked in yet.
    let silent = listed(&h, "checked_in=false");
    assert_eq!(silent.len(), 2);
    assert!(silent.iter().all(|l| l["seen"] == true && l["last_check_in_at"].is_null()), "{silent:?}");
    // Registering again changes nothing; a newer key of the license replaces the older.
    assert_eq!(register(&h, &[&second]).1["licenses"][0]["outcome"], "known");
    let renewed = license::renew(
        &h.vendor,
        &payload(&second),
        license::Changes { seats: Some(4), ..Default::default() },
        h.now(),
    )
    .unwrap()
    .key;
    assert_eq!(register(&h, &[&renewed]).1["licenses"][0]["outcome"], "updated");
    assert_eq!(
        register(&h, &[&second]).1["licenses"][0]["outcome"],
        "known",
        "an older key never rolls back"
    );

    // Revoked before any deployment ran it: its first check-in is refused.
    let (status, _) = h.admin(Method::POST, &format!("/v1/admin/licenses/{first_id}/revoke"), None);
    assert_eq!(status, 200);
    let data = h.dir.path().join("first-deployment");
    let l = Licensing::start(client_config(&h, &first, &data)).unwrap();
    assert!(matches!(
        block_on(l.check_in_now()),
        CheckInOutcome::Answered { status: CheckInStatus::Revoked, .. }
    ));
    assert_eq!(l.status(), Status::Invalid { reason: InvalidReason::Refused(CheckInStatus::Revoked) });
    l.shutdown();

    // The second one's deployment, still configured with the old key, gets the renewed one.
    let data = h.dir.path().join("second-deployment");
    let l = Licensing::start(client_config(&h, &second, &data)).unwrap();
    assert!(matches!(
        block_on(l.check_in_now()),
        CheckInOutcome::Answered { status: CheckInStatus::Valid, .. }
    ));
    assert_eq!(l.license().unwrap().seats, 4);
    l.shutdown();
    assert!(listed(&h, "checked_in=false").is_empty());

    // A license revoked by id before it was registered keeps its revocation.
    let third = h.license(Tier::Enterprise, 2);
    let third_id = payload(&third).license_id.to_string();
    let (status, _) = h.admin(Method::POST, &format!("/v1/admin/licenses/{third_id}/revoke"), None);
    assert_eq!(status, 200);
    assert_eq!(register(&h, &[&third]).1["licenses"][0]["outcome"], "registered");
    let row = listed(&h, &format!("search={third_id}"));
    assert_eq!((row[0]["tier"].clone(), row[0]["revoked"].clone()), (json!("enterprise"), json!(true)));
}

/// The client comes back at the time the lease names, plus at most an hour of spread.
fn within_spread(next: chrono::DateTime<chrono::Utc>, named: chrono::DateTime<chrono::Utc>) {
    assert!(next >= named && next <= named + Duration::hours(1), "{next} for {named}");
}

fn a_tier_change_reaches_the_deployment(h: Harness) {
    let (status, issued) = h.admin(
        Method::POST,
        "/v1/admin/licenses",
        Some(&json!({"tier": "pro", "licensee": "Growing AG", "perpetual": true, "seats": 2, "features": ["sso"]})),
    );
    assert_eq!(status, 201, "{issued}");
    let key = issued["license_key"].as_str().unwrap().to_owned();
    let license_id = issued["payload"]["license_id"].as_str().unwrap().to_owned();
    let l = Licensing::start(client_config(&h, &key, &h.dir.path().join("growing"))).unwrap();
    match block_on(l.check_in_now()) {
        CheckInOutcome::Answered { status: CheckInStatus::Valid, next_check_in_at, .. } => {
            within_spread(next_check_in_at, h.now() + Duration::days(7))
        }
        other => panic!("{other:?}"),
    }

    let (status, body) = h.admin(
        Method::PATCH,
        &format!("/v1/admin/licenses/{license_id}"),
        Some(&json!({"tier": "enterprise"})),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["payload"]["tier"], "enterprise");
    assert_eq!(body["payload"]["features"], json!(["sso"]), "only the tier changed");
    let (status, body) = h.admin(
        Method::PATCH,
        &format!("/v1/admin/licenses/{license_id}"),
        Some(&json!({"tier": "platinum"})),
    );
    assert_eq!(status, 400, "{body}");

    h.advance(Duration::hours(1));
    match block_on(l.check_in_now()) {
        CheckInOutcome::Answered { status: CheckInStatus::Valid, next_check_in_at, .. } => {
            within_spread(next_check_in_at, h.now() + Duration::days(30))
        }
        other => panic!("{other:?}"),
    }
    let license = l.license().unwrap();
    assert_eq!((license.tier, license.seats), (Tier::Enterprise, 2));
    assert!(l.has_feature("sso"));
    l.shutdown();
}

on_both_backends!(
    a_registered_offline_key_can_be_revoked_before_it_is_ever_seen,
    a_tier_change_reaches_the_deployment
);

/// `licensor admin register` takes keys and the CSV bulk issuing writes.
#[test]
fn the_cli_registers_keys_from_arguments_and_csv() {
    let Some(h) = Harness::start(common::Db::Sqlite) else { return };
    let (a, b, c) = (h.license(Tier::Pro, 1), h.license(Tier::Pro, 2), h.license(Tier::Community, 3));
    let csv = h.dir.path().join("licenses.csv");
    std::fs::write(&csv, format!("licensee,tier,license_id,license_key\nB,pro,x,{b}\nC,community,y,{c}\n"))
        .unwrap();
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_licensor"))
            .args(args)
            .env("LICENSOR_ADMIN_TOKEN", common::ADMIN_TOKEN)
            .env("LICENSOR_SERVER_URL", &h.base)
            .output()
            .unwrap();
        (
            out.status.code().unwrap(),
            String::from_utf8(out.stdout).unwrap(),
            String::from_utf8(out.stderr).unwrap(),
        )
    };
    let (code, out, err) = run(&["admin", "register", &a, "--from", csv.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    let answer: Value = serde_json::from_str(&out).unwrap();
    let outcomes: Vec<&str> =
        answer["licenses"].as_array().unwrap().iter().map(|l| l["outcome"].as_str().unwrap()).collect();
    assert_eq!(outcomes, ["registered"; 3]);
    // A CSV without the column is refused before anything is sent (exit 2).
    std::fs::write(&csv, "licensee,tier\nB,pro\n").unwrap();
    let (code, _, err) = run(&["admin", "register", "--from", csv.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("has no license_key column"), "{err}");
    // A forged key: the server refuses, exit 1.
    let (code, out, _) = run(&["admin", "register", &format!("{}x", &a[..a.len() - 1])]);
    assert_eq!(code, 1, "{out}");
}
