//! The deployment's own store: one SQLite file in its data directory, holding what the
//! verifier keeps across restarts (instance id, salt, last lease, latest server time), the
//! telemetry figures flushed from memory, the outbox and the ledger. It is the client's alone:
//! SQLite only, its own migrations (`migrations/local`), its own table names.
//!
//! Exactly-once delivery rests on three moves, each one transaction: flushed figures become
//! rows with an empty `batch_id` ([`record`]); assembling a batch gives those rows its id and
//! writes the outbox row with the exact bytes to send, a retry sending the same row again
//! ([`batches`]); an acknowledgement moves the outbox row into the ledger. A crash between any
//! two leaves either the rows or the outbox row, never both and never neither. [`rollup`]
//! keeps the tables bounded; [`summary`] reads them for people.
//!
//! Invariants: no I/O but this file; callers hand in times; nothing here is ever sent except
//! the outbox payload, and the salt and user hashes never leave this store's tables.

use chrono::{DateTime, Datelike as _, DurationRound as _, NaiveDateTime, TimeZone as _, Utc};
use diesel::connection::SimpleConnection as _;
use diesel::prelude::*;
use diesel::sqlite::SqliteConnection;
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness as _};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use crate::sketch::Sketch;
use schema::verifier_state;

pub mod batches;
pub mod record;
pub mod reports;
pub mod rollup;
mod rows;
pub mod schema;
pub mod summary;

pub use batches::{LedgerEntry, Outgoing};
pub use reports::ReportChain;
pub use rollup::RollUp;
pub use rows::{ErrorGroupRow, RouteRow, SessionsRow, UsageRow};
pub use summary::{Export, LocalSeries, LocalSummary, RouteLatency};

const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/local");

/// The store's file name inside the data directory.
pub const FILE_NAME: &str = "licensor-client.db";
/// The ledger keeps this many acknowledged batches; older ones are dropped.
pub const LEDGER_MAX: i64 = 100;
/// Each time-bucketed table keeps at most this many rows after a roll-up; past it the oldest
/// rows go, and unsent ones are counted as dropped (`overflow`).
pub const MAX_ROWS: i64 = 50_000;
/// Rows stay hourly this long, then become daily.
pub const HOURLY_FOR: chrono::Duration = chrono::Duration::hours(48);
/// Rows stay daily this long, then become monthly.
pub const DAILY_FOR: chrono::Duration = chrono::Duration::days(60);
/// Rows already sent are kept for local summaries this long.
pub const SENT_KEPT_FOR: chrono::Duration = chrono::Duration::days(400);
/// The most rows one multi-row insert carries (far below SQLite's 32,766 bound parameters).
const ROWS_PER_STATEMENT: usize = 500;
/// Users seen within this window count towards the batch's user-count range.
pub const ACTIVE_USERS_WINDOW: chrono::Duration = chrono::Duration::days(30);

/// Why the local store could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    /// The data directory could not be created or made private.
    #[error("cannot prepare the data directory {path}")]
    Dir { path: PathBuf, source: std::io::Error },
    /// The SQLite file could not be created, made private or opened.
    #[error("cannot open the local store {path}")]
    Open { path: PathBuf, source: Box<dyn std::error::Error + Send + Sync> },
    /// The schema migrations could not be applied.
    #[error("cannot migrate the local store {path}")]
    Migrate { path: PathBuf, source: Box<dyn std::error::Error + Send + Sync> },
    /// A statement failed (a locked or full disk, a damaged file).
    #[error("local store query failed")]
    Query(#[from] diesel::result::Error),
    /// A stored value could not be read back (see `corrupt`).
    #[error("the local store holds an unreadable {what}")]
    Corrupt { what: &'static str, source: Box<dyn std::error::Error + Send + Sync> },
}

/// What the verifier keeps across restarts.
#[derive(Debug, Clone, PartialEq, Queryable, Selectable, Insertable, AsChangeset)]
#[diesel(table_name = verifier_state, treat_none_as_null = true)]
pub struct VerifierState {
    pub id: i32,
    pub instance_id: String,
    /// Hex of 32 random bytes; the secret salt for user-id hashes.
    pub salt: String,
    pub first_started_at: NaiveDateTime,
    pub period_start: NaiveDateTime,
    pub last_server_time: Option<NaiveDateTime>,
    /// The last lease that verified, as the server signed it.
    pub lease: Option<String>,
    pub last_check_in_at: Option<NaiveDateTime>,
    /// The last check-in's outcome, in words (`valid`, `seat_limit_exceeded`, `no answer: ...`).
    pub last_result: Option<String>,
    pub next_check_in_at: Option<NaiveDateTime>,
    /// The newest license key known: the one the application started with, or a renewal a
    /// verified answer delivered since; the verifier prefers it to the configured key when it
    /// is newer and verifies, and the commands use it when no key is configured.
    pub license_key: Option<String>,
    /// JSON of the `Environment` the application itself last recorded (see
    /// [`LocalStore::record_app_environment`]).
    pub app_environment: Option<String>,
    /// When the application last recorded it, which is when it last flushed its figures.
    pub app_recorded_at: Option<NaiveDateTime>,
    /// JSON of the [`AppSettings`] the application last started with.
    pub app_settings: Option<String>,
}

/// What the application started with that its operator's commands need: recorded so that
/// `licensor telemetry status` and the like work from the data directory alone.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AppSettings {
    pub server_url: Option<String>,
    pub instance_url: Option<String>,
    /// `LICENSOR_INSTALL_ID`, so that a command's check-in names the application's install.
    #[serde(default)]
    pub install_id: Option<String>,
    /// The ring the application trusted: public keys only, for showing and inspecting.
    pub keys: Vec<RecordedKey>,
}

/// One key of a recorded ring.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RecordedKey {
    pub kid: String,
    pub role: String,
    /// SPKI PEM text.
    pub pem: String,
}

impl VerifierState {
    /// The salt's bytes; a salt that does not read back is [`LocalError::Corrupt`], never a
    /// shorter or empty salt standing in for it.
    pub fn salt_bytes(&self) -> Result<Vec<u8>, LocalError> {
        hex::decode(&self.salt).map_err(|e| corrupt("salt", e))
    }
}

/// The local store; every method is one transaction.
pub struct LocalStore {
    conn: Mutex<SqliteConnection>,
    path: PathBuf,
}

impl std::fmt::Debug for LocalStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalStore").field("path", &self.path).finish()
    }
}

fn naive(t: DateTime<Utc>) -> NaiveDateTime {
    t.naive_utc()
}

/// A stored time as UTC.
pub fn utc(t: NaiveDateTime) -> DateTime<Utc> {
    Utc.from_utc_datetime(&t)
}

fn hour_of(t: DateTime<Utc>) -> NaiveDateTime {
    naive(t.duration_trunc(chrono::Duration::hours(1)).unwrap_or(t))
}

fn day_of(t: NaiveDateTime) -> NaiveDateTime {
    t.date().and_hms_opt(0, 0, 0).unwrap_or(t)
}

fn month_of(t: NaiveDateTime) -> NaiveDateTime {
    t.date().with_day(1).and_then(|d| d.and_hms_opt(0, 0, 0)).unwrap_or(t)
}

impl LocalStore {
    /// Opens (creating if need be) the store in `dir`: the directory is made private to its
    /// owner (0700) and the file 0600, since it holds the salt. Applies pending migrations.
    pub fn open(dir: &Path) -> Result<LocalStore, LocalError> {
        std::fs::create_dir_all(dir).map_err(|source| LocalError::Dir { path: dir.into(), source })?;
        let path = dir.join(FILE_NAME);
        #[cfg(unix)]
        {
            use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                .map_err(|source| LocalError::Dir { path: dir.into(), source })?;
            // Created 0600 before SQLite opens it. An existing file is never opened here: closing
            // any descriptor of a database file drops every POSIX lock this process holds on it,
            // under the feet of this process's other connections (SQLite's own warning), which
            // showed up as "disk I/O error" in a process that opened the store twice.
            match std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path) {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                        .map_err(|e| LocalError::Open { path: path.clone(), source: e.into() })?;
                }
                Err(e) => return Err(LocalError::Open { path: path.clone(), source: e.into() }),
            }
        }
        let url = path.to_str().ok_or_else(|| LocalError::Open {
            path: path.clone(),
            source: "the path is not valid UTF-8".into(),
        })?;
        let mut conn = SqliteConnection::establish(url)
            .map_err(|e| LocalError::Open { path: path.clone(), source: e.into() })?;
        // WAL lets the `licensor telemetry` commands read while the application writes; the
        // busy timeout makes two writers wait for each other instead of failing.
        conn.batch_execute(
            "PRAGMA busy_timeout = 5000; PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;",
        )
        .map_err(|e| LocalError::Open { path: path.clone(), source: e.into() })?;
        conn.run_pending_migrations(MIGRATIONS)
            .map_err(|source| LocalError::Migrate { path: path.clone(), source })?;
        Ok(LocalStore { conn: Mutex::new(conn), path })
    }

    /// Whether `dir` holds a store (without creating one).
    pub fn exists(dir: &Path) -> bool {
        dir.join(FILE_NAME).is_file()
    }

    /// The store's file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn conn(&self) -> MutexGuard<'_, SqliteConnection> {
        // A panic while holding the lock leaves SQLite consistent (the transaction rolled
        // back), so a poisoned lock is safe to take over.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The verifier's state, created on first use with a random instance id and salt.
    pub fn state_or_init(&self, now: DateTime<Utc>) -> Result<VerifierState, LocalError> {
        let mut conn = self.conn();
        conn.immediate_transaction(|c| {
            if let Some(state) =
                verifier_state::table.select(VerifierState::as_select()).first(c).optional()?
            {
                return Ok(state);
            }
            let salt: [u8; 32] = rand::random();
            let state = VerifierState {
                id: 1,
                instance_id: uuid::Uuid::new_v4().to_string(),
                salt: hex::encode(salt),
                first_started_at: naive(now),
                period_start: naive(now),
                last_server_time: None,
                lease: None,
                last_check_in_at: None,
                last_result: None,
                next_check_in_at: None,
                license_key: None,
                app_environment: None,
                app_recorded_at: None,
                app_settings: None,
            };
            diesel::insert_into(verifier_state::table).values(&state).execute(c)?;
            Ok(state)
        })
    }

    /// Sets when the next check-in is due, as the application schedules it (its first check-in
    /// after a start), so that `status` says the time the application will keep.
    pub fn set_next_check_in(&self, at: DateTime<Utc>) -> Result<(), LocalError> {
        diesel::update(verifier_state::table)
            .set(verifier_state::next_check_in_at.eq(naive(at)))
            .execute(&mut *self.conn())?;
        Ok(())
    }

    /// Records the environment the application runs in, at start and with each flush of its
    /// figures, so that the commands run beside it send and show the application's own.
    pub fn record_app_environment(
        &self,
        environment: &crate::protocol::Environment,
        now: DateTime<Utc>,
    ) -> Result<(), LocalError> {
        let json = serde_json::to_string(environment).expect("an environment serialises");
        diesel::update(verifier_state::table)
            .set((verifier_state::app_environment.eq(json), verifier_state::app_recorded_at.eq(naive(now))))
            .execute(&mut *self.conn())?;
        Ok(())
    }

    /// Records what the application started with, and the license key in force (the newest
    /// it knows, in this 0600 file already), for the commands run beside it.
    pub fn record_app_settings(&self, settings: &AppSettings, license_key: &str) -> Result<(), LocalError> {
        let json = serde_json::to_string(settings).expect("settings serialise");
        diesel::update(verifier_state::table)
            .set((verifier_state::app_settings.eq(json), verifier_state::license_key.eq(license_key)))
            .execute(&mut *self.conn())?;
        Ok(())
    }

    /// What the application last started with, if one ever did.
    pub fn app_settings(&self) -> Result<Option<AppSettings>, LocalError> {
        let Some(json) = self.state()?.and_then(|s| s.app_settings) else { return Ok(None) };
        serde_json::from_str(&json).map(Some).map_err(|e| corrupt("application settings", e))
    }

    /// The environment the application last recorded, and when.
    pub fn app_environment(
        &self,
    ) -> Result<Option<(crate::protocol::Environment, DateTime<Utc>)>, LocalError> {
        let Some(state) = self.state()? else { return Ok(None) };
        let (Some(json), Some(at)) = (state.app_environment, state.app_recorded_at) else { return Ok(None) };
        let environment = serde_json::from_str(&json).map_err(|e| corrupt("application environment", e))?;
        Ok(Some((environment, utc(at))))
    }

    /// The verifier's state, if it was ever created (the CLI reads without creating).
    pub fn state(&self) -> Result<Option<VerifierState>, LocalError> {
        Ok(verifier_state::table.select(VerifierState::as_select()).first(&mut *self.conn()).optional()?)
    }

    /// Forgets the lease after the instance released its seat: the next start checks in as a
    /// new instance would.
    pub fn forget_lease(&self, now: DateTime<Utc>) -> Result<(), LocalError> {
        let mut conn = self.conn();
        diesel::update(verifier_state::table)
            .set((
                verifier_state::lease.eq(None::<String>),
                verifier_state::last_check_in_at.eq(naive(now)),
                verifier_state::last_result.eq("deactivated"),
                verifier_state::next_check_in_at.eq(None::<NaiveDateTime>),
            ))
            .execute(&mut *conn)?;
        Ok(())
    }

    /// Records a check-in's outcome in one transaction: the lease and server time (when an
    /// answer verified), the result in words, the next check-in, and, if the server
    /// acknowledged `acknowledged` (the batch id), the move of the outbox row to the ledger.
    pub fn record_check_in(&self, outcome: &CheckInRecord, now: DateTime<Utc>) -> Result<(), LocalError> {
        let mut conn = self.conn();
        conn.immediate_transaction(|c| {
            let state: VerifierState = verifier_state::table.select(VerifierState::as_select()).first(c)?;
            // The server time of the latest verified answer replaces the mark (see
            // `client::licensing`): a genuine answer corrects a mark set too far ahead.
            let server_time = outcome.server_time.map(naive).or(state.last_server_time);
            diesel::update(verifier_state::table)
                .set((
                    verifier_state::last_server_time.eq(server_time),
                    verifier_state::lease.eq(outcome.lease.as_ref().or(state.lease.as_ref())),
                    verifier_state::last_check_in_at.eq(naive(now)),
                    verifier_state::last_result.eq(&outcome.result),
                    verifier_state::next_check_in_at.eq(outcome.next_check_in_at.map(naive)),
                    verifier_state::license_key
                        .eq(outcome.renewed_key.as_ref().or(state.license_key.as_ref())),
                ))
                .execute(c)?;
            if let Some(batch_id) = &outcome.acknowledged {
                let carried = outcome.report_acknowledged.as_ref().map(|r| r.payload.as_str());
                batches::acknowledge_carried(c, batch_id, carried, now)?;
            }
            if let Some(ReportAcknowledged { sequence, digest, .. }) = &outcome.report_acknowledged {
                use schema::report_state;
                diesel::update(report_state::table)
                    .set((
                        report_state::report_sequence.eq(i64::try_from(*sequence).unwrap_or(i64::MAX)),
                        report_state::report_digest.eq(digest),
                        report_state::pending_report.eq(None::<String>),
                    ))
                    .execute(c)?;
            }
            Ok(())
        })
    }
}

/// A check-in's outcome, to record.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CheckInRecord {
    /// The lease, when an answer verified and carried one.
    pub lease: Option<String>,
    pub server_time: Option<DateTime<Utc>>,
    pub result: String,
    pub next_check_in_at: Option<DateTime<Utc>>,
    /// The batch id the server acknowledged.
    pub acknowledged: Option<String>,
    /// A newer license key the answer delivered and the verifier accepted.
    pub renewed_key: Option<String>,
    /// A usage receipt acknowledged the waiting report: the chain moves on to it and nothing
    /// waits any more.
    pub report_acknowledged: Option<ReportAcknowledged>,
}

/// The report a usage receipt acknowledged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportAcknowledged {
    pub sequence: u64,
    /// The digest of the report's signed bytes, which the next report chains to.
    pub digest: String,
    /// The batch's bytes as the report carried them: what the ledger keeps should the batch
    /// have left the outbox meanwhile (`licensor telemetry clear`).
    pub payload: String,
}

fn clamp(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// A stored value this build never writes (a kind or status it does not know).
#[derive(Debug, thiserror::Error)]
#[error("{0:?} is not a value this build writes")]
struct Unknown(String);

/// A stored value that does not read back. Everything here was written by this crate from
/// checked values, so this is damage or a bug: the unit of work fails with it, naming the
/// column, rather than a default or a skip hiding it (ARCHITECTURE.md, "Stored values").
fn corrupt(what: &'static str, e: impl std::error::Error + Send + Sync + 'static) -> LocalError {
    LocalError::Corrupt { what, source: Box::new(e) }
}

fn decode_sketch(text: &str) -> Result<Sketch, LocalError> {
    if text.is_empty() {
        return Ok(Sketch::default());
    }
    Sketch::decode(text).map_err(|e| corrupt("sketch", e))
}

/// Stored (naive UTC) times as RFC 3339, for exports.
mod naive_rfc3339 {
    use chrono::NaiveDateTime;
    use serde::Serializer;

    pub fn serialize<S: Serializer>(t: &NaiveDateTime, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&crate::time::format(&super::utc(*t)))
    }
}
