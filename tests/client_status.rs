//! The status a deployment reports, at the exact boundaries of every rule.

use chrono::{DateTime, Duration, TimeZone as _, Utc};
use licensor::client::policy::{Level, Mode};
use licensor::client::status::{evaluate, Facts, InvalidReason, Status, CLOCK_TOLERANCE_S};
use licensor::keys::{KeyRing, Role, Signer};
use licensor::lease::LeasePayload;
use licensor::license::{self, Expiry, LicensePayload, LicenseRequest, Tier};
use licensor::protocol::{CheckInStatus, TelemetryExemption};
use licensor::token::{TokenError, Verdict};

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 21, 10, 0, 0).unwrap()
}

fn license(tier: Tier) -> LicensePayload {
    let signer = Signer::generate("k", Role::License).unwrap();
    let request = LicenseRequest {
        licensee: "Acme".into(),
        tier,
        expiry: Expiry::At(t0() + Duration::days(365)),
        not_before: None,
        seats: 1,
        features: vec![],
        check_in_interval: None,
    };
    let key = license::issue(&signer, request, t0()).unwrap().key;
    let mut ring = KeyRing::new();
    ring.insert("k".into(), Role::License, signer.verifying_key()).unwrap();
    license::verify(&key, &ring, t0()).unwrap()
}

fn lease(status: CheckInStatus, server_time: DateTime<Utc>, next: Duration, valid: Duration) -> LeasePayload {
    LeasePayload {
        v: 1,
        kid: "lease".into(),
        status,
        license_id: uuid::Uuid::nil(),
        instance_id: "i".into(),
        nonce: "AAAAAAAAAAAAAAAAAAAAAA".into(),
        server_time,
        next_check_in_at: server_time + next,
        valid_until: server_time + valid,
        telemetry: None,
        license_key: None,
        notice: None,
    }
}

const TELEMETRY: Mode = Mode::FULL;

fn status(
    license: &LicensePayload,
    lease: Option<&LeasePayload>,
    last_server: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Status {
    evaluate(&Facts {
        license: Ok(license),
        mode: &TELEMETRY,
        lease,
        last_server_time: last_server,
        first_started: t0(),
        now,
    })
}

#[test]
fn valid_then_grace_then_invalid_as_time_passes() {
    let pro = license(Tier::Pro);
    // A Pro lease: next check-in in 7 days, valid for 21.
    let l = lease(CheckInStatus::Valid, t0(), Duration::days(7), Duration::days(21));
    let s = |now| status(&pro, Some(&l), Some(t0()), now);
    let second = Duration::seconds(1);
    assert_eq!(s(t0()), Status::Valid);
    assert_eq!(s(t0() + Duration::days(7) - second), Status::Valid);
    assert_eq!(
        s(t0() + Duration::days(7)),
        Status::Grace { until: t0() + Duration::days(21) },
        "overdue from the instant"
    );
    assert_eq!(s(t0() + Duration::days(21) - second), Status::Grace { until: t0() + Duration::days(21) });
    assert_eq!(
        s(t0() + Duration::days(21)),
        Status::Invalid { reason: InvalidReason::LeaseExpired { at: t0() + Duration::days(21) } }
    );
}

#[test]
fn a_fresh_install_is_in_its_first_grace_period_of_at_most_one_interval() {
    // The grace before a first check-in is the tier's grace, but never longer than one check-in
    // interval: a deployment cannot run for a week without ever calling the server.
    for (tier, days) in [(Tier::Community, 1), (Tier::Pro, 7), (Tier::Enterprise, 30)] {
        let l = license(tier);
        let until = t0() + Duration::days(days);
        assert_eq!(status(&l, None, None, until - Duration::seconds(1)), Status::Grace { until }, "{tier}");
        assert_eq!(status(&l, None, None, t0()), Status::Grace { until }, "{tier}");
        assert_eq!(
            status(&l, None, None, until),
            Status::Invalid { reason: InvalidReason::LeaseExpired { at: until } }
        );
    }
}

#[test]
fn a_clock_set_back_is_reported_not_trusted() {
    let pro = license(Tier::Pro);
    let l = lease(CheckInStatus::Valid, t0(), Duration::days(7), Duration::days(21));
    let later_server = t0() + Duration::days(30);
    // The lease alone would look valid at t0, but the server was seen at t0 + 30 days.
    assert_eq!(
        status(&pro, Some(&l), Some(later_server), t0()),
        Status::Invalid { reason: InvalidReason::ClockSetBack { local: t0(), server: later_server } }
    );
    // Ordinary drift is tolerated.
    let drift = Duration::seconds(CLOCK_TOLERANCE_S);
    assert_eq!(status(&pro, Some(&l), Some(t0() + drift), t0()), Status::Valid);
    assert!(matches!(
        status(&pro, Some(&l), Some(t0() + drift + Duration::seconds(1)), t0()),
        Status::Invalid { reason: InvalidReason::ClockSetBack { .. } }
    ));
}

#[test]
fn refusals_from_the_server() {
    let pro = license(Tier::Pro);
    let revoked = lease(CheckInStatus::Revoked, t0(), Duration::days(7), Duration::zero());
    assert_eq!(
        status(&pro, Some(&revoked), Some(t0()), t0()),
        Status::Invalid { reason: InvalidReason::Refused(CheckInStatus::Revoked) }
    );
    // Telemetry required while a seat is still held: grace until the held lease runs out.
    let held = lease(CheckInStatus::TelemetryRequired, t0(), Duration::hours(1), Duration::days(3));
    assert_eq!(
        status(&pro, Some(&held), Some(t0()), t0()),
        Status::Grace { until: t0() + Duration::days(3) }
    );
    let none_held = lease(CheckInStatus::SeatLimitExceeded, t0(), Duration::hours(1), Duration::zero());
    assert_eq!(
        status(&pro, Some(&none_held), Some(t0()), t0()),
        Status::Invalid { reason: InvalidReason::Refused(CheckInStatus::SeatLimitExceeded) }
    );
}

#[test]
fn modes_and_offline_refusals() {
    let pro = license(Tier::Enterprise);
    let exempt = Mode::Exempt { exemption: TelemetryExemption::PrivateAddress, reason: "10.0.0.1".into() };
    fn facts<'a>(mode: &'a Mode, license: Result<&'a LicensePayload, &'a TokenError>) -> Facts<'a> {
        Facts {
            license,
            mode,
            lease: None,
            last_server_time: None,
            first_started: t0() - Duration::days(400),
            now: t0(),
        }
    }
    // An exempt deployment is judged by its leases like any other: long past its first grace,
    // with no lease, it is not licensed.
    assert_eq!(
        evaluate(&facts(&exempt, Ok(&pro))),
        Status::Invalid { reason: InvalidReason::LeaseExpired { at: t0() - Duration::days(370) } }
    );
    assert_eq!(
        evaluate(&facts(&Mode::AirGapped { level: Level::Full }, Ok(&pro))),
        Status::Valid,
        "no lease needed when air-gapped"
    );
    // A lease carried in with a usage receipt: its times do not apply to an install that never
    // checks in (one long lapsed is still valid), but a revocation does.
    let air = Mode::AirGapped { level: Level::Full };
    let lapsed =
        lease(CheckInStatus::Valid, t0() - Duration::days(300), Duration::days(30), Duration::days(37));
    let revoked =
        lease(CheckInStatus::Revoked, t0() - Duration::days(1), Duration::days(30), Duration::zero());
    assert_eq!(evaluate(&Facts { lease: Some(&lapsed), ..facts(&air, Ok(&pro)) }), Status::Valid);
    assert_eq!(
        evaluate(&Facts { lease: Some(&revoked), ..facts(&air, Ok(&pro)) }),
        Status::Invalid { reason: InvalidReason::Refused(CheckInStatus::Revoked) }
    );
    let expired = TokenError::Expired { expires_at: t0() };
    for mode in [&exempt, &Mode::AirGapped { level: Level::Full }, &TELEMETRY] {
        assert_eq!(
            evaluate(&facts(mode, Err(&expired))),
            Status::Invalid { reason: InvalidReason::License(Verdict::Expired) }
        );
    }
    let reason = InvalidReason::ClockSetBack { local: t0(), server: t0() + Duration::days(1) };
    assert!(reason.to_string().contains("set back"));
}
