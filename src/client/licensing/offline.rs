//! For the command line: the verifier opened on a data directory for one command, without the
//! background worker. `licensor telemetry ...`, `check-in` and `deactivate` run the same code
//! the library runs, reading the same environment.

use super::verifier::Verifier;
use super::{CheckInOutcome, DeactivateError, Deactivated, Preview, StartError};
use crate::client::config::Config;
use crate::client::policy::Mode;
use crate::client::status::Status;
use crate::client::store::{LocalError, LocalStore};
use crate::license::LicensePayload;
use crate::time::Clock;
use crate::token::TokenError;

/// A verifier opened for one command: no background thread.
pub struct Opened {
    pub(crate) verifier: Verifier,
}

impl Opened {
    pub fn open(config: Config) -> Result<Opened, StartError> {
        Ok(Opened { verifier: Verifier::open(config)? })
    }

    pub fn status(&self) -> Status {
        self.verifier.status()
    }

    pub fn mode(&self) -> &Mode {
        self.verifier.mode()
    }

    pub fn notices(&self) -> Vec<String> {
        self.verifier.notices()
    }

    /// The license in force (a renewal the server delivered, when newer than the configured
    /// key), when its signature verified.
    pub fn license(&self) -> Result<LicensePayload, TokenError> {
        self.verifier.payload()
    }

    pub fn store(&self) -> Option<&LocalStore> {
        self.verifier.store.as_ref()
    }

    /// The batch the next check-in will send, taken into the outbox now if none waits there,
    /// so that it is exactly what is sent (see [`LocalStore::pin_batch`]).
    pub fn preview(&self) -> Result<Option<Preview>, LocalError> {
        self.verifier.preview()
    }

    /// What the local dashboard shows (`licensor telemetry dashboard`).
    pub fn dashboard(&self) -> Result<crate::client::dashboard::Dashboard, LocalError> {
        self.verifier.dashboard()
    }

    /// The signed usage report to carry (see [`super::Licensing::export_usage_report`]).
    pub fn export_report(&self) -> Result<super::ExportedReport, super::AirGapError> {
        self.verifier.export_report()
    }

    /// Applies a usage receipt (see [`super::Licensing::import_usage_receipt`]).
    pub fn import_receipt(&self, text: &str) -> Result<super::ReceiptOutcome, super::AirGapError> {
        self.verifier.import_receipt(text)
    }

    /// One check-in now.
    pub async fn check_in(&self) -> CheckInOutcome {
        self.verifier.check_in().await
    }

    /// Releases this instance's seat now (see [`Licensing::deactivate`]).
    pub async fn deactivate(&self) -> Result<Deactivated, DeactivateError> {
        self.verifier.deactivate().await
    }

    pub fn clock(&self) -> Clock {
        self.verifier.clock()
    }
}
