//! The handle a licensed application holds: [`Licensing::start`] verifies the license offline,
//! restores the instance's identity and last lease from the local store, and (where telemetry
//! is on) starts a background thread whose tokio-cron-scheduler flushes figures to the store,
//! runs health checks, rolls old figures up, and checks in on the schedule the last lease
//! names.
//!
//! The host application's threads only ever touch memory: `track_*` calls go to the
//! collector, `status()` reads what the last check-in left. Every network call and every
//! write to the store happens on the background thread (or in `shutdown`, for the last
//! flush), so a slow or dead license server can delay nothing but the next check-in.

use chrono::{DateTime, Utc};
use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use super::config::{Clock, Config, KeySource, LicenseSource};
use super::exchange;
use super::policy::{self, Mode};
use super::status::{self, Facts, Status};
use super::telemetry::{Session, Telemetry};
use crate::client::store::{self as local, CheckInRecord, LocalError, LocalStore};
use crate::keys::{KeyError, KeyRing};
use crate::lease::{self, LeasePayload};
use crate::license::{self, LicensePayload};
use crate::protocol::{BatchLimits, CheckInStatus, Environment, Health, SyncStatus, UserCountRange};
use crate::token::{self, TokenError};

/// Why the verifier could not start. An invalid license is not one of these: the verifier
/// starts and reports it through [`Licensing::status`].
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Neither a license key nor a license file was given.
    #[error("no license: set LICENSOR_LICENSE_KEY or LICENSOR_LICENSE_FILE")]
    NoLicense,
    /// The license file could not be read.
    #[error("cannot read the license file {path}: {source}")]
    LicenseFile { path: std::path::PathBuf, source: std::io::Error },
    /// No trusted keys were given.
    #[error("no trusted keys: set LICENSOR_KEYS_DIR or pass the application's built-in keys")]
    NoKeys,
    /// The key ring could not be loaded.
    #[error("cannot load the trusted keys: {0}")]
    Keys(#[from] KeyError),
    /// Telemetry is required and no license server is configured.
    #[error("the {tier} tier checks in with a license server: set LICENSOR_SERVER_URL")]
    NoServer { tier: license::Tier },
    /// The server URL is not usable.
    #[error("{0}")]
    BadServerUrl(String),
    /// The local store could not be opened.
    #[error(transparent)]
    Store(#[from] LocalError),
    /// The background thread or its HTTP client could not be set up.
    #[error("cannot start the background check-in thread: {0}")]
    Runtime(String),
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
    #[error("no answer: {0}")]
    NoAnswer(String),
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

type HealthCheck = Box<dyn Fn() -> Health + Send + Sync>;

/// What the verifier knows, shared between the application's threads and the background one.
struct Known {
    lease: Option<LeasePayload>,
    last_server_time: Option<DateTime<Utc>>,
    first_started: DateTime<Utc>,
    instance_id: String,
    salt: Vec<u8>,
    last_sync: SyncStatus,
    /// This instance released its seat; it sends nothing more until restarted.
    deactivated: bool,
}

/// Everything behind a handle.
pub(crate) struct Core {
    license_key: String,
    license: Result<LicensePayload, TokenError>,
    ring: KeyRing,
    mode: Mode,
    notices: Vec<String>,
    server_url: Option<String>,
    software_version: String,
    modules_enabled: Vec<String>,
    config: Config,
    store: Option<LocalStore>,
    telemetry: Telemetry,
    known: RwLock<Known>,
    health_checks: Mutex<Vec<(String, Arc<HealthCheck>)>>,
    health: Mutex<BTreeMap<String, Health>>,
    started: DateTime<Utc>,
    http: Option<reqwest::Client>,
    /// One check-in at a time, whoever asks.
    checking_in: tokio::sync::Mutex<()>,
    failures: AtomicU32,
}

/// The verifier: cheap to clone, safe to share between threads.
#[derive(Clone)]
pub struct Licensing {
    core: Arc<Core>,
    worker: Arc<Mutex<Option<Worker>>>,
}

struct Worker {
    stop: tokio::sync::oneshot::Sender<()>,
    done: std::sync::mpsc::Receiver<()>,
}

impl std::fmt::Debug for Licensing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Licensing").field("mode", &self.core.mode).finish_non_exhaustive()
    }
}

/// How long shutdown waits for the background thread before leaving it behind.
const SHUTDOWN_WAIT: Duration = Duration::from_millis(600);

impl Licensing {
    /// Starts the verifier. Needs no network: the license is verified offline and the last
    /// lease restored from the store. Where telemetry is on, a background thread then checks
    /// in shortly (see [`Config::first_check_in_after`]).
    pub fn start(config: Config) -> Result<Licensing, StartError> {
        let core = Arc::new(Core::open(config)?);
        for notice in &core.notices {
            tracing::warn!(target: "licensor", "{notice}");
        }
        let worker = match core.mode {
            Mode::Telemetry { .. } if core.license.is_ok() => Some(spawn_worker(core.clone())?),
            _ => None,
        };
        Ok(Licensing { core, worker: Arc::new(Mutex::new(worker)) })
    }

    /// The status now.
    pub fn status(&self) -> Status {
        self.core.status()
    }

    /// The license, when its key verified.
    pub fn license(&self) -> Option<LicenseInfo> {
        self.core.license.as_ref().ok().map(|p| LicenseInfo {
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
        let granted = self.core.license.as_ref().is_ok_and(|p| p.has_feature(feature));
        granted && !matches!(self.status(), Status::Invalid { .. })
    }

    /// How the verifier runs, and what start-up said about it.
    pub fn mode(&self) -> &Mode {
        &self.core.mode
    }

    pub fn notices(&self) -> &[String] {
        &self.core.notices
    }

    /// This install's instance id (`None` where nothing is stored: development, air-gapped).
    pub fn instance_id(&self) -> Option<String> {
        self.core
            .store
            .as_ref()
            .map(|_| self.core.known.read().unwrap_or_else(|p| p.into_inner()).instance_id.clone())
    }

    /// The collector behind the `track_*` calls, for integrations.
    pub fn telemetry(&self) -> &Telemetry {
        &self.core.telemetry
    }

    pub fn track_feature(&self, name: &str) {
        self.core.telemetry.counters.track_feature(name);
    }

    pub fn track_api_call(&self, name: &str) {
        self.core.telemetry.counters.track_api_call(name);
    }

    pub fn track_command(&self, name: &str) {
        self.core.telemetry.counters.track_command(name);
    }

    pub fn track_ui_action(&self, name: &str) {
        self.core.telemetry.counters.track_ui_action(name);
    }

    /// Records an error with a context (`"sending mail"`, `"database"`); its message and its
    /// chain of causes are scrubbed before anything is kept.
    pub fn track_error(&self, error: &(dyn std::error::Error + 'static), context: &str) {
        self.core.telemetry.track_error(error, context, self.core.now());
    }

    /// Records one request: `route` is the matched route pattern, never the raw path.
    pub fn track_request(&self, method: &str, route: &str, status: u16, duration: Duration) {
        self.core.telemetry.requests.track_request(method, route, status, duration);
    }

    /// Starts a user session, ended by [`Session::end`] or when dropped. A user id, if given,
    /// is hashed with this install's secret salt at once; only the number of distinct users
    /// (as a range) ever leaves the install.
    pub fn start_session(&self, user_id: Option<&str>) -> Session {
        if let (Some(id), true) = (user_id, self.core.telemetry.enabled()) {
            let hash = crate::privacy::hash_user_id(
                &self.core.known.read().unwrap_or_else(|p| p.into_inner()).salt,
                id,
            );
            self.core.telemetry.note_user(hash);
        }
        self.core.telemetry.start_session(self.core.now())
    }

    /// Registers a health check, run every [`Config::health_every`] on the background
    /// thread; a check that panics counts as unhealthy.
    pub fn register_health_check(&self, name: &str, check: impl Fn() -> Health + Send + Sync + 'static) {
        if !self.core.telemetry.enabled() {
            return;
        }
        let name = crate::privacy::scrub(&name.chars().take(128).collect::<String>()).0;
        if let Ok(mut checks) = self.core.health_checks.lock() {
            checks.retain(|(n, _)| *n != name);
            checks.push((name, Arc::new(Box::new(check))));
        }
    }

    /// Moves tracked figures from memory to the local store now.
    pub fn flush(&self) -> Result<(), LocalError> {
        self.core.flush()
    }

    /// The local store's summary of the last `hours` (after a flush).
    pub fn summary(&self, hours: u32) -> Result<Option<local::LocalSummary>, LocalError> {
        let Some(store) = &self.core.store else { return Ok(None) };
        self.core.flush()?;
        store.summary(hours, self.core.now()).map(Some)
    }

    /// Checks in now, outside the schedule, and waits for the outcome.
    pub async fn check_in_now(&self) -> CheckInOutcome {
        self.core.check_in().await
    }

    /// Releases this instance's seat, for a deployment being decommissioned: sends the
    /// license key and the last lease, and believes only a receipt that the server signed for
    /// this request's nonce, license and instance. Then the background thread stops (what is
    /// in memory is flushed to the local store), `status()` is `Invalid { Deactivated }`, and
    /// nothing more is sent; a later start checks in as a new instance. Telemetry not yet sent
    /// stays in the local store. On an error nothing changed, and the instance runs on.
    pub async fn deactivate(&self) -> Result<Deactivated, DeactivateError> {
        let deactivated = self.core.deactivate().await?;
        self.shutdown();
        Ok(deactivated)
    }

    /// Stops the background thread and flushes what is in memory to the store, within a
    /// second whatever the server is doing: a check-in in flight is abandoned (its batch stays
    /// in the outbox and is sent again, same id, at the next start).
    pub fn shutdown(&self) {
        let worker = self.worker.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(worker) = worker {
            let _ = worker.stop.send(());
            if worker.done.recv_timeout(SHUTDOWN_WAIT).is_err() {
                tracing::warn!(target: "licensor", "the check-in thread did not stop in time; left behind");
            }
        }
        if let Err(e) = self.core.flush() {
            tracing::warn!(target: "licensor", "last flush of telemetry failed: {e}");
        }
    }
}

impl Core {
    fn open(config: Config) -> Result<Core, StartError> {
        let now = (config.clock)();
        let license_key = match &config.license {
            None => return Err(StartError::NoLicense),
            Some(LicenseSource::Key(key)) => key.trim().to_string(),
            Some(LicenseSource::File(path)) => std::fs::read_to_string(path)
                .map_err(|source| StartError::LicenseFile { path: path.clone(), source })?
                .trim()
                .to_string(),
        };
        let ring = match &config.keys {
            None => return Err(StartError::NoKeys),
            Some(KeySource::Ring(ring)) => ring.clone(),
            Some(KeySource::Dir(dir)) => KeyRing::load_dir(dir)?,
        };
        let license = license::verify(&license_key, &ring, now);
        let (mode, mut notices) = match &license {
            Ok(payload) => {
                let decision = policy::decide(payload.tier, config.instance_url.as_deref(), &config.switches);
                (decision.mode, decision.notices)
            }
            Err(e) => (
                Mode::Development { reason: format!("the license key is {}", e.verdict()) },
                vec![format!("the license key is refused ({e}): nothing is collected or sent")],
            ),
        };
        let telemetry_on = matches!(mode, Mode::Telemetry { .. }) && license.is_ok();
        if telemetry_on {
            match &config.server_url {
                None if !config.switches.debug => {
                    return Err(StartError::NoServer {
                        tier: license.as_ref().map(|p| p.tier).unwrap_or(license::Tier::Community),
                    })
                }
                Some(url) => super::config::check_server_url(url, config.allow_insecure_http)
                    .map_err(StartError::BadServerUrl)?,
                None => {}
            }
        }
        let (store, known) = if telemetry_on {
            let store = LocalStore::open(&config.data_dir)?;
            let state = store.state_or_init(now)?;
            let license_id = license.as_ref().ok().map(|p| p.license_id);
            // The cached lease counts only if it verifies and names this instance and license.
            let lease = state.lease.as_deref().and_then(|text| match lease::verify_signature(text, &ring) {
                Ok(l) if l.instance_id == state.instance_id && Some(l.license_id) == license_id => Some(l),
                Ok(_) => None,
                Err(e) => {
                    notices.push(format!("the cached lease does not verify ({e}); waiting for a new one"));
                    None
                }
            });
            let known = Known {
                lease,
                last_server_time: state.last_server_time.map(local::utc),
                first_started: local::utc(state.first_started_at),
                instance_id: state.instance_id.clone(),
                salt: state.salt_bytes(),
                last_sync: match state.last_result.as_deref() {
                    None => SyncStatus::None,
                    Some(r) if CheckInStatus::parse(r).is_some() => SyncStatus::Success,
                    Some(_) => SyncStatus::Error,
                },
                deactivated: false,
            };
            (Some(store), known)
        } else {
            let known = Known {
                lease: None,
                last_server_time: None,
                first_started: now,
                instance_id: String::new(),
                salt: Vec::new(),
                last_sync: SyncStatus::None,
                deactivated: false,
            };
            (None, known)
        };
        let telemetry = if telemetry_on {
            Telemetry::with_sampling(&config.limits, config.sampling)
        } else {
            Telemetry::disabled()
        };
        // No HTTP client at all unless this instance checks in: air-gapped means no
        // connection, and a client that does not exist cannot make one.
        let http = if telemetry_on {
            Some(
                reqwest::Client::builder()
                    // A redirect would re-send the license key and the telemetry wherever it
                    // points: none is followed, and a 3xx counts as no answer.
                    .redirect(reqwest::redirect::Policy::none())
                    .connect_timeout(config.request_timeout.min(Duration::from_secs(10)))
                    .timeout(config.request_timeout)
                    .user_agent(concat!("licensor-client/", env!("CARGO_PKG_VERSION")))
                    .build()
                    .map_err(|e| StartError::Runtime(e.to_string()))?,
            )
        } else {
            None
        };
        Ok(Core {
            license_key,
            license,
            ring,
            mode,
            notices,
            server_url: config.server_url.clone(),
            software_version: config.software_version.clone(),
            modules_enabled: config.modules_enabled.clone(),
            store,
            telemetry,
            known: RwLock::new(known),
            health_checks: Mutex::new(Vec::new()),
            health: Mutex::new(BTreeMap::new()),
            started: now,
            http,
            checking_in: tokio::sync::Mutex::new(()),
            failures: AtomicU32::new(0),
            config,
        })
    }

    fn now(&self) -> DateTime<Utc> {
        (self.config.clock)()
    }

    fn clock(&self) -> Clock {
        self.config.clock.clone()
    }

    fn status(&self) -> Status {
        let now = self.now();
        let known = self.known.read().unwrap_or_else(|p| p.into_inner());
        if known.deactivated {
            return Status::Invalid { reason: status::InvalidReason::Deactivated };
        }
        // The window is checked again now: a license may expire while the application runs.
        let checked =
            self.license.as_ref().map_err(Clone::clone).and_then(|p| token::check_window(p, now).map(|()| p));
        let error;
        let license = match checked {
            Ok(p) => Ok(p),
            Err(e) => {
                error = e;
                Err(&error)
            }
        };
        status::evaluate(&Facts {
            license,
            mode: &self.mode,
            lease: known.lease.as_ref(),
            last_server_time: known.last_server_time,
            first_started: known.first_started,
            now,
        })
    }

    fn flush(&self) -> Result<(), LocalError> {
        let Some(store) = &self.store else { return Ok(()) };
        let mut flush = self.telemetry.drain();
        flush.health = self.health.lock().map(|h| h.clone()).unwrap_or_default();
        store.record(&flush, self.now(), &BatchLimits::default())
    }

    fn environment(&self, now: DateTime<Utc>) -> Environment {
        Environment {
            app_version: self.software_version.chars().take(crate::protocol::MAX_VERSION_LEN).collect(),
            os: std::env::consts::OS.into(),
            arch: std::env::consts::ARCH.into(),
            // Filled in by the store from its tables.
            user_count_range: UserCountRange::UpTo10,
            modules_enabled: self.modules_enabled.clone(),
            uptime_hours: ((now - self.started).num_seconds().max(0) as f64 / 36.0).round() / 100.0,
            last_sync_status: self.known.read().map(|k| k.last_sync).unwrap_or(SyncStatus::None),
            health: BTreeMap::new(),
        }
    }

    fn run_health_checks(&self) {
        let checks: Vec<(String, Arc<HealthCheck>)> =
            self.health_checks.lock().map(|c| c.clone()).unwrap_or_default();
        for (name, check) in checks {
            let result = std::panic::catch_unwind(AssertUnwindSafe(|| check())).unwrap_or(Health::Unhealthy);
            if let Ok(mut health) = self.health.lock() {
                health.insert(name, result);
            }
        }
    }

    /// Releases this instance's seat (see [`Licensing::deactivate`]).
    async fn deactivate(&self) -> Result<Deactivated, DeactivateError> {
        let (Some(store), Ok(payload), Mode::Telemetry { .. }) = (&self.store, &self.license, &self.mode)
        else {
            return Err(DeactivateError::NotApplicable(self.mode.off_reason().unwrap_or_default()));
        };
        let (Some(http), Some(server)) = (&self.http, &self.server_url) else {
            return Err(DeactivateError::NotApplicable("no license server is configured".into()));
        };
        let _one = self.checking_in.lock().await;
        let lease = store.state()?.and_then(|s| s.lease).ok_or(DeactivateError::NeverCheckedIn)?;
        let instance_id = self.known.read().map(|k| k.instance_id.clone()).unwrap_or_default();
        let nonce = exchange::fresh_nonce();
        let body = serde_json::to_vec(&crate::protocol::DeactivationRequest {
            license_key: self.license_key.clone(),
            instance_id: instance_id.clone(),
            nonce: nonce.clone(),
            lease,
        })
        .expect("a deactivation serialises");
        let (status, _, answer) = exchange::post(http, server, "/v1/deactivations", body)
            .await
            .map_err(|e| DeactivateError::NoAnswer(error_chain(&e)))?;
        if !(200..300).contains(&status) {
            return Err(DeactivateError::Refused { status, message: error_message(&answer) });
        }
        let bad = |m: String| DeactivateError::BadReceipt(m);
        let response: crate::protocol::DeactivationResponse =
            serde_json::from_slice(&answer).map_err(|e| bad(format!("not a deactivation answer: {e}")))?;
        let receipt =
            crate::receipt::verify(&response.receipt, &self.ring).map_err(|e| bad(e.to_string()))?;
        if receipt.nonce != nonce
            || receipt.instance_id != instance_id
            || receipt.license_id != payload.license_id
        {
            return Err(bad("the receipt binds another request: a replayed or misdirected answer".into()));
        }
        store.forget_lease(self.now())?;
        if let Ok(mut known) = self.known.write() {
            known.lease = None;
            known.deactivated = true;
        }
        Ok(Deactivated {
            license_id: receipt.license_id,
            instance_id,
            server_time: receipt.server_time,
            receipt: response.receipt,
        })
    }

    /// One check-in: flush, take the outbox batch (or assemble one), send, verify, record.
    async fn check_in(&self) -> CheckInOutcome {
        // A refused license key starts in development mode (see `open`), so telemetry mode
        // always has a store and a license here.
        let (Some(store), Ok(payload), Mode::Telemetry { debug }) = (&self.store, &self.license, &self.mode)
        else {
            return CheckInOutcome::NotApplicable(self.mode.off_reason().unwrap_or_default());
        };
        let _one = self.checking_in.lock().await;
        if self.known.read().is_ok_and(|k| k.deactivated) {
            return CheckInOutcome::NotApplicable("this instance released its seat (deactivated)".into());
        }
        let now = self.now();
        if let Err(e) = self.flush() {
            tracing::warn!(target: "licensor", "flushing telemetry before the check-in failed: {e}");
        }
        let outgoing = match store.next_batch(self.environment(now), now, &BatchLimits::default()) {
            Ok(o) => o,
            Err(e) => return self.failed(store, format!("the local store failed: {e}"), None),
        };
        if *debug {
            eprintln!("licensor telemetry (LICENSOR_TELEMETRY_DEBUG=1, not sent): {}", outgoing.payload);
            if let Err(e) = store.release_outbox(&outgoing.batch_id) {
                tracing::warn!(target: "licensor", "releasing the printed batch failed: {e}");
            }
            return CheckInOutcome::Printed;
        }
        let (Some(http), Some(server)) = (&self.http, &self.server_url) else {
            return CheckInOutcome::NotApplicable("no license server is configured".into());
        };
        let batch_id = uuid::Uuid::parse_str(&outgoing.batch_id).unwrap_or_else(|_| uuid::Uuid::nil());
        let instance_id = self.known.read().map(|k| k.instance_id.clone()).unwrap_or_default();
        let request = exchange::build_request_raw(
            &self.license_key,
            &instance_id,
            &self.software_version,
            Some((&outgoing.payload, batch_id)),
        );
        let (http_status, retry_after, body) = match exchange::send(http, server, &request).await {
            Ok(answer) => answer,
            Err(e) => return self.failed(store, format!("no answer: {}", error_chain(&e)), None),
        };
        // An error status carries no signed lease, so it may come from anyone on the way: the
        // batch stays in the outbox and the check-in is retried with backoff.
        if !(200..300).contains(&http_status) {
            let error = format!("the server answered HTTP {http_status}: {}", error_message(&body));
            return self.failed(store, error, retry_after);
        }
        let verified = match exchange::verify_answer(
            &body,
            &request,
            &self.ring,
            &instance_id,
            Some(payload.license_id),
        ) {
            Ok(v) => v,
            Err(e) => return self.failed(store, format!("the answer did not verify: {e}"), None),
        };
        self.failures.store(0, Ordering::Relaxed);
        // From here on, only what the signed lease says counts.
        let lease = verified.lease;
        let status = lease.status;
        let next = exchange::next_check_in(lease.next_check_in_at, now);
        let record = CheckInRecord {
            lease: verified.response.lease.clone(),
            server_time: Some(lease.server_time),
            result: status.as_str().into(),
            next_check_in_at: Some(next),
            acknowledged: verified.batch_acknowledged.then(|| outgoing.batch_id.clone()),
        };
        if let Err(e) = store.record_check_in(&record, now) {
            tracing::warn!(target: "licensor", "recording the check-in failed: {e}");
        }
        if let Ok(mut known) = self.known.write() {
            // The mark is the server time of the latest verified answer, not the highest ever
            // seen: a fresh answer bound to this request's nonce is the best evidence of the
            // server's time there is, so a mark once set far ahead (a server's clock gone
            // wrong) is corrected by the next genuine check-in instead of locking the
            // deployment out for good.
            known.last_server_time = Some(lease.server_time);
            known.lease = Some(lease);
            known.last_sync = SyncStatus::Success;
        }
        if status != CheckInStatus::Valid {
            tracing::warn!(target: "licensor", "the license server answered {status}");
        }
        CheckInOutcome::Answered {
            status,
            next_check_in_at: next,
            batch_acknowledged: verified.batch_acknowledged,
        }
    }

    fn failed(&self, store: &LocalStore, error: String, retry_after: Option<u64>) -> CheckInOutcome {
        let attempt = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        let retry = exchange::retry_policy(attempt, retry_after);
        let now = self.now();
        let next = now + chrono::Duration::from_std(retry).unwrap_or(chrono::Duration::hours(6));
        tracing::warn!(target: "licensor", "check-in failed (attempt {attempt}): {error}");
        let record =
            CheckInRecord { result: error.clone(), next_check_in_at: Some(next), ..Default::default() };
        if let Err(e) = store.record_check_in(&record, now) {
            tracing::warn!(target: "licensor", "recording the failed check-in failed: {e}");
        }
        if let Ok(mut known) = self.known.write() {
            known.last_sync = SyncStatus::Error;
        }
        CheckInOutcome::NoAnswer { error, retry }
    }

    /// When the check-in after `outcome` is due, from now.
    fn delay_after(&self, outcome: &CheckInOutcome) -> Duration {
        let now = self.now();
        let until = |t: DateTime<Utc>| (t - now).to_std().unwrap_or(Duration::ZERO);
        match outcome {
            CheckInOutcome::Answered { next_check_in_at, .. } => until(*next_check_in_at),
            CheckInOutcome::NoAnswer { retry, .. } => *retry,
            CheckInOutcome::Printed => self.config.flush_every.max(Duration::from_secs(60)),
            CheckInOutcome::NotApplicable(_) => Duration::from_secs(24 * 60 * 60),
        }
    }
}

/// An error with its causes, for the operator (reqwest's own message omits the cause).
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The `message` of an API error body, or the body's start.
fn error_message(body: &[u8]) -> String {
    serde_json::from_slice::<crate::protocol::ErrorBody>(body)
        .map(|b| format!("{} ({})", b.error.message, b.error.code))
        .unwrap_or_else(|_| String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned())
}

/// Starts the background thread: its own small tokio runtime, so the application needs none
/// and its own runtime is never blocked.
fn spawn_worker(core: Arc<Core>) -> Result<Worker, StartError> {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (done_tx, done) = std::sync::mpsc::channel();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .thread_name("licensor-check-in")
        .build()
        .map_err(|e| StartError::Runtime(e.to_string()))?;
    std::thread::Builder::new()
        .name("licensor-check-in".into())
        .spawn(move || {
            runtime.block_on(async move {
                match schedule(core).await {
                    Ok(mut scheduler) => {
                        let _ = stopped.await;
                        let _ = tokio::time::timeout(Duration::from_millis(200), scheduler.shutdown()).await;
                    }
                    Err(e) => {
                        tracing::error!(target: "licensor", "the check-in scheduler did not start: {e}");
                        let _ = stopped.await;
                    }
                }
            });
            // Whatever is still running (a check-in waiting on a silent server) is dropped.
            runtime.shutdown_timeout(Duration::from_millis(100));
            let _ = done_tx.send(());
        })
        .map_err(|e| StartError::Runtime(e.to_string()))?;
    Ok(Worker { stop, done })
}

async fn schedule(core: Arc<Core>) -> Result<tokio_cron_scheduler::JobScheduler, String> {
    use tokio_cron_scheduler::{Job, JobScheduler};
    let scheduler = JobScheduler::new().await.map_err(|e| e.to_string())?;

    let flusher = core.clone();
    let every = core.config.flush_every;
    scheduler
        .add(
            Job::new_repeated_async(every, move |_, _| {
                let core = flusher.clone();
                Box::pin(async move {
                    if let Err(e) = core.flush() {
                        tracing::warn!(target: "licensor", "flushing telemetry failed: {e}");
                    }
                })
            })
            .map_err(|e| e.to_string())?,
        )
        .await
        .map_err(|e| e.to_string())?;

    // Drains early when a bound that a drain frees fills up, and rolls old rows up hourly.
    let watcher = core.clone();
    let ticks = Arc::new(AtomicU32::new(0));
    scheduler
        .add(
            Job::new_repeated_async(Duration::from_secs(10), move |_, _| {
                let core = watcher.clone();
                let ticks = ticks.clone();
                Box::pin(async move {
                    if core.telemetry.needs_flush() {
                        if let Err(e) = core.flush() {
                            tracing::warn!(target: "licensor", "flushing telemetry failed: {e}");
                        }
                    }
                    if ticks.fetch_add(1, Ordering::Relaxed) % 360 == 0 {
                        if let Some(store) = &core.store {
                            match store.roll_up(core.now()) {
                                Ok(r) if r.dropped > 0 => tracing::warn!(
                                    target: "licensor",
                                    "local telemetry over its bound: {} unsent events dropped (counted in the next batch)",
                                    r.dropped
                                ),
                                Ok(_) => {}
                                Err(e) => tracing::warn!(target: "licensor", "rolling up local telemetry failed: {e}"),
                            }
                        }
                    }
                })
            })
            .map_err(|e| e.to_string())?,
        )
        .await
        .map_err(|e| e.to_string())?;

    let checker = core.clone();
    scheduler
        .add(
            Job::new_repeated_async(core.config.health_every, move |_, _| {
                let core = checker.clone();
                Box::pin(async move {
                    // Off the scheduler's thread: a slow check must not hold up a check-in.
                    let _ = tokio::task::spawn_blocking(move || core.run_health_checks()).await;
                })
            })
            .map_err(|e| e.to_string())?,
        )
        .await
        .map_err(|e| e.to_string())?;

    let first = core.config.first_check_in_after;
    let first = first + first.mul_f64(rand::random::<f64>());
    schedule_check_in(scheduler.clone(), core, first).await?;
    scheduler.start().await.map_err(|e| e.to_string())?;
    Ok(scheduler)
}

/// Schedules one check-in after `delay`; when it has run, it schedules the next (at the time
/// the lease names, or after the retry policy's backoff).
fn schedule_check_in(
    scheduler: tokio_cron_scheduler::JobScheduler,
    core: Arc<Core>,
    delay: Duration,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send>> {
    Box::pin(async move {
        let job_scheduler = scheduler.clone();
        let job = tokio_cron_scheduler::Job::new_one_shot_async(delay, move |_, _| {
            let core = core.clone();
            let scheduler = job_scheduler.clone();
            Box::pin(async move {
                let outcome = core.check_in().await;
                let next = core.delay_after(&outcome);
                if let Err(e) = schedule_check_in(scheduler, core, next).await {
                    tracing::error!(target: "licensor", "scheduling the next check-in failed: {e}");
                }
            })
        })
        .map_err(|e| e.to_string())?;
        scheduler.add(job).await.map(|_| ()).map_err(|e| e.to_string())
    })
}

/// For the command line: the pieces of a verifier that work on a data directory without a
/// background thread.
pub mod offline {
    use super::*;

    /// A verifier opened for one command: no background thread.
    pub struct Opened {
        pub(crate) core: Core,
    }

    impl Opened {
        pub fn open(config: Config) -> Result<Opened, StartError> {
            Ok(Opened { core: Core::open(config)? })
        }

        pub fn status(&self) -> Status {
            self.core.status()
        }

        pub fn mode(&self) -> &Mode {
            &self.core.mode
        }

        pub fn notices(&self) -> &[String] {
            &self.core.notices
        }

        pub fn license(&self) -> Result<&LicensePayload, &TokenError> {
            self.core.license.as_ref()
        }

        pub fn store(&self) -> Option<&LocalStore> {
            self.core.store.as_ref()
        }

        /// The batch the next check-in would send.
        pub fn preview(&self) -> Result<Option<String>, LocalError> {
            let Some(store) = &self.core.store else { return Ok(None) };
            let now = self.core.now();
            store.preview(self.core.environment(now), now, &BatchLimits::default()).map(Some)
        }

        /// One check-in now.
        pub async fn check_in(&self) -> CheckInOutcome {
            self.core.check_in().await
        }

        /// Releases this instance's seat now (see [`Licensing::deactivate`]).
        pub async fn deactivate(&self) -> Result<Deactivated, DeactivateError> {
            self.core.deactivate().await
        }

        pub fn clock(&self) -> Clock {
            self.core.clock()
        }
    }
}
