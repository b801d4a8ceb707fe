//! The client's check-in against a real server: its telemetry stored exactly once, and
//! answers that are replayed, tampered with or signed by a stranger refused.

mod common;

use chrono::Duration;
use std::time::Duration as StdDuration;

use common::Harness;
use licensor::client::exchange::{self, build_request, retry_policy, verify_answer, AnswerError};
use licensor::client::telemetry::{Limits, Telemetry};
use licensor::license::Tier;
use licensor::protocol::{CheckInStatus, Environment, SyncStatus, UserCountRange};

on_both_backends!(a_client_check_in_stores_its_batch_once_and_checks_the_answer);

fn environment() -> Environment {
    Environment {
        app_version: "2.0.1".into(),
        os: "linux".into(),
        arch: "aarch64".into(),
        user_count_range: UserCountRange::UpTo10,
        modules_enabled: vec![],
        uptime_hours: 1.0,
        last_sync_status: SyncStatus::None,
        health: Default::default(),
    }
}

fn send(h: &Harness, request: &exchange::Request) -> (u16, Vec<u8>) {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let client = reqwest::Client::new();
    let (status, _, body) = runtime.block_on(exchange::send(&client, &h.base, request)).unwrap();
    (status, body)
}

fn a_client_check_in_stores_its_batch_once_and_checks_the_answer(h: Harness) {
    let key = h.license(Tier::Community, 1);
    let telemetry = Telemetry::new(&Limits::default());
    for _ in 0..4 {
        telemetry.counters.track_feature("invoice_sent");
    }
    telemetry.requests.track_request("POST", "/api/invoices", 201, StdDuration::from_millis(18));
    let batch =
        telemetry.take_batch(uuid::Uuid::new_v4(), (h.now() - Duration::hours(24), h.now()), environment());
    let request = build_request(
        &key,
        "client-1",
        "2.0.1",
        Some((&serde_json::to_string(&batch).unwrap(), batch.batch_id)),
        None,
        None,
    );

    let (status, body) = send(&h, &request);
    assert_eq!(status, 200);
    let verified = verify_answer(&body, &request, &h.ring, "client-1", None).unwrap();
    assert_eq!(verified.response.status, CheckInStatus::Valid);
    assert!(verified.batch_acknowledged);
    let lease = verified.lease;
    assert_eq!(lease.nonce, request.nonce);
    assert_eq!(h.store.telemetry_counts("client-1").unwrap()["telemetry_batches"], 1);

    // A retry of the same batch (a new request, the same batch id) is acknowledged, not stored.
    let retry = build_request(
        &key,
        "client-1",
        "2.0.1",
        Some((&serde_json::to_string(&batch).unwrap(), batch.batch_id)),
        None,
        None,
    );
    let (_, body) = send(&h, &retry);
    let verified = verify_answer(&body, &retry, &h.ring, "client-1", Some(lease.license_id)).unwrap();
    assert!(verified.batch_acknowledged);
    assert!(verified.response.telemetry.as_ref().unwrap().duplicate);
    assert_eq!(h.store.telemetry_counts("client-1").unwrap()["telemetry_batches"], 1);
    let (_, summary) =
        h.admin(reqwest::Method::GET, "/v1/admin/telemetry/summary?instance_id=client-1", None);
    assert_eq!(summary["usage"][0]["name"], "invoice_sent");
    assert_eq!(summary["usage"][0]["count"], 4, "stored once");

    // The old answer replayed against a new request: refused.
    assert_eq!(
        verify_answer(&body, &request, &h.ring, "client-1", None),
        Err(AnswerError::Mismatch("nonce"))
    );
    assert_eq!(
        verify_answer(&body, &retry, &h.ring, "someone-else", None),
        Err(AnswerError::Mismatch("instance"))
    );
    // The acknowledgement is signed inside the lease: the answer's unsigned copy, tampered
    // with, no longer agrees with it.
    let mut v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let lease_text = v["lease"].as_str().unwrap().to_owned();
    let signed = licensor::lease::verify_signature(&lease_text, &h.ring).unwrap();
    assert_eq!(signed.telemetry.as_ref().map(|t| (t.accepted, t.duplicate)), Some((true, true)));
    for (field, value) in
        [("digest", serde_json::json!("00".repeat(32))), ("accepted", serde_json::json!(false))]
    {
        let mut t = v.clone();
        t["telemetry"][field] = value;
        assert_eq!(
            verify_answer(&serde_json::to_vec(&t).unwrap(), &retry, &h.ring, "client-1", None),
            Err(AnswerError::Mismatch("status, time, acknowledgement or license key")),
            "{field}"
        );
    }
    // A signed acknowledgement of other bytes than those sent: refused.
    assert!(matches!(
        verify_answer(
            &body,
            &exchange::Request { digest: Some("00".repeat(32)), ..retry.clone() },
            &h.ring,
            "client-1",
            None
        ),
        Err(AnswerError::Mismatch("nonce")) | Err(AnswerError::DigestMismatch { .. })
    ));
    // A changed status with the lease left as it was: refused.
    v["status"] = serde_json::json!("revoked");
    let forged = serde_json::to_vec(&v).unwrap();
    assert!(matches!(
        verify_answer(&forged, &retry, &h.ring, "client-1", None),
        Err(AnswerError::NotAResponse(_)) | Err(AnswerError::Mismatch(_))
    ));
    // Signed by a key the client does not trust.
    let stranger = licensor::keys::KeyRing::new();
    assert!(matches!(
        verify_answer(&body, &retry, &stranger, "client-1", None),
        Err(AnswerError::BadLease(_))
    ));
}

#[test]
fn retry_policy_backs_off_with_jitter_and_retries_everything() {
    for attempt in [1, 1, 1, 1] {
        let delay = retry_policy(attempt, None);
        assert!((exchange::BACKOFF_BASE / 2..=exchange::BACKOFF_BASE).contains(&delay), "{delay:?}");
    }
    let third = retry_policy(3, None);
    assert!((exchange::BACKOFF_BASE * 2..=exchange::BACKOFF_BASE * 4).contains(&third), "{third:?}");
    let late = retry_policy(40, None);
    assert!(late <= exchange::BACKOFF_CAP && late >= exchange::BACKOFF_CAP / 2);
    let told = retry_policy(1, Some(600));
    assert!(told >= StdDuration::from_secs(600), "Retry-After is a minimum");
}

#[test]
fn the_next_check_in_is_spread_but_never_early() {
    let now = common::t0();
    let due = now + Duration::days(7);
    for _ in 0..100 {
        let at = exchange::next_check_in(due, now);
        assert!(at >= due && at <= due + Duration::hours(1), "{at}");
    }
    assert_eq!(
        exchange::next_check_in(now - Duration::hours(1), now),
        now - Duration::hours(1),
        "overdue: at once"
    );
}
