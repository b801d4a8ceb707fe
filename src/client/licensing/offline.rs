//! For the command line: the verifier opened on a data directory for one command, without the
//! background worker. `licensor telemetry ...`, `check-in` and `deactivate` run the same code
//! the library runs, reading the same environment.

use super::verifier::Verifier;
use super::{CheckInOutcome, DeactivateError, Deactivated, Preview, StartError};
use crate::client::config::{Config, KeySource, LicenseSource};
use crate::client::policy::Mode;
use crate::client::status::Status;
use crate::client::store::{LocalError, LocalStore};
use crate::keys::{KeyRing, Role};
use crate::license::LicensePayload;
use crate::time::Clock;
use crate::token::TokenError;

/// A verifier opened for one command: no background thread.
pub struct Opened {
    pub(crate) verifier: Verifier,
}

impl Opened {
    /// Opens the data directory with `config` (the environment), taking what it does not say
    /// from what the application recorded there: its license key, server and instance URLs,
    /// and its key ring, which then serves for showing only (see [`Verifier::untrusted_ring`]).
    pub fn open(mut config: Config) -> Result<Opened, StartError> {
        let mut ring_for_inspection = false;
        if LocalStore::exists(&config.data_dir) {
            let store = LocalStore::open(&config.data_dir)?;
            if config.license.is_none() {
                if let Some(key) = store.state()?.and_then(|s| s.license_key) {
                    config.license = Some(LicenseSource::Key(key));
                }
            }
            if let Some(recorded) = store.app_settings()? {
                if config.keys.is_none() {
                    let mut ring = KeyRing::new();
                    for key in &recorded.keys {
                        let role = Role::parse(&key.role).ok_or_else(|| LocalError::Corrupt {
                            what: "application settings",
                            source: format!("a key of role {:?}", key.role).into(),
                        })?;
                        ring.insert_pem(&key.kid, role, &key.pem)?;
                    }
                    config.keys = Some(KeySource::Ring(ring));
                    ring_for_inspection = true;
                }
                config.server_url = config.server_url.or(recorded.server_url);
                config.instance_url = config.instance_url.or(recorded.instance_url);
                config.install_id = config.install_id.or(recorded.install_id);
            }
        }
        let mut verifier = Verifier::open(config)?;
        verifier.ring_for_inspection = ring_for_inspection;
        Ok(Opened { verifier })
    }

    /// The install this deployment's check-ins name (where it checks in).
    pub fn install(&self) -> Option<&crate::protocol::InstallRef> {
        self.verifier.install.as_ref()
    }

    /// Whether the key ring came from the data directory (no `LICENSOR_KEYS_DIR`): the command
    /// can show and inspect, but not check in, deactivate or import a receipt.
    pub fn ring_for_inspection(&self) -> bool {
        self.verifier.ring_for_inspection
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

    /// The license's installs (see [`Licensing::installs`]).
    pub async fn installs(&self) -> Result<crate::protocol::InstallsResponse, DeactivateError> {
        self.verifier.installs().await
    }

    /// Releases an install or process of the license (see [`Licensing::release_install`]).
    pub async fn release_install(&self, id: &str) -> Result<super::ReleasedInstall, DeactivateError> {
        self.verifier.release_install(id).await
    }

    pub fn clock(&self) -> Clock {
        self.verifier.clock()
    }
}
