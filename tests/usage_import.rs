//! The server's side of the air-gapped round trip, black-box on both backends: usage reports
//! signed by an install's own key, posted to `POST /v1/admin/usage-imports` over real HTTP,
//! answered with a receipt file whose tokens verify and bind the report. Every tampered,
//! truncated, replayed, out-of-order, conflicting or foreign report is refused with its own
//! code and changes nothing.

mod common;

use chrono::Duration;
use ed25519_dalek::SigningKey;
use reqwest::Method;
use serde_json::{json, Value};

use common::{batch, nonce, Harness, ADMIN_TOKEN};
use licensor::license::Tier;
use licensor::protocol::CheckInStatus;
use licensor::usage_report::{self, ReportBody, ReportLevel};

on_both_backends!(
    a_report_chain_is_imported_once_each_and_every_break_in_it_is_refused,
    a_receipt_carries_the_renewed_key_and_a_refused_license_moves_no_chain,
    reports_that_do_not_read_or_may_not_be_imported_are_refused_before_anything_is_written,
    a_pin_taken_by_a_forged_first_report_is_reset_and_the_genuine_install_pins_again,
);

/// An install: its key and the reports it has signed so far.
struct Install {
    key: SigningKey,
    instance: String,
    license_key: String,
    last_digest: Option<String>,
    sequence: u64,
}

impl Install {
    fn new(license_key: &str, instance: &str) -> Install {
        Install {
            key: SigningKey::from_bytes(&rand::random::<[u8; 32]>()),
            instance: instance.into(),
            license_key: license_key.into(),
            last_digest: None,
            sequence: 0,
        }
    }

    /// The next report of the chain, carrying `features` uses of "export".
    fn next(&mut self, features: u64) -> (String, String) {
        self.sequence += 1;
        let text = self.report(self.sequence, self.last_digest.clone(), features, &self.key.clone());
        let digest = usage_report::read_report(&text).unwrap().digest;
        self.last_digest = Some(digest.clone());
        (text, digest)
    }

    fn report(&self, sequence: u64, previous: Option<String>, features: u64, signer: &SigningKey) -> String {
        let mut b = batch(uuid::Uuid::new_v4(), 0, 1, 0);
        b["usage"] = json!([{ "kind": "feature", "name": "export", "count": features }]);
        let body = ReportBody {
            license_key: self.license_key.clone(),
            instance_id: self.instance.clone(),
            software_version: "7.1.0".into(),
            sequence,
            previous_digest: previous,
            nonce: nonce(),
            created_at: common::t0(),
            install_key: usage_report::encode_install_key(&self.key.verifying_key()),
            level: ReportLevel::Full,
            telemetry: serde_json::value::RawValue::from_string(serde_json::to_string(&b).unwrap()).unwrap(),
        };
        usage_report::write_report(&body, signer)
    }
}

fn import(h: &Harness, report: &str) -> (u16, Value) {
    import_with(h, report, ADMIN_TOKEN)
}

fn import_with(h: &Harness, report: &str, token: &str) -> (u16, Value) {
    let response = reqwest::blocking::Client::new()
        .post(h.url("/v1/admin/usage-imports"))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(report.to_owned())
        .send()
        .unwrap();
    let status = response.status().as_u16();
    let text = response.text().unwrap();
    (status, serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON ({status}): {text}")))
}

fn refused(h: &Harness, report: &str, status: u16, code: &str) -> String {
    let (got, body) = import(h, report);
    assert_eq!((got, body["error"]["code"].as_str().unwrap_or("")), (status, code), "{body}");
    body["error"]["message"].as_str().unwrap().to_owned()
}

/// The receipt file's two tokens, verified under the server's ring and checked against the
/// report they answer.
fn verified(
    h: &Harness,
    answer: &Value,
    report: &str,
) -> (licensor::receipt::ReceiptPayload, licensor::lease::LeasePayload) {
    let file = usage_report::read_receipt(&answer.to_string()).unwrap();
    let receipt = licensor::receipt::verify(&file.receipt, &h.ring).unwrap();
    let lease = licensor::lease::verify_signature(&file.lease, &h.ring).unwrap();
    let signed = usage_report::read_report(report).unwrap();
    assert_eq!(receipt.action, licensor::receipt::Action::UsageImported);
    assert_eq!(receipt.report_digest.as_deref(), Some(signed.digest.as_str()));
    assert_eq!(receipt.report_sequence, Some(signed.body.sequence));
    assert_eq!(
        (receipt.nonce.as_str(), lease.nonce.as_str()),
        (signed.body.nonce.as_str(), signed.body.nonce.as_str())
    );
    assert_eq!(lease.instance_id, signed.body.instance_id);
    (receipt, lease)
}

fn license_id_of(key: &str) -> String {
    licensor::token::decode::<licensor::LicensePayload>(key).unwrap().claims.license_id.to_string()
}

fn export_count(h: &Harness, instance: &str) -> u64 {
    let (code, s) =
        h.admin(Method::GET, &format!("/v1/admin/telemetry/summary?instance_id={instance}&hours=48"), None);
    assert_eq!(code, 200, "{s}");
    s["usage"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|u| u["name"] == "export")
        .map(|u| u["count"].as_u64().unwrap())
        .sum()
}

/// What a refusal must leave as it was: the install's check-ins, its telemetry rows, and its
/// chain.
fn footprint(
    h: &Harness,
    install: &Install,
) -> (usize, std::collections::BTreeMap<&'static str, i64>, Vec<(i64, String)>) {
    let license_id = licensor::token::decode::<licensor::LicensePayload>(&install.license_key)
        .unwrap()
        .claims
        .license_id
        .to_string();
    let chain = h
        .store
        .write_check_ins(|tx| tx.install_keys_by_key(&[(license_id.as_str(), install.instance.as_str())]))
        .unwrap()
        .into_iter()
        .map(|r| (r.report_sequence, r.report_digest))
        .collect();
    (
        h.store.check_ins_of(&install.instance).unwrap().len(),
        h.store.telemetry_counts(&install.instance).unwrap(),
        chain,
    )
}

fn a_report_chain_is_imported_once_each_and_every_break_in_it_is_refused(h: Harness) {
    let key = h.license(Tier::Enterprise, 3);
    let mut install = Install::new(&key, "air-1");

    let (first, digest1) = install.next(5);
    let (status, answer) = import(&h, &first);
    assert_eq!(status, 200, "{answer}");
    let (_, lease) = verified(&h, &answer, &first);
    assert_eq!(lease.status, CheckInStatus::Valid);
    let ack = lease.telemetry.unwrap();
    assert!(ack.accepted && !ack.duplicate);
    assert_eq!(export_count(&h, "air-1"), 5);
    let (check_ins, _, chain) = footprint(&h, &install);
    assert_eq!(check_ins, 1);
    assert_eq!(chain, [(1, digest1.clone())]);
    // Marked as imported in the license's history.
    let (_, detail) = h.admin(Method::GET, &format!("/v1/admin/licenses/{}", license_id_of(&key)), None);
    assert_eq!(detail["history"][0]["imported_report"], 1, "{detail}");
    assert_eq!(detail["history"][0]["status"], "valid");
    // And on the dashboard's license page.
    let browser =
        reqwest::blocking::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let signed_in = browser.post(h.url("/admin/sign-in")).form(&[("token", ADMIN_TOKEN)]).send().unwrap();
    let cookie = signed_in.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_owned();
    let page = browser
        .get(h.url(&format!("/admin/licenses/{}", license_id_of(&key))))
        .header("cookie", cookie)
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(page.contains("<td>valid (usage report 1, imported by file)</td>"), "{page}");
    // The instance holds a seat, as after a check-in.
    let (_, instances) = h.admin(Method::GET, "/v1/admin/instances", None);
    assert_eq!(instances["instances"][0]["instance_id"], "air-1", "{instances}");
    assert_eq!(instances["instances"][0]["seat_until"], "2027-01-20T10:00:00Z", "30 days and the grace");

    // The same report again (a file carried twice): acknowledged, counted once.
    let (status, answer) = import(&h, &first);
    assert_eq!(status, 200, "{answer}");
    let ack = verified(&h, &answer, &first).1.telemetry.unwrap();
    assert!(ack.accepted && ack.duplicate);
    assert_eq!(export_count(&h, "air-1"), 5, "a report imported twice counts once");

    let (second, digest2) = install.next(7);
    assert_eq!(import(&h, &second).0, 200);
    assert_eq!(export_count(&h, "air-1"), 12);

    let before = footprint(&h, &install);
    // Replayed: an older report after a newer one.
    let message = refused(&h, &first, 409, "report_replayed");
    assert!(message.contains("report 1 is older than report 2"), "{message}");
    // A gap: report 4 before report 3.
    let gap = install.report(4, Some(digest2.clone()), 1, &install.key);
    let message = refused(&h, &gap, 409, "report_out_of_order");
    assert!(message.contains("report 3 of this install is missing"), "{message}");
    // Report 3 chained to report 1 instead of report 2.
    let forked = install.report(3, Some(digest1.clone()), 1, &install.key);
    let message = refused(&h, &forked, 409, "report_out_of_order");
    assert!(message.contains("does not follow report 2"), "{message}");
    // Another key claiming this install: signed by it and naming it, so the signature checks,
    // but the server pinned the first report's key.
    let mut impostor = Install::new(&key, "air-1");
    impostor.sequence = 2;
    impostor.last_digest = Some(digest2.clone());
    let (foreign, _) = impostor.next(100);
    let message = refused(&h, &foreign, 409, "foreign_install_key");
    assert!(message.contains("does not come from this install"), "{message}");
    // Tampered after signing: one figure changed.
    let (third, _) = install.next(2);
    let tampered = third.replacen("\"count\":2", "\"count\":2000", 1);
    assert_ne!(tampered, third);
    refused(&h, &tampered, 400, "bad_report_signature");
    // Truncated.
    refused(&h, &third[..third.len() / 2], 400, "invalid_report");
    assert_eq!(footprint(&h, &install), before, "refused reports change nothing");
    assert_eq!(export_count(&h, "air-1"), 12);

    // The genuine report 3 goes through; a different report 3 afterwards is a conflict.
    assert_eq!(import(&h, &third).0, 200);
    let other_third = install.report(3, Some(digest2), 9, &install.key);
    refused(&h, &other_third, 409, "report_conflict");
    assert_eq!(export_count(&h, "air-1"), 14);

    // Another install of the same license has a chain of its own.
    let mut second_install = Install::new(&key, "air-2");
    assert_eq!(import(&h, &second_install.next(1).0).0, 200);
    assert_eq!(export_count(&h, "air-2"), 1);
}

fn a_receipt_carries_the_renewed_key_and_a_refused_license_moves_no_chain(h: Harness) {
    let key = h.license(Tier::Enterprise, 3);
    let license_id = licensor::token::decode::<licensor::LicensePayload>(&key).unwrap().claims.license_id;
    let mut install = Install::new(&key, "air-renew");
    let (first, _) = install.next(1);
    assert_eq!(import(&h, &first).0, 200);

    // The vendor renews the license: the next import's lease hands the new key over.
    h.advance(Duration::days(20));
    let (code, renewed) = h.admin(
        Method::PATCH,
        &format!("/v1/admin/licenses/{license_id}"),
        Some(&json!({ "expires_at": "2028-06-30T00:00:00Z" })),
    );
    assert_eq!(code, 200, "{renewed}");
    let (second, _) = install.next(1);
    let (status, answer) = import(&h, &second);
    assert_eq!(status, 200, "{answer}");
    let (_, lease) = verified(&h, &answer, &second);
    let delivered = lease.license_key.expect("the renewed key rides in the lease");
    let payload = licensor::license::verify(&delivered, &h.ring, h.now()).unwrap();
    assert_eq!(payload.license_id, license_id);
    assert_eq!(licensor::time::format(&payload.expires_at.unwrap()), "2028-06-30T00:00:00Z");

    // Revoked: the import is answered (the lease says revoked) but its batch is not accepted
    // and the chain does not move, so the same report can be imported once reinstated.
    let (code, _) = h.admin(Method::POST, &format!("/v1/admin/licenses/{license_id}/revoke"), None);
    assert_eq!(code, 200);
    let (third, _) = install.next(4);
    let (status, answer) = import(&h, &third);
    assert_eq!(status, 200, "{answer}");
    let (_, lease) = verified(&h, &answer, &third);
    assert_eq!(lease.status, CheckInStatus::Revoked);
    assert!(lease.license_key.is_none(), "a revoked license gets no key");
    assert!(!lease.telemetry.unwrap().accepted);
    assert_eq!(footprint(&h, &install).2[0].0, 2, "the chain stays at report 2");
    // (The summary's 48 hours hold the second report only: the first came 20 days earlier.)
    assert_eq!(export_count(&h, "air-renew"), 1);
    let (code, _) = h.admin(Method::POST, &format!("/v1/admin/licenses/{license_id}/reinstate"), None);
    assert_eq!(code, 200);
    let (status, answer) = import(&h, &third);
    assert_eq!(status, 200);
    assert!(verified(&h, &answer, &third).1.telemetry.unwrap().accepted);
    assert_eq!(export_count(&h, "air-renew"), 5);
}

fn reports_that_do_not_read_or_may_not_be_imported_are_refused_before_anything_is_written(h: Harness) {
    let pro = h.license(Tier::Pro, 3);
    let mut install = Install::new(&pro, "pro-1");
    let message = refused(&h, &install.next(1).0, 400, "air_gap_not_allowed");
    assert!(message.contains("only Enterprise licenses may run air-gapped"), "{message}");
    assert_eq!(footprint(&h, &install).0, 0);

    // A license from a vendor key this server does not trust.
    let stranger = licensor::Signer::generate("stranger", licensor::keys::Role::License).unwrap();
    let foreign_key = licensor::license::issue(
        &stranger,
        licensor::LicenseRequest {
            licensee: "Elsewhere".into(),
            tier: Tier::Enterprise,
            expiry: licensor::license::Expiry::Perpetual,
            not_before: None,
            seats: 1,
            features: vec![],
            check_in_interval: None,
        },
        common::t0(),
    )
    .unwrap()
    .key;
    refused(&h, &Install::new(&foreign_key, "x-1").next(1).0, 400, "invalid_license");

    let key = h.license(Tier::Enterprise, 3);
    let mut install = Install::new(&key, "air-3");
    // The first report must be report 1.
    install.sequence = 1;
    install.last_digest = Some("a".repeat(64));
    let message = refused(&h, &install.next(1).0, 409, "report_out_of_order");
    assert!(message.contains("its report 1 comes first"), "{message}");
    // A receipt is not a report; neither is a check-in body.
    let receipt = usage_report::write_receipt("RECEIPT1.a.b".into(), "LEASE1.a.b".into());
    let message = refused(&h, &receipt, 400, "invalid_report");
    assert!(message.contains("is not a licensor-usage-report"), "{message}");
    refused(
        &h,
        &String::from_utf8(h.check_in_body(&key, "air-3", &nonce(), None)).unwrap(),
        400,
        "invalid_report",
    );
    // A future version of the format.
    let mut fresh = Install::new(&key, "air-3");
    let v2 = fresh.next(1).0.replacen("\"version\": 1", "\"version\": 2", 1);
    refused(&h, &v2, 400, "unsupported_report_version");
    assert_eq!(footprint(&h, &fresh).0, 0);

    // Only a full admin token imports.
    let (status, _) = import_with(&h, &fresh.report(1, None, 1, &fresh.key), "wrong-token");
    assert_eq!(status, 401);
}

/// Someone holding the license key imports a forged report 1 before the install's own: the
/// install's reports are then refused as foreign. The vendor lists the pin, resets it (audited,
/// shown on the license page), and the genuine install's next report pins its key at its own
/// sequence; the forger's next report is then the foreign one.
fn a_pin_taken_by_a_forged_first_report_is_reset_and_the_genuine_install_pins_again(h: Harness) {
    let key = h.license(Tier::Enterprise, 2);
    let license_id = license_id_of(&key);
    let mut forger = Install::new(&key, "air-1");
    let mut genuine = Install::new(&key, "air-1");
    let keys_path = format!("/v1/admin/licenses/{license_id}/install-keys");

    let (forged, _) = forger.next(1);
    assert_eq!(import(&h, &forged).0, 200);
    let (first, _) = genuine.next(5);
    refused(&h, &first, 409, "foreign_install_key");
    // The vendor's command line lists and resets pins (exit 0 done, 1 refused).
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_licensor"))
            .args(["admin", "usage-imports"])
            .args(args)
            .env("LICENSOR_ADMIN_TOKEN", ADMIN_TOKEN)
            .env("LICENSOR_SERVER_URL", &h.base)
            .output()
            .unwrap();
        let answer = String::from_utf8(out.stdout).unwrap();
        (out.status.code().unwrap(), serde_json::from_str::<Value>(&answer).unwrap_or(Value::Null))
    };
    let (code, listed) = cli(&["keys", &license_id]);
    assert_eq!(code, 0, "{listed}");
    let pin = &listed["install_keys"][0];
    let forger_key = usage_report::encode_install_key(&forger.key.verifying_key());
    assert_eq!(
        (pin["instance_id"].as_str(), pin["public_key"].as_str(), pin["last_report"].as_i64()),
        (Some("air-1"), Some(forger_key.as_str()), Some(1))
    );
    assert_eq!(pin["pinned_at"], "2026-11-21T10:00:00Z");
    assert!(pin["reset_at"].is_null());

    h.advance(Duration::hours(1));
    let (code, reset) = cli(&["reset-key", &license_id, "air-1"]);
    assert_eq!(code, 0, "{reset}");
    assert_eq!(
        (reset["public_key"].clone(), reset["reset_at"].clone()),
        (Value::Null, json!("2026-11-21T11:00:00Z"))
    );
    let (code, missing) = cli(&["reset-key", &license_id, "air-2"]);
    assert_eq!((code, missing["error"]["code"].as_str()), (1, Some("not_found")));
    // The reset, and the refused one after it.
    let (_, audit) = h.admin(Method::GET, "/v1/admin/audit?limit=2", None);
    assert_eq!(audit["entries"][0]["status"], 404);
    let entry = &audit["entries"][1];
    assert_eq!(
        (entry["action"].as_str(), entry["target"].as_str(), entry["status"].as_i64()),
        (
            Some("POST /v1/admin/licenses/{license_id}/install-keys/{instance_id}/reset"),
            Some(format!("license_id={license_id}&instance_id=air-1").as_str()),
            Some(200)
        )
    );
    // The license's detail (and its page) show the reset.
    let (_, detail) = h.admin(Method::GET, &format!("/v1/admin/licenses/{license_id}"), None);
    assert_eq!(detail["install_keys"][0]["reset_at"], "2026-11-21T11:00:00Z");
    let client =
        reqwest::blocking::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let signed_in = client.post(h.url("/admin/sign-in")).form(&[("token", ADMIN_TOKEN)]).send().unwrap();
    let cookie = signed_in.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_owned();
    let page = client
        .get(h.url(&format!("/admin/licenses/{license_id}")))
        .header("cookie", cookie)
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(page.contains("reset on 2026-11-21 11:00:00 UTC: the next report pins its key"), "{page}");

    // The genuine install's report 1, refused before, now pins its key; its chain goes on.
    h.advance(Duration::hours(1));
    let (status, answer) = import(&h, &first);
    assert_eq!(status, 200, "{answer}");
    verified(&h, &answer, &first);
    let (second, _) = genuine.next(2);
    assert_eq!(import(&h, &second).0, 200);
    let (_, listed) = h.admin(Method::GET, &keys_path, None);
    let pin = &listed["install_keys"][0];
    let genuine_key = usage_report::encode_install_key(&genuine.key.verifying_key());
    assert_eq!(
        (
            pin["public_key"].as_str(),
            pin["pinned_at"].as_str(),
            pin["last_report"].as_i64(),
            pin["reset_at"].is_null()
        ),
        (Some(genuine_key.as_str()), Some("2026-11-21T12:00:00Z"), Some(2), true)
    );
    assert_eq!(export_count(&h, "air-1"), 1 + 5 + 2, "the forged report stays counted until erased");
    let (forged_next, _) = forger.next(1);
    refused(&h, &forged_next, 409, "foreign_install_key");
}
