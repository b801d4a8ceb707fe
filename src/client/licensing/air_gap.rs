//! The air-gapped round trip on the deployment's side: the signed usage report it exports and
//! the vendor's receipt it imports, each a file a person carries (`crate::usage_report` has
//! their formats). An air-gapped deployment makes no connection; these two calls are the only
//! way figures leave it and the only way a renewal reaches it.
//!
//! Invariants: one report waits for its receipt at a time, and until the receipt comes back
//! the same report (same bytes, same digest) is written again, so a report lost on the way
//! can be carried again and the server, which may have imported it, counts it once; a receipt
//! changes nothing unless both its tokens verify under the ring and bind the waiting report
//! (its digest, nonce, instance, license and batch); its effects are one transaction.

use super::verifier::{CurrentLicense, Verifier};
use crate::client::policy::{Level, Mode};
use crate::client::store::{CheckInRecord, LocalError, ReportAcknowledged};
use crate::license::LicensePayload;
use crate::protocol::{BatchLimits, CheckInStatus};
use crate::token::TokenError;
use crate::usage_report::{self, FileError, ReportBody, ReportLevel};

/// A usage report ready to carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportedReport {
    /// The file's text.
    pub text: String,
    pub sequence: u64,
    /// The SHA-256 of the report's signed bytes, which its receipt will name.
    pub digest: String,
    /// The batch it carries, and its bytes.
    pub batch_id: String,
    pub payload: String,
    /// This report was exported before and waits for its receipt: it is written again as it
    /// was, and the figures recorded since wait for the next report.
    pub again: bool,
}

/// What a usage receipt did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReceiptOutcome {
    /// The receipt was applied.
    Applied {
        sequence: u64,
        /// The license's status, as the server's lease says.
        status: CheckInStatus,
        /// The batch was stored by the server (now or at an earlier import of the same
        /// report) and moved to the ledger here; when not, the report stays due.
        accepted: bool,
        /// The server had imported this report before.
        duplicate: bool,
        /// A renewed license key the receipt delivered, now in force.
        renewed: Option<LicensePayload>,
    },
    /// The receipt acknowledges the report already acknowledged: nothing to do.
    AlreadyApplied { sequence: u64 },
}

/// Why a report could not be exported or a receipt not applied. Nothing changed.
#[derive(Debug, thiserror::Error)]
pub enum AirGapError {
    /// Signed usage reports are for air-gapped deployments only.
    #[error("{0}")]
    NotAirGapped(String),
    /// The local store failed.
    #[error(transparent)]
    Store(#[from] LocalError),
    /// The file is not a usage receipt (or the waiting report does not read back).
    #[error(transparent)]
    File(#[from] FileError),
    /// No report waits for a receipt.
    #[error(
        "no usage report is waiting for a receipt: export one first (`licensor telemetry export --signed`)"
    )]
    NothingPending,
    /// A token of the receipt is not signed by a key this deployment trusts for the server's
    /// answers, or does not read.
    #[error("the {which} token in the receipt file does not verify against this deployment's trusted keys: {source}")]
    Untrusted {
        which: &'static str,
        #[source]
        source: TokenError,
    },
    /// The receipt is genuine but answers another report, install or license (an old receipt,
    /// or another deployment's).
    #[error("{0}")]
    Mismatch(String),
    /// The command runs on the key ring recorded in the data directory, which may show but
    /// never decide what the deployment believes.
    #[error("{0}")]
    InspectionOnly(String),
}

impl Verifier {
    fn air_gapped(&self) -> Result<(), AirGapError> {
        match self.mode() {
            Mode::AirGapped { .. } if self.store.is_some() => Ok(()),
            Mode::AirGapped { .. } => Err(AirGapError::NotAirGapped("the license key is refused".into())),
            Mode::Telemetry { .. } => Err(AirGapError::NotAirGapped(
                "signed usage reports are for air-gapped Enterprise deployments; this one checks in with the \
                 license server, which receives its usage there"
                    .into(),
            )),
            Mode::Exempt { reason, .. } => Err(AirGapError::NotAirGapped(format!(
                "this deployment is exempt from telemetry ({reason}): nothing is collected, so there is nothing to \
                 report"
            ))),
            Mode::Unlicensed { reason } => Err(AirGapError::NotAirGapped(reason.clone())),
        }
    }

    /// The usage report to carry to the vendor: the one waiting for its receipt, written again
    /// as it was; otherwise a new one with everything recorded since the last (flushed first),
    /// signed by the install's key and chained to the last acknowledged report.
    pub(crate) fn export_report(&self) -> Result<ExportedReport, AirGapError> {
        self.air_gapped()?;
        let store = self.store.as_ref().expect("checked by air_gapped");
        let chain = store.report_chain()?;
        if let Some(text) = chain.pending {
            let report = usage_report::read_report(&text)?;
            return Ok(ExportedReport {
                sequence: report.body.sequence,
                digest: report.digest,
                batch_id: batch_id_of(&report.body)?,
                payload: report.body.telemetry.get().to_owned(),
                text,
                again: true,
            });
        }
        self.flush()?;
        let now = self.now();
        let batch = store.pin_batch(self.environment(now), now, &BatchLimits::default())?;
        let key = store.install_key()?;
        let current = self.current();
        let instance_id = self.instance.read().map(|k| k.instance_id.clone()).unwrap_or_default();
        let body = ReportBody {
            license_key: current.key,
            instance_id,
            software_version: self.reported_version(),
            sequence: chain.sequence + 1,
            previous_digest: chain.digest,
            nonce: crate::client::exchange::fresh_nonce(),
            created_at: now,
            install_key: usage_report::encode_install_key(&key.verifying_key()),
            level: match self.mode().level() {
                Some(Level::Basic) => ReportLevel::Basic,
                _ => ReportLevel::Full,
            },
            telemetry: serde_json::value::RawValue::from_string(batch.payload.clone())
                .map_err(|e| LocalError::Corrupt { what: "outbox payload", source: Box::new(e) })?,
        };
        let text = usage_report::write_report(&body, &key);
        let digest = usage_report::read_report(&text)?.digest;
        if !store.set_pending_report(&text)? {
            // Another process exported at the same moment: its report is the one waiting.
            return self.export_report();
        }
        Ok(ExportedReport {
            text,
            sequence: body.sequence,
            digest,
            batch_id: batch.batch_id,
            payload: batch.payload,
            again: false,
        })
    }

    /// Applies a usage receipt: both tokens must verify under the ring and bind the report
    /// waiting for it; then, in one transaction, its batch moves to the ledger (when the server
    /// accepted it), the chain moves on, and the lease and any renewed key are kept.
    pub(crate) fn import_receipt(&self, text: &str) -> Result<ReceiptOutcome, AirGapError> {
        self.air_gapped()?;
        if let Some(why) = self.untrusted_ring() {
            return Err(AirGapError::InspectionOnly(why));
        }
        let store = self.store.as_ref().expect("checked by air_gapped");
        let file = usage_report::read_receipt(text)?;
        let receipt = crate::receipt::verify(&file.receipt, &self.ring)
            .map_err(|source| AirGapError::Untrusted { which: "RECEIPT1.", source })?;
        let lease = crate::lease::verify_signature(&file.lease, &self.ring)
            .map_err(|source| AirGapError::Untrusted { which: "LEASE1.", source })?;
        let chain = store.report_chain()?;
        let Some(pending) = chain.pending else {
            if receipt.report_digest.is_some() && receipt.report_digest == chain.digest {
                return Ok(ReceiptOutcome::AlreadyApplied { sequence: chain.sequence });
            }
            return Err(AirGapError::NothingPending);
        };
        let report = usage_report::read_report(&pending)?;
        let license = self
            .payload()
            .map_err(|e| AirGapError::NotAirGapped(format!("the license key is refused ({e})")))?;
        let mismatch = |what: String| Err(AirGapError::Mismatch(what));
        if receipt.action != crate::receipt::Action::UsageImported {
            return mismatch("the receipt acknowledges something else than a usage report".into());
        }
        if receipt.license_id != license.license_id || lease.license_id != license.license_id {
            return mismatch(format!(
                "the receipt is for license {}, not this deployment's ({})",
                receipt.license_id, license.license_id
            ));
        }
        if receipt.instance_id != report.body.instance_id || lease.instance_id != report.body.instance_id {
            return mismatch(format!(
                "the receipt is for instance {}, not this one ({})",
                receipt.instance_id, report.body.instance_id
            ));
        }
        if receipt.report_digest.as_deref() != Some(report.digest.as_str())
            || receipt.report_sequence != Some(report.body.sequence)
        {
            return mismatch(format!(
                "the receipt acknowledges report {} ({}), not report {} waiting for its receipt ({}): an old or \
                 another report's receipt",
                receipt.report_sequence.unwrap_or(0),
                receipt.report_digest.as_deref().unwrap_or("?"),
                report.body.sequence,
                report.digest
            ));
        }
        if receipt.nonce != report.body.nonce || lease.nonce != report.body.nonce {
            return mismatch("the receipt's lease answers another report (its nonce differs)".into());
        }
        let batch_id = batch_id_of(&report.body)?;
        let batch_digest = crate::protocol::digest(report.body.telemetry.get().as_bytes());
        let ack = lease.telemetry.as_ref();
        if ack.is_some_and(|a| a.batch_id.to_string() != batch_id || a.digest != batch_digest) {
            return mismatch("the lease acknowledges another batch than the report's".into());
        }
        let accepted = ack.is_some_and(|a| a.accepted);
        let duplicate = ack.is_some_and(|a| a.duplicate);
        let renewed = lease.license_key.as_deref().and_then(|key| {
            let payload = super::verifier::newer_key(&license, key, &self.ring)?;
            Some((key.to_owned(), payload))
        });
        let record = CheckInRecord {
            lease: Some(file.lease.clone()),
            server_time: Some(lease.server_time),
            result: format!("{} (usage report {} imported)", lease.status, report.body.sequence),
            next_check_in_at: None,
            acknowledged: accepted.then(|| batch_id.clone()),
            renewed_key: renewed.as_ref().map(|(key, _)| key.clone()),
            report_acknowledged: accepted.then(|| ReportAcknowledged {
                sequence: report.body.sequence,
                digest: report.digest.clone(),
                payload: report.body.telemetry.get().to_owned(),
            }),
        };
        store.record_check_in(&record, self.now())?;
        if let Some((key, payload)) = &renewed {
            if let Ok(mut current) = self.license.write() {
                *current = CurrentLicense { key: key.clone(), payload: Ok(payload.clone()) };
            }
        }
        if let Ok(mut instance) = self.instance.write() {
            instance.last_server_time = Some(lease.server_time);
            instance.lease = Some(lease.clone());
        }
        Ok(ReceiptOutcome::Applied {
            sequence: report.body.sequence,
            status: lease.status,
            accepted,
            duplicate,
            renewed: renewed.map(|(_, payload)| payload),
        })
    }
}

/// The batch id inside a report's telemetry.
fn batch_id_of(body: &ReportBody) -> Result<String, AirGapError> {
    #[derive(serde::Deserialize)]
    struct Id {
        batch_id: uuid::Uuid,
    }
    serde_json::from_str::<Id>(body.telemetry.get()).map(|id| id.batch_id.to_string()).map_err(|e| {
        AirGapError::File(FileError::Invalid(format!("the report's batch has no batch_id: {e}")))
    })
}
