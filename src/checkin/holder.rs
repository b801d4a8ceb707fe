//! Requests of a license's holder that are not check-ins: a deployment releasing itself
//! (`/v1/deactivations`), and the holder listing and freeing the license's installs
//! (`/v1/installs/...`). Each is proven by the license key and a lease this server signed for
//! that license and the asking instance; nobody else can present both, so neither the rate
//! limits nor the installs of one license can be touched by another's holder.

use chrono::{DateTime, Duration, DurationRound as _, Utc};

use super::{bad, check_instance_and_nonce, BadRequest, CheckInError, CheckInService};
use crate::lease;
use crate::license::LicensePayload;
use crate::protocol::{self, CheckInStatus};
use crate::token;

/// What proves a request to be the license holder's.
pub(super) struct Proof<'a> {
    pub license_key: &'a str,
    pub instance_id: &'a str,
    pub nonce: &'a str,
    pub lease: &'a str,
}

/// A holder's request about the license's installs, proven.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HolderRequest {
    pub license: LicensePayload,
    /// The asking instance.
    pub instance_id: String,
    pub nonce: String,
    /// For a release: the install id or instance id to release.
    pub release: Option<String>,
    pub now: DateTime<Utc>,
}

impl CheckInService {
    /// Checks a proof at `now`: the license must verify under the ring, and the lease must be
    /// one this server signed for that license and instance; with `current`, the lease must
    /// also grant the license (status valid) until after `current`. Counts the request against
    /// the license's and the instance's rate limits. Returns the verified license.
    pub(super) fn prove(
        &self,
        proof: &Proof<'_>,
        current: Option<DateTime<Utc>>,
    ) -> Result<LicensePayload, CheckInError> {
        check_instance_and_nonce(proof.instance_id, proof.nonce)?;
        let license = token::decode::<LicensePayload>(proof.license_key)
            .and_then(|d| d.verify_signature(&self.ring).map(|()| d.claims))
            .map_err(|e| {
                bad("invalid_license", format!("the license key is not one this server trusts: {e}"))
            })?;
        let lease = lease::verify_signature(proof.lease, &self.ring)
            .map_err(|e| bad("invalid_lease", format!("the lease is not one this server signed: {e}")))?;
        if lease.license_id != license.license_id || lease.instance_id != proof.instance_id {
            return Err(bad("lease_mismatch", "the lease was signed for another license or instance").into());
        }
        if let Some(now) = current {
            if lease.status != CheckInStatus::Valid || lease.valid_until <= now {
                return Err(bad(
                    "lease_not_current",
                    "the lease has ended or did not grant the license; check in, then ask again",
                )
                .into());
            }
        }
        self.admit(&license, proof.instance_id)?;
        Ok(license)
    }

    /// Reads and checks a holder's request about the installs at `now`: `release` says whether
    /// it must name what to release (`/v1/installs/release`) or must not (`/v1/installs/list`).
    pub fn prepare_holder_request(
        &self,
        body: &[u8],
        now: DateTime<Utc>,
        release: bool,
    ) -> Result<HolderRequest, CheckInError> {
        let now = now.duration_trunc(Duration::seconds(1)).unwrap_or(now);
        let request: protocol::InstallsRequest = serde_json::from_slice(body)
            .map_err(|e| bad("invalid_request", format!("invalid installs request: {e}")))?;
        match (&request.release, release) {
            (None, true) => {
                return Err(
                    bad("invalid_request", "release: name the install id or instance id to release").into()
                )
            }
            (Some(_), false) => {
                return Err(bad("invalid_request", "release: only POST /v1/installs/release releases").into())
            }
            (Some(id), true) if !protocol::valid_instance_id(id) => {
                return Err(invalid_target().into());
            }
            _ => {}
        }
        let proof = Proof {
            license_key: &request.license_key,
            instance_id: &request.instance_id,
            nonce: &request.nonce,
            lease: &request.lease,
        };
        let license = self.prove(&proof, Some(now))?;
        Ok(HolderRequest {
            license,
            instance_id: request.instance_id,
            nonce: request.nonce,
            release: request.release,
            now,
        })
    }

    /// The signed receipt of a release.
    pub fn release_receipt(&self, r: &HolderRequest) -> String {
        crate::receipt::sign(
            &self.signer,
            crate::receipt::ReceiptPayload {
                v: crate::receipt::RECEIPT_VERSION,
                kid: self.signer.kid().to_owned(),
                action: crate::receipt::Action::Released,
                license_id: r.license.license_id,
                instance_id: r.instance_id.clone(),
                nonce: r.nonce.clone(),
                server_time: r.now,
                report_digest: None,
                report_sequence: None,
                released: r.release.clone(),
            },
        )
    }
}

fn invalid_target() -> BadRequest {
    bad(
        "invalid_request",
        "release: an install id or instance id is 1 to 64 characters of A-Z, a-z, 0-9, '_' and '-'",
    )
}
