//! For the command line: the verifier opened on a data directory for one command, without the
//! background worker. `licensor telemetry ...`, `check-in` and `deactivate` run the same code
//! the library runs, reading the same environment.

use super::verifier::Verifier;
use super::{CheckInOutcome, DeactivateError, Deactivated, StartError};
use crate::client::config::Config;
use crate::client::policy::Mode;
use crate::client::status::Status;
use crate::client::store::{LocalError, LocalStore};
use crate::license::LicensePayload;
use crate::protocol::BatchLimits;
use crate::time::Clock;
use crate::token::TokenError;

/// What `licensor telemetry preview` shows.
#[derive(Debug, Clone, PartialEq)]
pub struct Preview {
    pub batch_id: String,
    /// The batch's bytes, exactly as the next check-in sends them.
    pub payload: String,
    /// Figures recorded after the batch was taken, waiting for the batch after it.
    pub queued_behind: i64,
    /// When the running application last flushed its figures (and recorded its environment):
    /// what it tracked since is still in its memory. `None` when no application has.
    pub application_flushed_at: Option<chrono::DateTime<chrono::Utc>>,
}

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
        &self.verifier.mode
    }

    pub fn notices(&self) -> &[String] {
        &self.verifier.notices
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
        let Some(store) = &self.verifier.store else { return Ok(None) };
        let now = self.verifier.now();
        let batch = store.pin_batch(self.verifier.environment(now), now, &BatchLimits::default())?;
        Ok(Some(Preview {
            batch_id: batch.batch_id,
            payload: batch.payload,
            queued_behind: store.unbatched_rows()?,
            application_flushed_at: self.verifier.recorded_environment().map(|(_, at)| at),
        }))
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
