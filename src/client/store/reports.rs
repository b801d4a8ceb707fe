//! What an air-gapped install keeps for its signed usage reports: its own key, where its chain
//! of reports stands, and the report exported and not yet acknowledged. A receipt's effects
//! (the chain moved on, the batch to the ledger, the lease) are recorded by
//! [`LocalStore::record_check_in`] in one transaction, like a check-in's.

use diesel::prelude::*;
use ed25519_dalek::SigningKey;

use super::schema::report_state;
use super::{corrupt, LocalError, LocalStore};

/// Where the install's chain of usage reports stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportChain {
    /// The sequence of the last report a verified receipt acknowledged (0: none yet).
    pub sequence: u64,
    /// That report's digest.
    pub digest: Option<String>,
    /// The report exported and waiting for its receipt, as written.
    pub pending: Option<String>,
}

impl LocalStore {
    /// The install's own signing key, created on first use (the first air-gapped start) from
    /// the operating system's randomness. It never leaves this file; its public half travels
    /// in each report.
    pub fn install_key(&self) -> Result<SigningKey, LocalError> {
        let mut conn = self.conn();
        conn.immediate_transaction(|c| {
            let stored: Option<String> =
                report_state::table.select(report_state::install_key).first(c).optional()?;
            if let Some(text) = stored {
                let bytes: [u8; 32] = hex::decode(&text)
                    .ok()
                    .and_then(|b| b.try_into().ok())
                    .ok_or_else(|| corrupt("install key", super::Unknown("not 32 bytes of hex".into())))?;
                return Ok(SigningKey::from_bytes(&bytes));
            }
            let key = SigningKey::from_bytes(&rand::random::<[u8; 32]>());
            diesel::insert_into(report_state::table)
                .values((report_state::id.eq(1), report_state::install_key.eq(hex::encode(key.to_bytes()))))
                .execute(c)?;
            Ok(key)
        })
    }

    /// Where the chain of reports stands.
    pub fn report_chain(&self) -> Result<ReportChain, LocalError> {
        let row: Option<(i64, Option<String>, Option<String>)> = report_state::table
            .select((
                report_state::report_sequence,
                report_state::report_digest,
                report_state::pending_report,
            ))
            .first(&mut *self.conn())
            .optional()?;
        Ok(match row {
            Some((sequence, digest, pending)) => {
                ReportChain { sequence: sequence.max(0) as u64, digest, pending }
            }
            None => ReportChain { sequence: 0, digest: None, pending: None },
        })
    }

    /// Keeps the report just exported until its receipt comes back. Only when none waits: the
    /// one waiting is written again instead of a new one (see `licensor telemetry export`).
    pub fn set_pending_report(&self, text: &str) -> Result<bool, LocalError> {
        Ok(diesel::update(report_state::table.filter(report_state::pending_report.is_null()))
            .set(report_state::pending_report.eq(text))
            .execute(&mut *self.conn())?
            > 0)
    }
}
