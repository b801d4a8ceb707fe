//! Receipts: the server's signed answer to a request that is not a check-in (`RECEIPT1.`
//! tokens), binding what was done, to which license and instance, the client's nonce and the
//! server's time. Signed by the server's lease key (the role that signs the server's answers),
//! so a deployment believes a receipt exactly as it believes a lease. This module does no I/O.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::keys::{KeyRing, Role, Signer};
use crate::protocol;
pub use crate::token::RECEIPT;
use crate::token::{self, Claims, Kind, TokenError};

/// The receipt payload format version this build reads and writes.
pub const RECEIPT_VERSION: u32 = 1;

/// What a receipt acknowledges.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// The instance released its seat: the server forgot it, and its next check-in, if any,
    /// is a new instance's.
    Deactivated,
    /// An air-gapped install's usage report was imported (or had been: a second import of the
    /// same report is acknowledged again, not counted twice). The receipt names the report's
    /// digest and sequence; the lease beside it says whether its batch was accepted.
    UsageImported,
    /// The license's holder released one of its installs (or one process): the server forgot
    /// the processes named by `released`, and their seat is free until one checks in again.
    Released,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceiptPayload {
    pub v: u32,
    /// Id of the server key that signed the receipt.
    pub kid: String,
    pub action: Action,
    pub license_id: Uuid,
    pub instance_id: String,
    /// The client's nonce from the request this receipt answers.
    pub nonce: String,
    #[serde(with = "crate::time::rfc3339")]
    pub server_time: DateTime<Utc>,
    /// For `usage_imported`: the SHA-256 of the report's signed bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report_digest: Option<String>,
    /// For `usage_imported`: the report's place in its install's chain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report_sequence: Option<u64>,
    /// For `released`: the install id or instance id that was released.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub released: Option<String>,
}

impl Claims for ReceiptPayload {
    const KIND: Kind = RECEIPT;
    const VERSION: u32 = RECEIPT_VERSION;

    fn version(&self) -> u32 {
        self.v
    }

    fn kid(&self) -> &str {
        &self.kid
    }

    fn not_before(&self) -> Option<DateTime<Utc>> {
        None
    }

    fn expires_at(&self) -> Option<DateTime<Utc>> {
        None
    }

    fn check_fields(&self) -> Result<(), String> {
        protocol::check_signed_answer(&self.kid, &self.instance_id, &self.nonce)?;
        match (self.action, &self.report_digest, self.report_sequence) {
            (Action::Deactivated, None, None) if self.released.is_none() => Ok(()),
            (Action::Released, None, None)
                if self.released.as_deref().is_some_and(protocol::valid_instance_id) =>
            {
                Ok(())
            }
            (Action::Released, ..) => {
                Err("released: a release receipt names what it released, and no report".into())
            }
            (Action::UsageImported, Some(d), Some(n))
                if self.released.is_none()
                    && n >= 1
                    && d.len() == 64
                    && d.bytes().all(|b| b.is_ascii_hexdigit()) =>
            {
                Ok(())
            }
            (Action::Deactivated, ..) => {
                Err("a deactivation receipt names no report and releases nothing else".into())
            }
            (Action::UsageImported, ..) => {
                Err("report_digest and report_sequence: a usage receipt names the report it acknowledges"
                    .into())
            }
        }
    }
}

/// Signs a receipt under the server's lease key.
pub fn sign(signer: &Signer, mut payload: ReceiptPayload) -> String {
    debug_assert_eq!(signer.role(), Role::Lease, "receipts are signed by a lease key");
    payload.v = RECEIPT_VERSION;
    payload.kid = signer.kid().to_owned();
    token::sign(&payload, signer.signing_key())
}

/// Verifies a receipt's structure and signature under a key trusted for the lease role.
pub fn verify(receipt: &str, ring: &KeyRing) -> Result<ReceiptPayload, TokenError> {
    let decoded = token::decode::<ReceiptPayload>(receipt)?;
    decoded.verify_signature(ring)?;
    Ok(decoded.claims)
}
