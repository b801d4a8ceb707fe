//! Leases: the server's signed answer to a check-in (`LEASE1.` tokens), binding the license,
//! the instance, the client's nonce, the times the server decided and the acknowledgement of
//! the batch sent. Every answer that can change a client's state carries one. A client keeps its last
//! lease to start offline; because the nonce is inside, an old answer replayed can never
//! satisfy a new check-in. This module does no I/O.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::keys::{KeyRing, Signer};
use crate::protocol::{self, CheckInStatus};
use crate::token::{self, Claims, Kind, TokenError};

/// The lease payload format version this build reads and writes.
pub const LEASE_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeasePayload {
    pub v: u32,
    /// Id of the server key that signed the lease.
    pub kid: String,
    pub status: CheckInStatus,
    pub license_id: Uuid,
    pub instance_id: String,
    /// The client's nonce from the check-in this lease answers.
    pub nonce: String,
    #[serde(with = "crate::time::rfc3339")]
    pub server_time: DateTime<Utc>,
    #[serde(with = "crate::time::rfc3339")]
    pub next_check_in_at: DateTime<Utc>,
    /// The instance may run on this lease until then (exclusive).
    #[serde(with = "crate::time::rfc3339")]
    pub valid_until: DateTime<Utc>,
    /// The acknowledgement of the batch this check-in carried, signed with the rest: the
    /// client lets a batch go only on this, never on the answer's unsigned copy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub telemetry: Option<protocol::TelemetryAck>,
    /// A newer license key for the same license, delivered by this answer: bound to the
    /// nonce with the rest, so nobody on the way can hand an instance another key (which must
    /// verify under the client's license keys besides).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub license_key: Option<String>,
    /// Something the deployment's operator should know although the status is `valid` (the
    /// license is over its seats in a soft-overage period): signed, so shown as the vendor's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notice: Option<String>,
}

impl Claims for LeasePayload {
    const KIND: Kind = token::LEASE;
    const VERSION: u32 = LEASE_VERSION;

    fn version(&self) -> u32 {
        self.v
    }

    fn kid(&self) -> &str {
        &self.kid
    }

    fn not_before(&self) -> Option<DateTime<Utc>> {
        // Not bound to the server's clock: a client clock slightly behind must still accept
        // a fresh lease. Clock rollback is the client's own check.
        None
    }

    fn expires_at(&self) -> Option<DateTime<Utc>> {
        Some(self.valid_until)
    }

    fn check_fields(&self) -> Result<(), String> {
        protocol::check_signed_answer(&self.kid, &self.instance_id, &self.nonce)?;
        if self.next_check_in_at < self.server_time {
            return Err("next_check_in_at: before server_time".into());
        }
        Ok(())
    }
}

/// Signs a lease under the server's key, which must be a lease key (the server checks its
/// role when it loads it).
pub fn sign(signer: &Signer, mut payload: LeasePayload) -> String {
    debug_assert_eq!(signer.role(), crate::keys::Role::Lease, "leases are signed by a lease key");
    payload.v = LEASE_VERSION;
    payload.kid = signer.kid().to_owned();
    token::sign(&payload, signer.signing_key())
}

/// Verifies a lease's structure and signature (not its window: a client judges an old lease's
/// times itself, against its own clock and the last server time it saw).
pub fn verify_signature(lease: &str, ring: &KeyRing) -> Result<LeasePayload, TokenError> {
    let decoded = token::decode::<LeasePayload>(lease)?;
    decoded.verify_signature(ring)?;
    Ok(decoded.claims)
}
