//! The license holder's view of the license's seats, from a deployment (`licensor installs`):
//! the installs and processes the server knows, and the release of one of them. Both send the
//! license key and this instance's lease, which the server requires to be current.
//!
//! Invariant: nothing here changes this deployment's state. A release frees a seat on the
//! server only, and its receipt is verified for the operator's sake (so it may be verified
//! under a key ring recorded in the data directory); releasing this deployment's own install
//! does not stop it, and it takes its seat again at its next check-in.

use super::verifier::{error_message, Verifier};
use super::DeactivateError;
use crate::client::exchange;
use crate::protocol::{InstallReleaseResponse, InstallsRequest, InstallsResponse};

/// A release the server signed for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleasedInstall {
    pub license_id: uuid::Uuid,
    /// The install id or instance id released.
    pub released: String,
    /// Processes the server forgot (0 when it knew none of that id).
    pub processes: u32,
    pub seat_freed: bool,
    pub server_time: chrono::DateTime<chrono::Utc>,
    /// The signed receipt (`RECEIPT1.`), to keep.
    pub receipt: String,
}

impl Verifier {
    /// The license's installs and their processes, as the license server lists them.
    pub(super) async fn installs(&self) -> Result<InstallsResponse, DeactivateError> {
        let (status, answer, _) = self.ask_about_installs("/v1/installs/list", None).await?;
        if !(200..300).contains(&status) {
            return Err(DeactivateError::Refused { status, message: error_message(&answer) });
        }
        serde_json::from_slice(&answer)
            .map_err(|e| DeactivateError::BadReceipt(format!("not a listing of installs: {e}")))
    }

    /// Releases an install (by its id) or one process (by its instance id) of this license.
    pub(super) async fn release_install(&self, id: &str) -> Result<ReleasedInstall, DeactivateError> {
        let (status, answer, nonce) = self.ask_about_installs("/v1/installs/release", Some(id)).await?;
        if !(200..300).contains(&status) {
            return Err(DeactivateError::Refused { status, message: error_message(&answer) });
        }
        let bad = |m: String| DeactivateError::BadReceipt(m);
        let response: InstallReleaseResponse =
            serde_json::from_slice(&answer).map_err(|e| bad(format!("not a release answer: {e}")))?;
        let receipt =
            crate::receipt::verify(&response.receipt, &self.ring).map_err(|e| bad(e.to_string()))?;
        let payload = self.current().payload.map_err(|e| bad(e.to_string()))?;
        if receipt.action != crate::receipt::Action::Released
            || receipt.nonce != nonce
            || receipt.license_id != payload.license_id
            || receipt.released.as_deref() != Some(id)
        {
            return Err(bad("the receipt binds another request: a replayed or misdirected answer".into()));
        }
        Ok(ReleasedInstall {
            license_id: receipt.license_id,
            released: id.to_owned(),
            processes: response.processes,
            seat_freed: response.seat_freed,
            server_time: receipt.server_time,
            receipt: response.receipt,
        })
    }

    /// Sends a holder's request: the answer's HTTP status and body, and the nonce sent.
    async fn ask_about_installs(
        &self,
        path: &str,
        release: Option<&str>,
    ) -> Result<(u16, Vec<u8>, String), DeactivateError> {
        let current = self.current();
        let (Some(store), Ok(_), true) = (&self.store, &current.payload, self.mode().checks_in()) else {
            return Err(DeactivateError::NotApplicable(self.mode().off_reason().unwrap_or_default()));
        };
        let (Some(http), Some(server)) = (&self.http, &self.server_url) else {
            return Err(DeactivateError::NotApplicable("no license server is configured".into()));
        };
        let lease = store.state()?.and_then(|s| s.lease).ok_or(DeactivateError::NeverCheckedIn)?;
        let nonce = exchange::fresh_nonce();
        let body = serde_json::to_vec(&InstallsRequest {
            license_key: current.key.clone(),
            instance_id: self.instance.read().map(|k| k.instance_id.clone()).unwrap_or_default(),
            nonce: nonce.clone(),
            lease,
            release: release.map(str::to_owned),
        })
        .expect("an installs request serialises");
        let (status, _, answer) =
            exchange::post(http, server, path, body).await.map_err(DeactivateError::NoAnswer)?;
        Ok((status, answer, nonce))
    }
}
