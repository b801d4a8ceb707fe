//! The status a deployment reports, decided from what it knows offline: its license (verified
//! against the key ring), the last lease the server signed for it (signature verified), its
//! own clock, and the latest server time it has seen. No I/O, and time is an argument, so
//! every rule is tested at its exact boundaries.

use chrono::{DateTime, Duration, Utc};
use std::fmt;

use super::policy::Mode;
use crate::lease::LeasePayload;
use crate::license::LicensePayload;
use crate::protocol::CheckInStatus;
use crate::token::{TokenError, Verdict};

/// How far the local clock may run behind the latest server time seen before it counts as set
/// back: ordinary drift between two machines stays well inside this.
pub const CLOCK_TOLERANCE_S: i64 = 5 * 60;

/// What the application asks `status()` for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// Licensed, and the last check-in is recent enough.
    Valid,
    /// Licensed, but the check-in is overdue (or has not happened yet): fine until `until`.
    Grace { until: DateTime<Utc> },
    /// Not licensed now; the reason says why.
    Invalid { reason: InvalidReason },
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Status::Valid => f.write_str("valid"),
            Status::Grace { until } => write!(f, "grace until {}", crate::time::format(until)),
            Status::Invalid { reason } => write!(f, "invalid: {reason}"),
        }
    }
}

/// Why a deployment is not licensed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InvalidReason {
    /// The license key itself was refused offline, with its verdict.
    License(Verdict),
    /// The server's last answer refused this instance (revoked, seat limit, ...).
    Refused(CheckInStatus),
    /// No check-in succeeded before the lease (or the first grace period) ran out.
    LeaseExpired { at: DateTime<Utc> },
    /// The local clock is behind the latest server time seen: the lease cannot be judged.
    ClockSetBack { local: DateTime<Utc>, server: DateTime<Utc> },
    /// This instance released its seat (`Licensing::deactivate`).
    Deactivated,
}

impl fmt::Display for InvalidReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InvalidReason::License(verdict) => write!(f, "the license key is {verdict}"),
            InvalidReason::Refused(status) => write!(f, "the license server answered {status}"),
            InvalidReason::LeaseExpired { at } => {
                write!(f, "no successful check-in before {}", crate::time::format(at))
            }
            InvalidReason::Deactivated => f.write_str("this instance released its seat (deactivated)"),
            InvalidReason::ClockSetBack { local, server } => write!(
                f,
                "the local clock ({}) is behind the license server's last time ({}): it was set back",
                crate::time::format(local),
                crate::time::format(server)
            ),
        }
    }
}

/// What the verifier knows when it judges.
pub struct Facts<'a> {
    /// The license as verified offline at `now` (signature and validity window).
    pub license: Result<&'a LicensePayload, &'a TokenError>,
    pub mode: &'a Mode,
    /// The last lease whose signature verified and that names this license and instance.
    pub lease: Option<&'a LeasePayload>,
    /// The latest server time ever seen (from any lease), kept across restarts.
    pub last_server_time: Option<DateTime<Utc>>,
    /// When this instance first started, kept across restarts: the first grace period runs
    /// from then until the first check-in.
    pub first_started: DateTime<Utc>,
    pub now: DateTime<Utc>,
}

/// Decides the status from the facts.
pub fn evaluate(facts: &Facts<'_>) -> Status {
    let license = match facts.license {
        Ok(license) => license,
        Err(e) => return Status::Invalid { reason: InvalidReason::License(e.verdict()) },
    };
    match facts.mode {
        // Air-gapped: the offline verification (expiry included) is the judgement, and a lease
        // carried in by hand with a usage receipt can only add a revocation: its times assume
        // check-ins this deployment never makes.
        Mode::AirGapped { .. } => {
            return match facts.lease.map(|l| l.status) {
                Some(CheckInStatus::Revoked) => {
                    Status::Invalid { reason: InvalidReason::Refused(CheckInStatus::Revoked) }
                }
                _ => Status::Valid,
            }
        }
        // An exempt deployment checks in for its license like any other: it is judged by its
        // leases. (An unlicensed one never gets here: its key was refused above.)
        Mode::Telemetry { .. } | Mode::Exempt { .. } | Mode::Unlicensed { .. } => {}
    }
    if let Some(server) = facts.last_server_time {
        if facts.now + Duration::seconds(CLOCK_TOLERANCE_S) < server {
            return Status::Invalid { reason: InvalidReason::ClockSetBack { local: facts.now, server } };
        }
    }
    let Some(lease) = facts.lease else {
        // Before the first check-in, at most one check-in interval: long enough for any
        // outage a deployment can start in, too short to run unlicensed by never calling.
        let until = facts.first_started + license.tier.grace().min(license.check_in_interval());
        return if facts.now < until {
            Status::Grace { until }
        } else {
            Status::Invalid { reason: InvalidReason::LeaseExpired { at: until } }
        };
    };
    if facts.now >= lease.valid_until {
        return match lease.status {
            CheckInStatus::Valid => {
                Status::Invalid { reason: InvalidReason::LeaseExpired { at: lease.valid_until } }
            }
            refused => Status::Invalid { reason: InvalidReason::Refused(refused) },
        };
    }
    match lease.status {
        CheckInStatus::Valid if facts.now < lease.next_check_in_at => Status::Valid,
        // Overdue, or refused for a reason the instance can fix while it still holds its seat.
        _ => Status::Grace { until: lease.valid_until },
    }
}
