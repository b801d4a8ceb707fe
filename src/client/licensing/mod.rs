//! The handle a licensed application holds: [`Licensing::start`] opens the `verifier`
//! (the license verified offline, the instance's identity and last lease restored from the
//! local store) and, where telemetry is on, starts the background `worker`, which flushes
//! figures to the store, runs health checks, rolls old figures up, and checks in on the
//! schedule the last lease names. [`offline`] is the same verifier without the worker, for the
//! command line.
//!
//! `track_*` calls and `status()` only touch memory. The network is used only by the worker
//! and by the calls that ask for it (`check_in_now`, `deactivate`); the store is written by the
//! worker, by `flush`, `summary` and `shutdown` when the host calls them (the actix scope calls
//! `summary` from a blocking thread), and by the CLI's process. Every write is one SQLite
//! transaction, so writers on any thread, or in another process, serialise there; a slow or
//! dead license server can delay nothing but the next check-in.

use chrono::{DateTime, Utc};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::config::Config;
use super::policy::Mode;
use super::status::Status;
use super::telemetry::{Session, Telemetry};
use crate::client::store::{LocalError, LocalSummary};
use crate::keys::KeyError;
use crate::license;
use crate::protocol::{CheckInStatus, Health};
use verifier::Verifier;
use worker::Worker;

mod air_gap;
mod installs;
pub mod offline;
mod verifier;
pub use air_gap::{AirGapError, ExportedReport, ReceiptOutcome};
pub use installs::ReleasedInstall;
#[cfg(feature = "cli")]
pub(crate) use verifier::root_certificates;
mod worker;

/// Why the verifier could not start. An invalid license is not one of these: the verifier
/// starts and reports it through [`Licensing::status`].
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Neither a license key nor a license file was given.
    #[error("no license: set LICENSOR_LICENSE_KEY or LICENSOR_LICENSE_FILE")]
    NoLicense,
    /// The license file could not be read.
    #[error("cannot read the license file {path}")]
    LicenseFile { path: std::path::PathBuf, source: std::io::Error },
    /// No trusted keys were given.
    #[error("no trusted keys: set LICENSOR_KEYS_DIR or pass the application's built-in keys")]
    NoKeys,
    /// The key ring could not be loaded.
    #[error("cannot load the trusted keys")]
    Keys(#[from] KeyError),
    /// Telemetry is required and no license server is configured.
    #[error("the {tier} tier checks in with a license server: set LICENSOR_SERVER_URL")]
    NoServer { tier: license::Tier },
    /// The server URL is not usable.
    #[error("{0}")]
    BadServerUrl(String),
    /// The instance URL (`LICENSOR_INSTANCE_URL`) cannot be read: a deployment whose address
    /// cannot be judged is not exempt from anything, so it does not start.
    #[error("{0}")]
    BadInstanceUrl(String),
    /// The local store could not be opened.
    #[error(transparent)]
    Store(#[from] LocalError),
    /// The background thread or its runtime could not be started.
    #[error("cannot start the background check-in thread")]
    Runtime(#[source] std::io::Error),
    /// The HTTP client could not be set up (no TLS roots, a bad TLS library state).
    #[error("cannot set up the HTTP client")]
    HttpClient(#[source] reqwest::Error),
    /// The operator's saved telemetry choice (`telemetry.json` in the data directory) cannot
    /// be read.
    #[error(transparent)]
    Choice(#[from] crate::client::choice::ChoiceError),
    /// The extra root certificate (`LICENSOR_CA_CERT`) cannot be read or holds no PEM
    /// certificate.
    #[error("LICENSOR_CA_CERT {path}: {message}")]
    RootCertificate { path: std::path::PathBuf, message: String },
}

/// How long a clean stop waits for the server to release the process: shutdown stays within
/// a second whatever the server does.
const RELEASE_ON_STOP: Duration = Duration::from_millis(600);

/// The batch the next check-in will send, as a preview shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct Preview {
    pub batch_id: String,
    /// The batch's bytes, exactly as the next check-in sends them.
    pub payload: String,
    /// Figures recorded after the batch was taken, waiting for the batch after it.
    pub queued_behind: i64,
    /// What of the running application's memory the batch leaves out.
    pub unflushed: Unflushed,
}

/// What a preview leaves out of the figures a running application holds in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unflushed {
    /// Nothing: the application flushed its memory before the batch was taken (its own
    /// preview, [`Licensing::preview`]).
    Nothing,
    /// A command's preview: what the application tracked since its last flush, at this time,
    /// is still in its memory and goes into a later batch.
    Since(chrono::DateTime<chrono::Utc>),
    /// No application has flushed figures into this data directory yet.
    NoApplication,
}

/// Why [`Licensing::save_choice`] saved nothing.
#[derive(Debug, thiserror::Error)]
pub enum SaveChoiceError {
    /// The license's tier does not allow the choice (or the license is refused); the reason.
    #[error("{0}")]
    Refused(String),
    /// The file could not be written.
    #[error(transparent)]
    Write(#[from] crate::client::choice::ChoiceError),
}

/// The license as the application sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LicenseInfo {
    pub license_id: uuid::Uuid,
    pub licensee: String,
    pub tier: license::Tier,
    /// The entitlements: features the license grants.
    pub features: Vec<String>,
    pub seats: u32,
    /// `None` for a perpetual license.
    pub expires_at: Option<DateTime<Utc>>,
}

/// What one check-in came to.
#[derive(Debug, Clone, PartialEq)]
pub enum CheckInOutcome {
    /// The server answered and the answer verified.
    Answered { status: CheckInStatus, next_check_in_at: DateTime<Utc>, batch_acknowledged: bool },
    /// `LICENSOR_TELEMETRY_DEBUG`: the batch was printed to stderr, nothing was sent.
    Printed,
    /// An air-gapped deployment offered its batch to its sender (`to`), without connecting
    /// anywhere itself (see [`crate::client::sender`]).
    Delivered { to: String, delivered: crate::client::sender::Delivered },
    /// No believable answer: the request failed, the answer did not verify, or it carried no
    /// signed lease (a 4xx included). Nothing changed; the next attempt is after `retry`.
    NoAnswer { error: String, retry: Duration },
    /// This instance does not check in (development, air-gapped, invalid license).
    NotApplicable(String),
}

/// Why an instance could not release its seat. Nothing changed locally in any of these cases.
#[derive(Debug, thiserror::Error)]
pub enum DeactivateError {
    /// This instance does not talk to a license server (development, air-gapped, refused key).
    #[error("this instance does not check in, so it holds no seat: {0}")]
    NotApplicable(String),
    /// No lease was ever signed for this instance: it never held a seat to release.
    #[error("this instance never checked in: it holds no seat")]
    NeverCheckedIn,
    /// No answer came.
    #[error("no answer")]
    NoAnswer(#[source] crate::client::exchange::SendError),
    /// The server refused (an error status, without a receipt).
    #[error("the server answered HTTP {status}: {message}")]
    Refused { status: u16, message: String },
    /// The answer's receipt is missing, does not verify, or binds another request.
    #[error("the answer did not verify: {0}")]
    BadReceipt(String),
    /// The local store failed.
    #[error(transparent)]
    Store(#[from] LocalError),
}

/// A released seat, as the server's signed receipt states it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deactivated {
    pub license_id: uuid::Uuid,
    pub instance_id: String,
    pub server_time: DateTime<Utc>,
    /// The receipt itself (`RECEIPT1.`), for the operator's records.
    pub receipt: String,
}

/// The verifier: cheap to clone, safe to share between threads.
#[derive(Clone)]
pub struct Licensing {
    verifier: Arc<Verifier>,
    worker: Arc<Mutex<Option<Worker>>>,
}

impl std::fmt::Debug for Licensing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Licensing").field("mode", self.verifier.mode()).finish_non_exhaustive()
    }
}

impl Licensing {
    /// Starts the verifier. Needs no network: the license is verified offline and the last
    /// lease restored from the store. Where telemetry is on, a background thread then checks
    /// in shortly (see [`Config::first_check_in_after`]).
    pub fn start(config: Config) -> Result<Licensing, StartError> {
        let print_notices = config.print_notices;
        let verifier = Arc::new(Verifier::open(config)?);
        verifier.become_application()?;
        for notice in &verifier.notices {
            tracing::warn!(target: "licensor", "{notice}");
            // Said even where the host has no tracing subscriber: an operator who set
            // TELEMETRY_DISABLED on a Community license must learn why it is not honoured.
            if print_notices {
                eprintln!("licensor: {notice}");
            }
        }
        // Air-gapped runs the worker too (flushes, roll-ups, health), without its check-ins.
        let worker = match verifier.mode() {
            Mode::Telemetry { .. } | Mode::Exempt { .. } | Mode::AirGapped { .. }
                if verifier.store.is_some() =>
            {
                Some(worker::spawn(verifier.clone())?)
            }
            _ => None,
        };
        Ok(Licensing { verifier, worker: Arc::new(Mutex::new(worker)) })
    }

    /// The status now.
    pub fn status(&self) -> Status {
        self.verifier.status()
    }

    /// The license in force (the configured key, or a renewal the server delivered since),
    /// when its signature verified; [`status`](Self::status) says whether it is valid now.
    pub fn license(&self) -> Option<LicenseInfo> {
        self.verifier.payload().ok().map(|p| LicenseInfo {
            license_id: p.license_id,
            licensee: p.licensee.clone(),
            tier: p.tier,
            features: p.features.clone(),
            seats: p.seats,
            expires_at: p.expires_at,
        })
    }

    /// Whether the license grants `feature` and the status allows its use (valid, in grace,
    /// or a development instance).
    pub fn has_feature(&self, feature: &str) -> bool {
        let granted = self
            .verifier
            .license
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .payload
            .as_ref()
            .is_ok_and(|p| p.has_feature(feature));
        granted && !matches!(self.status(), Status::Invalid { .. })
    }

    /// How the verifier runs, and what start-up said about it.
    pub fn mode(&self) -> &Mode {
        self.verifier.mode()
    }

    /// Saves the operator's telemetry choice in the data directory (as `licensor telemetry
    /// enable|disable` do), applied at the next start; a choice the license's tier does not
    /// allow is refused with the reason and saved nowhere.
    pub fn save_choice(&self, choice: crate::client::Choice) -> Result<std::path::PathBuf, SaveChoiceError> {
        let tier = self
            .verifier
            .payload()
            .map_err(|e| SaveChoiceError::Refused(format!("the license key is refused ({e})")))?
            .tier;
        crate::client::choice::allowed(tier, choice).map_err(SaveChoiceError::Refused)?;
        Ok(crate::client::choice::write(&self.verifier.config.data_dir, choice, self.verifier.now())?)
    }

    /// The signed usage report of an air-gapped deployment, to carry to the vendor by hand
    /// (what `licensor telemetry export --signed` writes): the one waiting for its receipt,
    /// written again as it was, or a new one with everything recorded since the last.
    pub fn export_usage_report(&self) -> Result<ExportedReport, AirGapError> {
        self.verifier.export_report()
    }

    /// Applies the vendor's usage receipt (what `licensor telemetry import-receipt` does):
    /// verified and bound to the waiting report, it moves its figures to the ledger and
    /// applies the lease and any renewed license key.
    pub fn import_usage_receipt(&self, text: &str) -> Result<ReceiptOutcome, AirGapError> {
        self.verifier.import_receipt(text)
    }

    /// The vendor's public insights page, when configured (`LICENSOR_PUBLIC_INSIGHTS_URL`).
    pub fn public_insights_url(&self) -> Option<String> {
        self.verifier.config.public_insights_url.clone()
    }

    /// The choice saved in the data directory, if any (what the next start applies).
    pub fn saved_choice(&self) -> Result<Option<crate::client::Choice>, crate::client::choice::ChoiceError> {
        crate::client::choice::read(&self.verifier.config.data_dir)
    }

    /// What start-up said about the mode (also logged, and printed to stderr unless
    /// [`Config::print_notices`] is off), for a host that shows them itself.
    pub fn notices(&self) -> Vec<String> {
        self.verifier.notices()
    }

    /// Whether this instance is classed as a developer's machine (loopback) and so reclassifies
    /// itself when it serves a request for a host that is not local.
    pub fn watches_hosts(&self) -> bool {
        matches!(
            self.verifier.mode(),
            Mode::Exempt { exemption: crate::protocol::TelemetryExemption::Loopback, .. }
        )
    }

    /// Tells the verifier that the application served a request for `host` (as the request
    /// named it, port included or not). A loopback instance that serves a host that is not
    /// local is a real deployment: it reclassifies itself (see [`Mode`]), says so, and checks
    /// in at once to take its seat. Integrations call it; it costs nothing otherwise.
    pub fn served_host(&self, host: &str) {
        if self.watches_hosts() && crate::client::policy::host_exemption(host).is_none() {
            self.verifier.reclassify(host);
        }
    }

    /// The host of `LICENSOR_INSTANCE_URL`, lower-case, when it is set and reads: the one name
    /// besides addresses and `localhost` that the telemetry routes answer for.
    pub fn instance_host(&self) -> Option<String> {
        let url = reqwest::Url::parse(self.verifier.config.instance_url.as_deref()?).ok()?;
        url.host_str().map(|h| h.trim_end_matches('.').to_ascii_lowercase())
    }

    /// This install's instance id (`None` where nothing is stored: development, a refused key).
    pub fn instance_id(&self) -> Option<String> {
        self.verifier
            .store
            .as_ref()
            .map(|_| self.verifier.instance.read().unwrap_or_else(|p| p.into_inner()).instance_id.clone())
    }

    /// The collector behind the `track_*` calls, for integrations.
    pub fn telemetry(&self) -> &Telemetry {
        &self.verifier.telemetry
    }

    pub fn track_feature(&self, name: &str) {
        self.verifier.telemetry.counters.track_feature(name);
    }

    pub fn track_api_call(&self, name: &str) {
        self.verifier.telemetry.counters.track_api_call(name);
    }

    pub fn track_command(&self, name: &str) {
        self.verifier.telemetry.counters.track_command(name);
    }

    pub fn track_ui_action(&self, name: &str) {
        self.verifier.telemetry.counters.track_ui_action(name);
    }

    /// Records an error with a context (`"sending mail"`, `"database"`); its message and its
    /// chain of causes are scrubbed before anything is kept.
    pub fn track_error(&self, error: &(dyn std::error::Error + 'static), context: &str) {
        self.verifier.telemetry.track_error(error, context, self.verifier.now());
    }

    /// Records one request: `route` is the matched route pattern, never the raw path.
    pub fn track_request(&self, method: &str, route: &str, status: u16, duration: Duration) {
        self.verifier.telemetry.requests.track_request(method, route, status, duration);
    }

    /// Starts a user session, ended by [`Session::end`] or when dropped. A user id, if given,
    /// is hashed with this install's secret salt at once; only the number of distinct users
    /// (as a range) ever leaves the install.
    pub fn start_session(&self, user_id: Option<&str>) -> Session {
        if let (Some(id), true) = (user_id, self.verifier.telemetry.enabled()) {
            let hash = crate::privacy::hash_user_id(
                &self.verifier.instance.read().unwrap_or_else(|p| p.into_inner()).salt,
                id,
            );
            self.verifier.telemetry.note_user(hash);
        }
        self.verifier.telemetry.start_session(self.verifier.now())
    }

    /// Registers a health check, run every [`Config::health_every`] on the background
    /// thread; a check that panics counts as unhealthy.
    pub fn register_health_check(&self, name: &str, check: impl Fn() -> Health + Send + Sync + 'static) {
        if !self.verifier.telemetry.enabled() {
            return;
        }
        // A health key is a name like any other: an identifier the scrubber leaves as it is.
        if crate::privacy::keep_name(name, &mut crate::privacy::Redactions::default()).is_none() {
            tracing::warn!(
                "health check not registered: its name must be an identifier (see docs/privacy.md)"
            );
            return;
        }
        let name = name.to_owned();
        if let Ok(mut checks) = self.verifier.health_checks.lock() {
            checks.retain(|(n, _)| *n != name);
            checks.push((name, Arc::new(Box::new(check))));
        }
    }

    /// Moves tracked figures from memory to the local store now.
    pub fn flush(&self) -> Result<(), LocalError> {
        self.verifier.flush()
    }

    /// The local store's summary of the last `hours` (after a flush).
    pub fn summary(&self, hours: u32) -> Result<Option<LocalSummary>, LocalError> {
        let Some(store) = self.verifier.store.as_ref().filter(|_| self.verifier.collects()) else {
            return Ok(None);
        };
        self.verifier.flush()?;
        store.summary(hours, self.verifier.now()).map(Some)
    }

    /// The batch the next check-in will send, with what this application holds in memory
    /// flushed into it first, taken into the outbox so that it is exactly what is sent (`None`
    /// where nothing is collected). The telemetry scope serves it as `POST /telemetry/preview`.
    pub fn preview(&self) -> Result<Option<Preview>, LocalError> {
        self.verifier.preview()
    }

    /// What the local dashboard shows (`GET /telemetry/dashboard`), this application's memory
    /// flushed first.
    pub fn dashboard(&self) -> Result<crate::client::dashboard::Dashboard, LocalError> {
        self.verifier.dashboard()
    }

    /// Checks in now, outside the schedule, and waits for the outcome. The check-in runs on
    /// the client's own thread: the local store's work never blocks the caller's executor.
    pub async fn check_in_now(&self) -> CheckInOutcome {
        self.off_host(|v| async move { v.check_in().await })
            .await
            .unwrap_or_else(|| CheckInOutcome::NotApplicable("the client stopped during the check-in".into()))
    }

    /// Runs `work` (a check-in, a release: network and local store) on the client's worker
    /// thread, or, where none runs, on a thread of its own, and awaits it from whatever
    /// executor the host uses: the host's threads only wait, never run the store's SQLite.
    /// `None` when the client stopped meanwhile.
    async fn off_host<T, F>(&self, work: impl FnOnce(Arc<Verifier>) -> F) -> Option<T>
    where
        T: Send + 'static,
        F: std::future::Future<Output = T> + Send + 'static,
    {
        let future = work(self.verifier.clone());
        let handle = self.worker.lock().ok().and_then(|w| w.as_ref().map(|w| w.handle.clone()));
        let (done, result) = tokio::sync::oneshot::channel();
        match handle {
            Some(handle) => {
                handle.spawn(async move {
                    let _ = done.send(future.await);
                });
            }
            None => {
                own_thread(move || {
                    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
                    let _ = done.send(runtime.block_on(future));
                    Some(())
                })?;
            }
        }
        result.await.ok()
    }

    /// Releases this instance's seat, for a deployment being decommissioned: sends the
    /// license key and the last lease, and believes only a receipt that the server signed for
    /// this request's nonce, license and instance. Then the background thread stops (what is
    /// in memory is flushed to the local store), `status()` is `Invalid { Deactivated }`, and
    /// nothing more is sent; a later start checks in as a new instance. Telemetry not yet sent
    /// stays in the local store. On an error nothing changed, and the instance runs on.
    pub async fn deactivate(&self) -> Result<Deactivated, DeactivateError> {
        let stopped = || DeactivateError::NotApplicable("the client stopped during the release".into());
        let deactivated = self.off_host(|v| async move { v.deactivate().await }).await.ok_or_else(stopped)?;
        let deactivated = deactivated?;
        // Stopping the worker waits for it and flushes to the store: on a thread of its own.
        let (this, (done, stopped_now)) = (self.clone(), tokio::sync::oneshot::channel());
        let stop = move || {
            this.shutdown();
            done.send(()).ok()
        };
        if own_thread(stop).is_some() {
            let _ = stopped_now.await;
        }
        Ok(deactivated)
    }

    /// The license's installs and their processes, as the license server lists them to the
    /// license's holder (this instance's key and current lease prove it).
    pub async fn installs(&self) -> Result<crate::protocol::InstallsResponse, DeactivateError> {
        self.off_host(|v| async move { v.installs().await })
            .await
            .unwrap_or_else(|| Err(DeactivateError::NotApplicable("the client stopped meanwhile".into())))
    }

    /// Releases one install of this license (by its install id) or one process (by its
    /// instance id) on the license server, freeing its seat until one of its processes checks in
    /// again; believes only a receipt signed for this request. Changes nothing here: releasing
    /// this deployment's own install does not stop it.
    pub async fn release_install(&self, id: &str) -> Result<ReleasedInstall, DeactivateError> {
        let id = id.to_owned();
        self.off_host(|v| async move { v.release_install(&id).await })
            .await
            .unwrap_or_else(|| Err(DeactivateError::NotApplicable("the client stopped meanwhile".into())))
    }

    /// Stops the background thread, flushes what is in memory to the store and releases this
    /// process on the license server (its install's seat frees unless another process holds
    /// it; the lease is kept, so a restart runs on it at once), within a second whatever the
    /// server is doing: a check-in in flight is abandoned (its batch stays in the outbox and is
    /// sent again, same id, at the next start), and a release that takes longer is given up.
    /// Call it when the application stops (after `HttpServer::run().await`, on SIGTERM).
    pub fn shutdown(&self) {
        let worker = self.worker.lock().unwrap_or_else(|p| p.into_inner()).take();
        let was_running = worker.is_some();
        if let Some(worker) = worker {
            worker.stop();
        }
        if let Err(e) = self.verifier.flush() {
            tracing::warn!(target: "licensor", "last flush of telemetry failed: {}", crate::error_chain::Chain(&e));
        }
        let released =
            self.verifier.instance.read().is_ok_and(|i| i.deactivated || i.replaced || i.lease.is_none());
        if was_running && !released && self.verifier.mode().checks_in() && self.verifier.http.is_some() {
            self.release_within(RELEASE_ON_STOP);
        }
    }

    /// Releases this process, giving up after `budget`. The release runs on a thread of its
    /// own with its own runtime: `shutdown` is called from the host's async code too (after
    /// `HttpServer::run().await`), where a runtime may not be started on the calling thread.
    fn release_within(&self, budget: Duration) {
        let (verifier, (done, outcome)) = (self.verifier.clone(), std::sync::mpsc::channel());
        let started = own_thread(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
            let released =
                runtime.block_on(async { tokio::time::timeout(budget, verifier.release_on_stop()).await });
            done.send(released).ok()
        });
        if started.is_none() {
            return;
        }
        // A little past the budget: the thread gives up at the budget itself.
        let Ok(released) = outcome.recv_timeout(budget + Duration::from_millis(200)) else {
            tracing::warn!(target: "licensor", "releasing this process on the license server took too long; its seat frees when its lease ends");
            return;
        };
        match released {
            Ok(Ok(_)) => tracing::info!(target: "licensor", "released this process on the license server"),
            Ok(Err(e)) => {
                tracing::warn!(target: "licensor", "releasing this process on the license server failed: {}", crate::error_chain::Chain(&e))
            }
            Err(_) => {
                tracing::warn!(target: "licensor", "releasing this process on the license server took too long; its seat frees when its lease ends")
            }
        }
    }
}

/// Runs `work` on a thread of its own; `None` when no thread could be started.
fn own_thread<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> Option<()> {
    std::thread::Builder::new().name("licensor-call".into()).spawn(move || drop(work())).ok().map(drop)
}
