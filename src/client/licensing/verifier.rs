//! The verifier behind a handle: the license verified offline, the instance's identity and
//! lease restored from the local store, the collector, and the one check-in and deactivation
//! code path that the worker, the handle and the command line all use.
//!
//! Invariants: its state changes only on a verified lease or receipt; the clock mark is the
//! server time of the latest verified answer; one check-in or deactivation at a time.

use chrono::{DateTime, Utc};
use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use super::{CheckInOutcome, DeactivateError, Deactivated, StartError};
use crate::client::config::{check_server_url, Config, KeySource, LicenseSource};
use crate::client::exchange;
use crate::client::policy::{self, Level, Mode};
use crate::client::sender::{self, Delivered, Sender};
use crate::client::status::{self, Facts, Status};
use crate::client::store::{self, CheckInRecord, LocalError, LocalStore};
use crate::client::telemetry::Telemetry;
use crate::keys::KeyRing;
use crate::lease::{self, LeasePayload};
use crate::license::{self, LicensePayload};
use crate::protocol::{
    BatchLimits, CheckInStatus, Environment, Health, SyncStatus, TelemetryExemption, UserCountRange,
};
use crate::time::Clock;
use crate::token::{self, TokenError};

pub(super) type HealthCheck = Box<dyn Fn() -> Health + Send + Sync>;

/// What the verifier knows, shared between the application's threads and the background one.
pub(super) struct InstanceState {
    pub(super) lease: Option<LeasePayload>,
    pub(super) last_server_time: Option<DateTime<Utc>>,
    pub(super) first_started: DateTime<Utc>,
    pub(super) instance_id: String,
    pub(super) salt: Vec<u8>,
    pub(super) last_sync: SyncStatus,
    /// This instance released its seat; it sends nothing more until restarted.
    pub(super) deactivated: bool,
    /// The server released this process in favour of a newer one of its install (`replaced`):
    /// it checks in no more until restarted, when it comes back as a new process.
    pub(super) replaced: bool,
}

/// The license in force: the configured key, or a newer one a check-in answer delivered.
#[derive(Debug, Clone)]
pub(crate) struct CurrentLicense {
    pub(super) key: String,
    /// The key's payload when its signature verifies under the ring. Its validity window is
    /// judged at each use (a license may expire while the application runs), not here: an
    /// expired license still checks in, which is how its renewal reaches it.
    pub(super) payload: Result<LicensePayload, TokenError>,
}

/// Everything behind a handle.
pub(crate) struct Verifier {
    pub(super) license: RwLock<CurrentLicense>,
    pub(super) ring: KeyRing,
    /// The mode decided at start; see [`Verifier::mode`].
    start_mode: Mode,
    /// Set once, when an instance classed as loopback is seen serving another host: it is a
    /// real deployment, and runs as one from then on.
    reclassified: std::sync::OnceLock<Mode>,
    pub(super) notices: Vec<String>,
    late_notices: Mutex<Vec<String>>,
    pub(super) server_url: Option<String>,
    pub(super) software_version: String,
    pub(super) modules_enabled: Vec<String>,
    pub(super) config: Config,
    pub(super) store: Option<LocalStore>,
    pub(super) telemetry: Telemetry,
    pub(super) instance: RwLock<InstanceState>,
    pub(super) health_checks: Mutex<Vec<(String, Arc<HealthCheck>)>>,
    pub(super) health: Mutex<BTreeMap<String, Health>>,
    pub(super) started: DateTime<Utc>,
    pub(super) http: Option<reqwest::Client>,
    /// One check-in at a time, whoever asks.
    pub(super) checking_in: tokio::sync::Mutex<()>,
    /// Tells the worker to check in now rather than when due (a permit is kept when it is busy).
    pub(super) check_in_soon: tokio::sync::Notify,
    pub(super) failures: AtomicU32,
    /// Set for the application (`Licensing::start`): it records its environment in the store
    /// for the commands run beside it. A command's verifier reads that record instead, so it
    /// never sends or shows its own version as the application's.
    pub(super) is_application: std::sync::atomic::AtomicBool,
    /// Where batches go when not inside the check-in (see [`crate::client::sender`]): the
    /// debug printer, an air-gapped deployment's report files, or the host's own sender.
    pub(super) sender: Option<Arc<dyn Sender>>,
    /// The ring came from the data directory (a command run without the application's keys):
    /// good for showing, never for believing an answer that changes the deployment's state.
    pub(super) ring_for_inspection: bool,
    /// The install this process belongs to, sent with each check-in (where it checks in).
    pub(super) install: Option<crate::protocol::InstallRef>,
}

impl Verifier {
    pub(super) fn open(config: Config) -> Result<Verifier, StartError> {
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
        let configured = verify_signature(&license_key, &ring);
        // A renewal delivered earlier and kept in the store is used when it is newer than the
        // configured key. The store is read only where it already exists: a deployment that
        // never checked in has none, and opening one would create it.
        let mut early_store = None;
        let mut current = CurrentLicense { key: license_key, payload: configured };
        if let Ok(configured) = &current.payload {
            if LocalStore::exists(&config.data_dir) {
                let store = LocalStore::open(&config.data_dir)?;
                if let Some(renewed) = store.state()?.and_then(|s| s.license_key) {
                    if let Some(payload) = newer_key(configured, &renewed, &ring) {
                        current = CurrentLicense { key: renewed, payload: Ok(payload) };
                    }
                }
                early_store = Some(store);
            }
        }
        let license = current.payload.clone();
        let (mode, mut notices) = match &license {
            Ok(payload) => {
                // The operator's saved choice, unless the embedding code set one.
                let mut switches = config.switches.clone();
                if switches.choice.is_none() {
                    switches.choice = crate::client::choice::read(&config.data_dir)?;
                }
                let decision = policy::decide(payload.tier, config.instance_url.as_deref(), &switches)
                    .map_err(StartError::BadInstanceUrl)?;
                (decision.mode, decision.notices)
            }
            Err(e) => (
                Mode::Unlicensed { reason: format!("the license key is {}", e.verdict()) },
                vec![format!("the license key is refused ({e}): nothing is collected, sent or checked in")],
            ),
        };
        let sender = choose_sender(&config, &mode, license.as_ref().ok().map(|p| p.tier), &mut notices);
        // Telemetry and exempt deployments check in; air-gapped keeps its figures (and its own
        // key) for the signed usage reports carried by hand, and never connects.
        let checks_in = mode.checks_in() && license.is_ok();
        let keeps_store = (checks_in || matches!(mode, Mode::AirGapped { .. })) && license.is_ok();
        if checks_in {
            match &config.server_url {
                // Only the debug printer may run without a server: its first grace, one check-in
                // interval, is all it gets.
                None if !matches!(mode, Mode::Telemetry { debug: true, .. }) => {
                    return Err(StartError::NoServer {
                        tier: license.as_ref().map(|p| p.tier).unwrap_or(license::Tier::Community),
                    })
                }
                Some(url) => {
                    check_server_url(url, config.allow_insecure_http).map_err(StartError::BadServerUrl)?
                }
                None => {}
            }
        }
        let (store, instance) = if keeps_store {
            let store = match early_store {
                Some(store) => store,
                None => LocalStore::open(&config.data_dir)?,
            };
            let state = store.state_or_init(now)?;
            if matches!(mode, Mode::AirGapped { .. }) {
                // Created at the first air-gapped start, so its public half is the same in
                // every report the install will ever sign.
                store.install_key()?;
            }
            // Basic health only: details collected before the switch are not sent either.
            if mode.level() == Some(Level::Basic) {
                let discarded = store.clear_details()?;
                if discarded > 0 {
                    notices.push(format!(
                        "discarded {discarded} rows of usage details collected before the switch to basic health"
                    ));
                }
            }
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
            let instance = InstanceState {
                lease,
                last_server_time: state.last_server_time.map(store::utc),
                first_started: store::utc(state.first_started_at),
                instance_id: state.instance_id.clone(),
                salt: state.salt_bytes()?,
                last_sync: match state.last_result.as_deref() {
                    None => SyncStatus::None,
                    Some(r) if CheckInStatus::parse(r).is_some() => SyncStatus::Success,
                    Some(_) => SyncStatus::Error,
                },
                deactivated: false,
                replaced: false,
            };
            (Some(store), instance)
        } else {
            let instance = InstanceState {
                lease: None,
                last_server_time: None,
                first_started: now,
                instance_id: String::new(),
                salt: Vec::new(),
                last_sync: SyncStatus::None,
                deactivated: false,
                replaced: false,
            };
            (None, instance)
        };
        let install = match (&license, checks_in) {
            (Ok(payload), true) => Some(crate::client::install::identify(
                payload.license_id,
                config.install_id.as_deref(),
                config.instance_url.as_deref(),
                match &mode {
                    Mode::Exempt { exemption, .. } => Some(*exemption),
                    _ => None,
                },
                &config.machine_id_files,
                &instance.instance_id,
            )),
            _ => None,
        };
        // At the basic level nothing is collected: batches carry the environment alone. A
        // developer's machine (loopback) gets a collector that stays off unless the instance
        // turns out to serve other hosts (see `reclassify`).
        let collecting = keeps_store && mode.level() == Some(Level::Full);
        let telemetry = if collecting {
            Telemetry::with_sampling(&config.limits, config.sampling)
        } else if keeps_store && matches!(mode, Mode::Exempt { exemption: TelemetryExemption::Loopback, .. })
        {
            Telemetry::dormant(&config.limits, config.sampling)
        } else {
            Telemetry::disabled()
        };
        // No HTTP client at all unless this instance checks in: air-gapped means no
        // connection, and a client that does not exist cannot make one.
        let http = if checks_in {
            let mut builder = reqwest::Client::builder()
                // A redirect would re-send the license key and the telemetry wherever it
                // points: none is followed, and a 3xx counts as no answer.
                .redirect(reqwest::redirect::Policy::none())
                .connect_timeout(config.request_timeout.min(Duration::from_secs(10)))
                .timeout(config.request_timeout)
                .user_agent(concat!("licensor-client/", env!("CARGO_PKG_VERSION")));
            if let Some(path) = &config.ca_certificate {
                builder = builder.tls_certs_merge(root_certificates(path)?);
            }
            Some(builder.build().map_err(StartError::HttpClient)?)
        } else {
            None
        };
        Ok(Verifier {
            license: RwLock::new(current),
            ring,
            start_mode: mode,
            reclassified: std::sync::OnceLock::new(),
            notices,
            late_notices: Mutex::new(Vec::new()),
            server_url: config.server_url.clone(),
            software_version: config.software_version.clone(),
            // Only identifiers leave the install (see `privacy::keep_name`): checked once here.
            modules_enabled: config
                .modules_enabled
                .iter()
                .filter(|m| {
                    crate::privacy::keep_name(m, &mut crate::privacy::Redactions::default()).is_some()
                })
                .cloned()
                .collect(),
            store,
            telemetry,
            instance: RwLock::new(instance),
            health_checks: Mutex::new(Vec::new()),
            health: Mutex::new(BTreeMap::new()),
            started: now,
            http,
            checking_in: tokio::sync::Mutex::new(()),
            check_in_soon: tokio::sync::Notify::new(),
            failures: AtomicU32::new(0),
            is_application: std::sync::atomic::AtomicBool::new(false),
            sender,
            ring_for_inspection: false,
            install,
            config,
        })
    }

    /// Why no answer may be believed now, if none may: the ring was read from the data directory.
    pub(super) fn untrusted_ring(&self) -> Option<String> {
        self.ring_for_inspection.then(|| {
            "the key ring recorded in the data directory is for showing and inspecting only: run this with the \
             application's keys (LICENSOR_KEYS_DIR) to accept the license server's answers"
                .to_owned()
        })
    }

    /// How the verifier runs now: as decided at start, or as reclassified since.
    pub(super) fn mode(&self) -> &Mode {
        self.reclassified.get().unwrap_or(&self.start_mode)
    }

    /// Called by the middleware when an instance classed as loopback (a developer's machine,
    /// holding no seat) serves a request for `host`, which is not local: it is a deployment
    /// like any other. From now on it runs in telemetry mode at the full level (its collector
    /// wakes, its check-ins carry telemetry and take a seat), it says so, and it checks in at
    /// once so that the server counts it. Only the first call does anything.
    pub(super) fn reclassify(&self, host: &str) {
        if !matches!(self.start_mode, Mode::Exempt { exemption: TelemetryExemption::Loopback, .. })
            || self.store.is_none()
            || self.reclassified.set(Mode::FULL).is_err()
        {
            return;
        }
        self.telemetry.wake();
        let notice = format!(
            "this instance was classed as a developer's machine (loopback) but serves {host:?}: it now runs as a \
             licensed deployment, holds a seat and sends telemetry; set LICENSOR_INSTANCE_URL to its public URL"
        );
        tracing::warn!(target: "licensor", "{notice}");
        if self.config.print_notices {
            eprintln!("licensor: {notice}");
        }
        if let Ok(mut notices) = self.late_notices.lock() {
            notices.push(notice);
        }
        self.check_in_soon.notify_one();
    }

    /// Start-up's notices and any said since (a reclassification).
    pub(super) fn notices(&self) -> Vec<String> {
        let mut all = self.notices.clone();
        all.extend(self.late_notices.lock().map(|n| n.clone()).unwrap_or_default());
        all
    }

    /// The license in force now.
    pub(super) fn current(&self) -> CurrentLicense {
        self.license.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The payload of the license in force, when its signature verified.
    pub(super) fn payload(&self) -> Result<LicensePayload, TokenError> {
        self.license.read().unwrap_or_else(|p| p.into_inner()).payload.clone()
    }

    pub(super) fn now(&self) -> DateTime<Utc> {
        (self.config.clock)()
    }

    pub(super) fn clock(&self) -> Clock {
        self.config.clock.clone()
    }

    pub(super) fn status(&self) -> Status {
        let now = self.now();
        let instance = self.instance.read().unwrap_or_else(|p| p.into_inner());
        if instance.deactivated {
            return Status::Invalid { reason: status::InvalidReason::Deactivated };
        }
        // The window is checked now: a license may expire while the application runs.
        let payload = self.payload();
        let checked =
            payload.as_ref().map_err(Clone::clone).and_then(|p| token::check_window(p, now).map(|()| p));
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
            mode: self.mode(),
            lease: instance.lease.as_ref(),
            last_server_time: instance.last_server_time,
            first_started: instance.first_started,
            now,
        })
    }

    /// Whether this deployment keeps figures (telemetry and air-gapped; not an exempt one,
    /// whose store holds only its license state).
    pub(super) fn collects(&self) -> bool {
        self.store.is_some() && self.mode().level().is_some()
    }

    pub(super) fn flush(&self) -> Result<(), LocalError> {
        let Some(store) = self.store.as_ref().filter(|_| self.collects()) else { return Ok(()) };
        let mut flush = self.telemetry.drain();
        flush.health = self.health.lock().map(|h| h.clone()).unwrap_or_default();
        let now = self.now();
        store.record(&flush, now, &BatchLimits::default())?;
        if self.is_application.load(Ordering::Relaxed) {
            store.record_app_environment(&self.own_environment(now), now)?;
        }
        Ok(())
    }

    /// Marks this verifier as the application's and records its environment at once, so a
    /// command run beside it sees the application's version before its first flush.
    pub(super) fn become_application(&self) -> Result<(), LocalError> {
        self.is_application.store(true, Ordering::Relaxed);
        let Some(store) = &self.store else { return Ok(()) };
        let now = self.now();
        // What the operator's commands need and may not have in their environment.
        let settings = store::AppSettings {
            server_url: self.server_url.clone(),
            instance_url: self.config.instance_url.clone(),
            install_id: self.config.install_id.clone(),
            keys: self
                .ring
                .to_pem()
                .into_iter()
                .map(|(kid, role, pem)| store::RecordedKey { kid, role: role.as_str().to_owned(), pem })
                .collect(),
        };
        store.record_app_settings(&settings, &self.current().key)?;
        store.record_app_environment(&self.own_environment(now), now)
    }

    /// The environment a batch carries: the application's own; for a command run beside it,
    /// the one the application last recorded (its version, modules and uptime then), with the
    /// last sync as the store has it now.
    pub(super) fn environment(&self, now: DateTime<Utc>) -> Environment {
        match self.recorded_environment() {
            Some((mut recorded, _)) => {
                recorded.last_sync_status = self.last_sync();
                recorded
            }
            None => self.own_environment(now),
        }
    }

    /// The application's recorded environment and when it was recorded, for a command's
    /// verifier; `None` for the application itself, or before any application recorded one.
    pub(super) fn recorded_environment(&self) -> Option<(Environment, DateTime<Utc>)> {
        if self.is_application.load(Ordering::Relaxed) {
            return None;
        }
        self.store.as_ref()?.app_environment().ok().flatten()
    }

    /// Flushes, then takes the next batch into the outbox (if none waits there) and returns it
    /// with what it leaves out.
    pub(super) fn preview(&self) -> Result<Option<super::Preview>, LocalError> {
        let Some(store) = self.store.as_ref().filter(|_| self.collects()) else { return Ok(None) };
        self.flush()?;
        let now = self.now();
        let batch = store.pin_batch(self.environment(now), now, &BatchLimits::default())?;
        let unflushed = if self.is_application.load(Ordering::Relaxed) {
            super::Unflushed::Nothing
        } else {
            match self.recorded_environment() {
                Some((_, at)) => super::Unflushed::Since(at),
                None => super::Unflushed::NoApplication,
            }
        };
        Ok(Some(super::Preview {
            batch_id: batch.batch_id,
            payload: batch.payload,
            queued_behind: store.unbatched_rows()?,
            unflushed,
        }))
    }

    /// What the local dashboard shows, the application's memory flushed first.
    pub(super) fn dashboard(&self) -> Result<crate::client::dashboard::Dashboard, LocalError> {
        use crate::client::dashboard::{Dashboard, HOURS};
        let now = self.now();
        let mut d = Dashboard {
            now,
            mode: self.mode().clone(),
            notices: self.notices(),
            status: self.status(),
            license: self.payload().map_err(|e| e.to_string()),
            state: None,
            series: Default::default(),
            summary: None,
            pending: None,
            unbatched: 0,
            ledger: Vec::new(),
            reports: None,
        };
        if let Some(store) = &self.store {
            self.flush()?;
            d.state = store.state()?;
            d.series = store.series(HOURS, now)?;
            d.summary = Some(store.summary(HOURS, now)?);
            d.pending = store.outbox()?;
            d.unbatched = store.unbatched_rows()?;
            d.ledger = store.ledger()?;
            if matches!(self.mode(), Mode::AirGapped { .. }) {
                d.reports = Some(store.report_chain()?);
            }
        }
        Ok(d)
    }

    /// When the store says the next check-in is due (written by the last check-in of the
    /// application or of a command run beside it).
    pub(super) fn stored_next_check_in(&self) -> Option<DateTime<Utc>> {
        let state = self.store.as_ref()?.state().ok()??;
        state.next_check_in_at.map(crate::client::store::utc)
    }

    /// Writes the time the application will check in next, for `status` to show.
    pub(super) fn announce_next_check_in(&self, at: DateTime<Utc>) {
        if let Some(store) = &self.store {
            if let Err(e) = store.set_next_check_in(at) {
                tracing::warn!(target: "licensor", "recording the next check-in time failed: {}", crate::error_chain::Chain(&e));
            }
        }
    }

    /// The software version a check-in reports: the application's.
    pub(super) fn reported_version(&self) -> String {
        self.recorded_environment().map_or_else(|| self.software_version.clone(), |(e, _)| e.app_version)
    }

    /// The last check-in's outcome as a batch reports it.
    fn last_sync(&self) -> SyncStatus {
        self.instance.read().map(|k| k.last_sync).unwrap_or(SyncStatus::None)
    }

    fn own_environment(&self, now: DateTime<Utc>) -> Environment {
        Environment {
            app_version: self.software_version.chars().take(crate::protocol::MAX_VERSION_LEN).collect(),
            os: std::env::consts::OS.into(),
            arch: std::env::consts::ARCH.into(),
            // Filled in by the store from its tables.
            user_count_range: UserCountRange::UpTo10,
            modules_enabled: self.modules_enabled.clone(),
            uptime_hours: ((now - self.started).num_seconds().max(0) as f64 / 36.0).round() / 100.0,
            last_sync_status: self.last_sync(),
            health: BTreeMap::new(),
        }
    }

    pub(super) fn run_health_checks(&self) {
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
    pub(super) async fn deactivate(&self) -> Result<Deactivated, DeactivateError> {
        self.release(false).await
    }

    /// Releases this process on the server as it stops cleanly, keeping its lease: restarted,
    /// it runs on that lease and takes its place again at its next check-in, while meanwhile
    /// its install's seat is free unless another process holds it.
    pub(super) async fn release_on_stop(&self) -> Result<Deactivated, DeactivateError> {
        self.release(true).await
    }

    async fn release(&self, keep_lease: bool) -> Result<Deactivated, DeactivateError> {
        let current = self.current();
        let (Some(store), Ok(payload), true) = (&self.store, &current.payload, self.mode().checks_in())
        else {
            return Err(DeactivateError::NotApplicable(self.mode().off_reason().unwrap_or_default()));
        };
        if let Some(why) = self.untrusted_ring() {
            return Err(DeactivateError::NotApplicable(why));
        }
        let (Some(http), Some(server)) = (&self.http, &self.server_url) else {
            return Err(DeactivateError::NotApplicable("no license server is configured".into()));
        };
        let _one = self.checking_in.lock().await;
        let lease = store.state()?.and_then(|s| s.lease).ok_or(DeactivateError::NeverCheckedIn)?;
        let instance_id = self.instance.read().map(|k| k.instance_id.clone()).unwrap_or_default();
        let nonce = exchange::fresh_nonce();
        let body = serde_json::to_vec(&crate::protocol::DeactivationRequest {
            license_key: current.key.clone(),
            instance_id: instance_id.clone(),
            nonce: nonce.clone(),
            lease,
        })
        .expect("a deactivation serialises");
        let (status, _, answer) = exchange::post(http, server, "/v1/deactivations", body)
            .await
            .map_err(DeactivateError::NoAnswer)?;
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
        if !keep_lease {
            store.forget_lease(self.now())?;
            if let Ok(mut instance) = self.instance.write() {
                instance.lease = None;
                instance.deactivated = true;
            }
        }
        Ok(Deactivated {
            license_id: receipt.license_id,
            instance_id,
            server_time: receipt.server_time,
            receipt: response.receipt,
        })
    }

    /// One check-in: flush, take the outbox batch (or assemble one), send, verify, record.
    pub(super) async fn check_in(&self) -> CheckInOutcome {
        // A refused license key starts unlicensed (see `open`), so a mode that checks in always
        // has a store and a license here.
        let current = self.current();
        let mode = self.mode();
        let (Some(store), Ok(payload)) = (&self.store, &current.payload) else {
            return CheckInOutcome::NotApplicable(mode.off_reason().unwrap_or_default());
        };
        if let Some(why) = self.untrusted_ring() {
            return CheckInOutcome::NotApplicable(why);
        }
        let exempt = match mode {
            Mode::Exempt { exemption, .. } => Some(*exemption),
            _ => None,
        };
        match (mode, &self.sender) {
            (Mode::Telemetry { .. } | Mode::Exempt { .. }, _) => {}
            // Air-gapped with somewhere to deliver: the batch goes there, and nothing connects.
            (Mode::AirGapped { .. }, Some(sender)) => {
                let _one = self.checking_in.lock().await;
                return self.deliver_alone(store, sender, payload.license_id).await;
            }
            _ => return CheckInOutcome::NotApplicable(mode.off_reason().unwrap_or_default()),
        }
        let _one = self.checking_in.lock().await;
        if self.instance.read().is_ok_and(|k| k.deactivated) {
            return CheckInOutcome::NotApplicable("this instance released its seat (deactivated)".into());
        }
        if self.instance.read().is_ok_and(|k| k.replaced) {
            return CheckInOutcome::NotApplicable(
                "this process was released in favour of a newer one of its install; restart it to run again"
                    .into(),
            );
        }
        let now = self.now();
        if let Err(e) = self.flush() {
            tracing::warn!(target: "licensor", "flushing telemetry before the check-in failed: {}", crate::error_chain::Chain(&e));
        }
        // An exempt deployment sends no telemetry at all: not even the environment.
        let outgoing = match exempt {
            Some(_) => None,
            None => match store.next_batch(self.environment(now), now, &BatchLimits::default()) {
                Ok(o) => Some(o),
                Err(e) => return self.failed(store, format!("the local store failed: {e}"), None),
            },
        };
        // A sender of the host's (or the debug printer) takes the batch instead: the check-in,
        // if any, then carries none.
        let mut delivered = None;
        if let (Some(sender), Some(outgoing)) = (&self.sender, &outgoing) {
            let outcome = self.deliver(store, sender, outgoing, payload.license_id, None).await;
            if matches!(mode, Mode::Telemetry { debug: true, .. }) {
                return CheckInOutcome::Printed;
            }
            delivered = Some(outcome);
        }
        let (Some(http), Some(server)) = (&self.http, &self.server_url) else {
            return CheckInOutcome::NotApplicable("no license server is configured".into());
        };
        let instance_id = self.instance.read().map(|k| k.instance_id.clone()).unwrap_or_default();
        let carried = outgoing.as_ref().filter(|_| delivered.is_none()).map(|o| {
            (o.payload.as_str(), uuid::Uuid::parse_str(&o.batch_id).unwrap_or_else(|_| uuid::Uuid::nil()))
        });
        let request = exchange::build_request(
            &current.key,
            &instance_id,
            &self.reported_version(),
            carried,
            exempt,
            self.install.as_ref(),
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
        // A newer key for this license, delivered in the signed lease: used from now on once
        // it verifies under the license keys this deployment trusts and is newer than the key
        // in force. One that does not is ignored (and said), never a reason to drop the answer.
        let renewed = lease.license_key.as_deref().and_then(|key| match newer_key(payload, key, &self.ring) {
            Some(renewed) => Some((key.to_owned(), renewed)),
            None => {
                tracing::warn!(target: "licensor", "the server delivered a license key that is not a newer key of this license; keeping the current one");
                None
            }
        });
        let mut next = exchange::next_check_in(lease.next_check_in_at, now);
        // A batch the host's sender did not take is offered again after a failure's backoff,
        // not a whole check-in interval later (the check-in then comes early too; harmless).
        if let Some(Delivered::Failed { retry_after, .. }) = &delivered {
            let backoff = exchange::retry_policy(1, retry_after.map(|d| d.as_secs()));
            next = next.min(now + chrono::Duration::from_std(backoff).unwrap_or(chrono::Duration::hours(1)));
        }
        let record = CheckInRecord {
            lease: verified.response.lease.clone(),
            server_time: Some(lease.server_time),
            result: status.as_str().into(),
            next_check_in_at: Some(next),
            acknowledged: outgoing
                .as_ref()
                .filter(|_| verified.batch_acknowledged && carried.is_some())
                .map(|o| o.batch_id.clone()),
            renewed_key: renewed.as_ref().map(|(key, _)| key.clone()),
            report_acknowledged: None,
        };
        if let Err(e) = store.record_check_in(&record, now) {
            tracing::warn!(target: "licensor", "recording the check-in failed: {}", crate::error_chain::Chain(&e));
        }
        if let Some((key, payload)) = renewed {
            tracing::info!(target: "licensor", license_id = %payload.license_id, "the license server delivered a renewed license key; using it from now on");
            if let Ok(mut license) = self.license.write() {
                *license = CurrentLicense { key, payload: Ok(payload) };
            }
        }
        if let Ok(mut instance) = self.instance.write() {
            // The mark is the server time of the latest verified answer, not the highest ever
            // seen: a fresh answer bound to this request's nonce is the best evidence of the
            // server's time there is, so a mark once set far ahead (a server's clock gone
            // wrong) is corrected by the next genuine check-in instead of locking the
            // deployment out for good.
            instance.last_server_time = Some(lease.server_time);
            instance.replaced = lease.status == CheckInStatus::Replaced;
            instance.lease = Some(lease);
            instance.last_sync = SyncStatus::Success;
        }
        if status != CheckInStatus::Valid {
            tracing::warn!(target: "licensor", "the license server answered {status}");
        }
        CheckInOutcome::Answered {
            status,
            next_check_in_at: next,
            batch_acknowledged: match &delivered {
                Some(d) => *d == Delivered::Acknowledged,
                None => verified.batch_acknowledged,
            },
        }
    }

    /// Offers the outbox batch to `sender` and records what became of it: acknowledged, it
    /// moves to the ledger; shown, it is let go; handed over or failed, it stays for the next
    /// offer, byte for byte. A sender that panics has failed.
    async fn deliver(
        &self,
        store: &LocalStore,
        sender: &Arc<dyn Sender>,
        outgoing: &store::Outgoing,
        license_id: uuid::Uuid,
        signed_report: Option<(u64, String)>,
    ) -> Delivered {
        let batch = sender::Batch {
            batch_id: outgoing.batch_id.clone(),
            payload: outgoing.payload.clone(),
            digest: outgoing.digest.clone(),
            license_id,
            instance_id: self.instance.read().map(|k| k.instance_id.clone()).unwrap_or_default(),
            signed_report,
        };
        let task = {
            let sender = sender.clone();
            tokio::spawn(async move { sender.deliver(&batch).await })
        };
        let delivered = task.await.unwrap_or_else(|e| Delivered::Failed {
            error: format!("the sender failed: {e}"),
            retry_after: None,
        });
        let recorded = match &delivered {
            Delivered::Acknowledged => store.acknowledge(&outgoing.batch_id, self.now()),
            Delivered::Shown => store.release_outbox(&outgoing.batch_id).map(|_| ()),
            Delivered::Handed => Ok(()),
            Delivered::Failed { error, .. } => {
                tracing::warn!(target: "licensor", "{} did not take batch {}: {error}", sender.describe(), outgoing.batch_id);
                Ok(())
            }
        };
        if let Err(e) = recorded {
            tracing::warn!(target: "licensor", "recording the delivery of batch {} failed: {e}", outgoing.batch_id);
        }
        delivered
    }

    /// An air-gapped deployment's delivery: the batch (in its signed report, for a sender that
    /// wants one) goes to the sender; no connection is made.
    async fn deliver_alone(
        &self,
        store: &LocalStore,
        sender: &Arc<dyn Sender>,
        license_id: uuid::Uuid,
    ) -> CheckInOutcome {
        let failed = |error: String| CheckInOutcome::Delivered {
            to: sender.describe(),
            delivered: Delivered::Failed { error, retry_after: None },
        };
        let now = self.now();
        let (outgoing, signed_report) = if sender.wants_signed_report() {
            // The report waiting for its receipt, or a new one; its batch is the outbox's.
            let report = match self.export_report() {
                Ok(r) => r,
                Err(e) => return failed(e.to_string()),
            };
            let outgoing = match store.outbox() {
                Ok(Some(o)) if o.batch_id == report.batch_id => o,
                // The report's batch left the outbox (cleared): the report carries it whole.
                Ok(_) => store::Outgoing {
                    batch_id: report.batch_id.clone(),
                    created_at: now.naive_utc(),
                    payload: report.payload.clone(),
                    digest: crate::protocol::digest(report.payload.as_bytes()),
                    attempts: 0,
                },
                Err(e) => return failed(e.to_string()),
            };
            (outgoing, Some((report.sequence, report.text)))
        } else {
            if let Err(e) = self.flush() {
                tracing::warn!(target: "licensor", "flushing telemetry before the delivery failed: {}", crate::error_chain::Chain(&e));
            }
            match store.next_batch(self.environment(now), now, &BatchLimits::default()) {
                Ok(o) => (o, None),
                Err(e) => return failed(e.to_string()),
            }
        };
        let delivered = self.deliver(store, sender, &outgoing, license_id, signed_report).await;
        CheckInOutcome::Delivered { to: sender.describe(), delivered }
    }

    pub(super) fn failed(
        &self,
        store: &LocalStore,
        error: String,
        retry_after: Option<u64>,
    ) -> CheckInOutcome {
        let attempt = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        let retry = exchange::retry_policy(attempt, retry_after);
        let now = self.now();
        let next = now + chrono::Duration::from_std(retry).unwrap_or(chrono::Duration::hours(6));
        tracing::warn!(target: "licensor", "check-in failed (attempt {attempt}): {error}");
        let record =
            CheckInRecord { result: error.clone(), next_check_in_at: Some(next), ..Default::default() };
        if let Err(e) = store.record_check_in(&record, now) {
            tracing::warn!(target: "licensor", "recording the failed check-in failed: {}", crate::error_chain::Chain(&e));
        }
        if let Ok(mut instance) = self.instance.write() {
            instance.last_sync = SyncStatus::Error;
        }
        CheckInOutcome::NoAnswer { error, retry }
    }

    /// When the check-in after `outcome` is due, from now.
    pub(super) fn delay_after(&self, outcome: &CheckInOutcome) -> Duration {
        let now = self.now();
        let until = |t: DateTime<Utc>| (t - now).to_std().unwrap_or(Duration::ZERO);
        match outcome {
            CheckInOutcome::Answered { next_check_in_at, .. } => until(*next_check_in_at),
            CheckInOutcome::NoAnswer { retry, .. } => *retry,
            CheckInOutcome::Printed => self.config.flush_every.max(Duration::from_secs(60)),
            CheckInOutcome::Delivered { delivered: Delivered::Failed { retry_after, .. }, .. } => {
                let attempt = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
                exchange::retry_policy(attempt, retry_after.map(|d| d.as_secs()))
            }
            // Delivered without a lease (air-gapped): again after the license's interval.
            CheckInOutcome::Delivered { .. } => {
                self.failures.store(0, Ordering::Relaxed);
                self.payload().map_or(Duration::from_secs(24 * 60 * 60), |p| {
                    p.check_in_interval().to_std().unwrap_or(Duration::from_secs(24 * 60 * 60))
                })
            }
            CheckInOutcome::NotApplicable(_) => Duration::from_secs(24 * 60 * 60),
        }
    }
}

/// Where batches go besides the check-in, and what start-up says about it: the debug printer
/// wherever debug is on; on Enterprise, the host's sender, or (air-gapped) report files; on
/// Community and Pro nothing else, since the license server must receive their usage.
fn choose_sender(
    config: &Config,
    mode: &Mode,
    tier: Option<license::Tier>,
    notices: &mut Vec<String>,
) -> Option<Arc<dyn Sender>> {
    let configured = config.sender.clone().or_else(|| {
        let dir = config.report_dir.as_ref()?;
        Some(Arc::new(sender::ReportFiles::new(dir.clone())) as Arc<dyn Sender>)
    });
    match (mode, tier) {
        (Mode::Telemetry { debug: true, .. }, _) => Some(Arc::new(sender::Stderr)),
        (Mode::Telemetry { .. }, Some(license::Tier::Enterprise)) => {
            let sender = configured?;
            if sender.wants_signed_report() {
                notices.push(format!(
                    "{} is for air-gapped deployments only: this one checks in, and its usage goes with its check-ins",
                    sender.describe()
                ));
                return None;
            }
            notices.push(format!(
                "telemetry batches go to {}; check-ins carry no telemetry (Enterprise)",
                sender.describe()
            ));
            Some(sender)
        }
        (Mode::Telemetry { .. }, Some(tier)) => {
            if let Some(sender) = configured {
                notices.push(format!(
                    "{} is not used on the {tier} tier: its license requires the license server to receive the usage \
                     (only Enterprise licenses may send it elsewhere)",
                    sender.describe()
                ));
            }
            None
        }
        (Mode::AirGapped { .. }, _) => {
            let sender = configured?;
            notices.push(format!(
                "air-gapped: telemetry batches go to {} on the license's schedule; no connection is made",
                sender.describe()
            ));
            Some(sender)
        }
        _ => None,
    }
}

/// A license key's payload when its signature verifies under `ring` (a license key of the
/// ring), whatever its validity window.
fn verify_signature(key: &str, ring: &KeyRing) -> Result<LicensePayload, TokenError> {
    let decoded = token::decode::<LicensePayload>(key)?;
    decoded.verify_signature(ring)?;
    Ok(decoded.claims)
}

/// The payload of `candidate` when it is a key of the same license as `current`, issued later,
/// whose signature verifies under `ring`: a renewal this deployment may use.
pub(super) fn newer_key(current: &LicensePayload, candidate: &str, ring: &KeyRing) -> Option<LicensePayload> {
    verify_signature(candidate, ring)
        .ok()
        .filter(|p| p.license_id == current.license_id && p.issued_at > current.issued_at)
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
pub(super) fn error_message(body: &[u8]) -> String {
    serde_json::from_slice::<crate::protocol::ErrorBody>(body)
        .map(|b| format!("{} ({})", b.error.message, b.error.code))
        .unwrap_or_else(|_| String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned())
}

/// The root certificates of `LICENSOR_CA_CERT`: at least one, in PEM.
pub(crate) fn root_certificates(path: &std::path::Path) -> Result<Vec<reqwest::Certificate>, StartError> {
    let error = |message: String| StartError::RootCertificate { path: path.to_owned(), message };
    let pem = std::fs::read(path).map_err(|e| error(e.to_string()))?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| error(e.to_string()))?;
    if certs.is_empty() {
        return Err(error("no PEM certificate (-----BEGIN CERTIFICATE-----) in the file".into()));
    }
    Ok(certs)
}
