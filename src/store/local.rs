//! The client's local store: one SQLite file in a deployment's data directory, holding what the
//! verifier keeps across restarts (instance id, salt, last lease, latest server time), the
//! telemetry flushed from memory (under the server's table names), the outbox and the ledger.
//!
//! Exactly-once delivery rests on three moves, each one transaction: flushed figures become
//! rows with an empty `batch_id`; assembling a batch gives those rows its id and writes the
//! outbox row with the exact bytes to send (a retry sends the same row again); an
//! acknowledgement moves the outbox row into the ledger (`telemetry_batches`). A crash between
//! any two leaves either the rows or the outbox row, never both and never neither.
//!
//! Invariants: no I/O but this file; callers hand in times; nothing here is ever sent except
//! the outbox payload, and the salt and user hashes never leave this module's tables.

use chrono::{DateTime, Datelike as _, DurationRound as _, NaiveDateTime, TimeZone as _, Utc};
use diesel::connection::SimpleConnection as _;
use diesel::prelude::*;
use diesel::sqlite::SqliteConnection;
use diesel::upsert::excluded;
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness as _};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use crate::protocol::{
    self, BatchLimits, Dropped, Environment, ErrorGroup, Health, RoutePerformance, Sessions, TelemetryBatch,
    UsageCount, UsageKind, UserCountRange, TELEMETRY_SCHEMA,
};
use crate::sketch::Sketch;

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
/// Users seen within this window count towards the batch's user-count range.
pub const ACTIVE_USERS_WINDOW: chrono::Duration = chrono::Duration::days(30);

/// The local store's tables.
pub mod schema {
    diesel::table! {
        verifier_state (id) {
            id -> Integer,
            instance_id -> Text,
            salt -> Text,
            first_started_at -> Timestamp,
            period_start -> Timestamp,
            last_server_time -> Nullable<Timestamp>,
            lease -> Nullable<Text>,
            last_check_in_at -> Nullable<Timestamp>,
            last_result -> Nullable<Text>,
            next_check_in_at -> Nullable<Timestamp>,
        }
    }
    diesel::table! {
        telemetry_events (period_start, kind, name, batch_id) {
            period_start -> Timestamp,
            kind -> Text,
            name -> Text,
            batch_id -> Text,
            count -> BigInt,
        }
    }
    diesel::table! {
        telemetry_performance (period_start, method, route, batch_id) {
            period_start -> Timestamp,
            method -> Text,
            route -> Text,
            batch_id -> Text,
            count -> BigInt,
            errors -> BigInt,
            max_ms -> Double,
            sketch -> Text,
        }
    }
    diesel::table! {
        telemetry_errors (fingerprint, batch_id) {
            fingerprint -> Text,
            batch_id -> Text,
            error_type -> Text,
            message -> Text,
            stack -> Text,
            count -> BigInt,
            first_seen -> Timestamp,
            last_seen -> Timestamp,
        }
    }
    diesel::table! {
        telemetry_sessions (period_start, batch_id) {
            period_start -> Timestamp,
            batch_id -> Text,
            count -> BigInt,
            total_duration_s -> BigInt,
            hourly -> Text,
        }
    }
    diesel::table! {
        telemetry_health (name) {
            name -> Text,
            status -> Text,
            checked_at -> Timestamp,
        }
    }
    diesel::table! {
        telemetry_users (user_hash) {
            user_hash -> Text,
            last_seen -> Timestamp,
        }
    }
    diesel::table! {
        telemetry_tallies (name) {
            name -> Text,
            value -> BigInt,
        }
    }
    diesel::table! {
        telemetry_outbox (batch_id) {
            batch_id -> Text,
            created_at -> Timestamp,
            payload -> Text,
            digest -> Text,
            attempts -> Integer,
        }
    }
    diesel::table! {
        telemetry_batches (batch_id) {
            batch_id -> Text,
            acknowledged_at -> Timestamp,
            payload -> Text,
            digest -> Text,
        }
    }
}

use schema::*;

/// Why the local store could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    /// The data directory could not be created or made private.
    #[error("cannot prepare the data directory {path}: {source}")]
    Dir { path: PathBuf, source: std::io::Error },
    /// The SQLite file could not be opened.
    #[error("cannot open the local store {path}: {message}")]
    Open { path: PathBuf, message: String },
    /// The schema migrations could not be applied.
    #[error("cannot migrate the local store {path}: {message}")]
    Migrate { path: PathBuf, message: String },
    /// A statement failed (a locked or full disk, a damaged file).
    #[error("local store query failed: {0}")]
    Query(#[from] diesel::result::Error),
    /// A stored value could not be read back.
    #[error("the local store holds an unreadable {what}: {message}")]
    Corrupt { what: &'static str, message: String },
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
}

impl VerifierState {
    /// The salt's bytes.
    pub fn salt_bytes(&self) -> Vec<u8> {
        (0..self.salt.len() / 2)
            .filter_map(|i| u8::from_str_radix(&self.salt[2 * i..2 * i + 2], 16).ok())
            .collect()
    }
}

/// Figures drained from memory, to be added to the tables.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Flush {
    pub usage: Vec<UsageCount>,
    pub performance: Vec<RoutePerformance>,
    pub errors: Vec<ErrorGroup>,
    pub sessions: Sessions,
    pub dropped: Dropped,
    pub redactions: BTreeMap<String, u64>,
    /// Salted hashes of the user ids seen.
    pub users: Vec<String>,
    /// The latest result of each health check.
    pub health: BTreeMap<String, Health>,
}

impl Flush {
    pub fn is_empty(&self) -> bool {
        self.usage.is_empty()
            && self.performance.is_empty()
            && self.errors.is_empty()
            && self.sessions.count == 0
            && self.dropped == Dropped::default()
            && self.redactions.values().all(|&v| v == 0)
            && self.users.is_empty()
            && self.health.is_empty()
    }
}

/// A batch ready to send: the outbox row.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Serialize)]
#[diesel(table_name = telemetry_outbox)]
pub struct Outgoing {
    pub batch_id: String,
    #[serde(with = "naive_rfc3339")]
    pub created_at: NaiveDateTime,
    /// The exact bytes sent as the request's `telemetry` value.
    pub payload: String,
    pub digest: String,
    /// Attempts made so far to send it.
    pub attempts: i32,
}

/// A batch the server acknowledged, byte for byte.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Serialize)]
#[diesel(table_name = telemetry_batches)]
pub struct LedgerEntry {
    pub batch_id: String,
    #[serde(with = "naive_rfc3339")]
    pub acknowledged_at: NaiveDateTime,
    pub payload: String,
    pub digest: String,
}

/// A row of `telemetry_events`.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Insertable, Serialize)]
#[diesel(table_name = telemetry_events)]
pub struct EventRow {
    #[serde(with = "naive_rfc3339")]
    pub period_start: NaiveDateTime,
    pub kind: String,
    pub name: String,
    pub batch_id: String,
    pub count: i64,
}

/// A row of `telemetry_performance`.
#[derive(Debug, Clone, PartialEq, Queryable, Selectable, Insertable, Serialize)]
#[diesel(table_name = telemetry_performance)]
pub struct PerformanceRow {
    #[serde(with = "naive_rfc3339")]
    pub period_start: NaiveDateTime,
    pub method: String,
    pub route: String,
    pub batch_id: String,
    pub count: i64,
    pub errors: i64,
    pub max_ms: f64,
    pub sketch: String,
}

/// A row of `telemetry_errors`.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Insertable, Serialize)]
#[diesel(table_name = telemetry_errors)]
pub struct ErrorRow {
    pub fingerprint: String,
    pub batch_id: String,
    pub error_type: String,
    pub message: String,
    pub stack: String,
    pub count: i64,
    #[serde(with = "naive_rfc3339")]
    pub first_seen: NaiveDateTime,
    #[serde(with = "naive_rfc3339")]
    pub last_seen: NaiveDateTime,
}

/// A row of `telemetry_sessions`.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Insertable, Serialize)]
#[diesel(table_name = telemetry_sessions)]
pub struct SessionRow {
    #[serde(with = "naive_rfc3339")]
    pub period_start: NaiveDateTime,
    pub batch_id: String,
    pub count: i64,
    pub total_duration_s: i64,
    pub hourly: String,
}

/// Everything the store holds about telemetry, for `licensor telemetry export`.
#[derive(Debug, Clone, Serialize)]
pub struct Export {
    pub events: Vec<EventRow>,
    pub performance: Vec<PerformanceRow>,
    pub errors: Vec<ErrorRow>,
    pub sessions: Vec<SessionRow>,
    pub tallies: BTreeMap<String, i64>,
    pub outbox: Option<Outgoing>,
    pub ledger: Vec<LedgerEntry>,
}

/// A route's figures over a window, sketches merged.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RouteSummary {
    pub method: String,
    pub route: String,
    pub count: u64,
    pub errors: u64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// What the store holds for the last hours, for the host application's summary route.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    #[serde(with = "crate::time::rfc3339")]
    pub since: DateTime<Utc>,
    pub usage: Vec<UsageCount>,
    pub performance: Vec<RouteSummary>,
    pub errors: Vec<ErrorGroup>,
    pub sessions: Sessions,
}

/// What a roll-up did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RollUp {
    /// Rows merged into coarser periods.
    pub merged: u64,
    /// Rows removed (sent long ago, or past the bound).
    pub removed: u64,
    /// Unsent events removed past the bound, counted as dropped.
    pub dropped: u64,
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
                        .map_err(|e| LocalError::Open { path: path.clone(), message: e.to_string() })?;
                }
                Err(e) => return Err(LocalError::Open { path: path.clone(), message: e.to_string() }),
            }
        }
        let url = path.to_str().ok_or_else(|| LocalError::Open {
            path: path.clone(),
            message: "the path is not valid UTF-8".into(),
        })?;
        let mut conn = SqliteConnection::establish(url)
            .map_err(|e| LocalError::Open { path: path.clone(), message: e.to_string() })?;
        // WAL lets the `licensor telemetry` commands read while the application writes; the
        // busy timeout makes two writers wait for each other instead of failing.
        conn.batch_execute(
            "PRAGMA busy_timeout = 5000; PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;",
        )
        .map_err(|e| LocalError::Open { path: path.clone(), message: e.to_string() })?;
        conn.run_pending_migrations(MIGRATIONS)
            .map_err(|e| LocalError::Migrate { path: path.clone(), message: e.to_string() })?;
        Ok(LocalStore { conn: Mutex::new(conn), path })
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
                salt: salt.iter().map(|b| format!("{b:02x}")).collect(),
                first_started_at: naive(now),
                period_start: naive(now),
                last_server_time: None,
                lease: None,
                last_check_in_at: None,
                last_result: None,
                next_check_in_at: None,
            };
            diesel::insert_into(verifier_state::table).values(&state).execute(c)?;
            Ok(state)
        })
    }

    /// The verifier's state, if it was ever created (the CLI reads without creating).
    pub fn state(&self) -> Result<Option<VerifierState>, LocalError> {
        Ok(verifier_state::table.select(VerifierState::as_select()).first(&mut *self.conn()).optional()?)
    }

    /// Adds flushed figures to the tables, in the hour bucket of `now`.
    pub fn record(&self, flush: &Flush, now: DateTime<Utc>, limits: &BatchLimits) -> Result<(), LocalError> {
        if flush.is_empty() {
            return Ok(());
        }
        let bucket = hour_of(now);
        let mut conn = self.conn();
        conn.immediate_transaction(|c| {
            for u in &flush.usage {
                diesel::insert_into(telemetry_events::table)
                    .values(EventRow {
                        period_start: bucket,
                        kind: u.kind.as_str().into(),
                        name: u.name.clone(),
                        batch_id: String::new(),
                        count: clamp(u.count),
                    })
                    .on_conflict((
                        telemetry_events::period_start,
                        telemetry_events::kind,
                        telemetry_events::name,
                        telemetry_events::batch_id,
                    ))
                    .do_update()
                    .set(
                        telemetry_events::count
                            .eq(telemetry_events::count + excluded(telemetry_events::count)),
                    )
                    .execute(c)?;
            }
            for r in &flush.performance {
                record_route(c, bucket, r)?;
            }
            let mut overflow = flush.dropped.overflow;
            for e in &flush.errors {
                overflow += record_error(c, e, limits.max_errors)?;
            }
            if flush.sessions.count > 0 {
                record_sessions(c, bucket, "", &flush.sessions)?;
            }
            let tallies = [
                ("dropped.sampled".to_string(), flush.dropped.sampled),
                ("dropped.throttled".to_string(), flush.dropped.throttled),
                ("dropped.overflow".to_string(), overflow),
            ];
            let redactions = flush.redactions.iter().map(|(rule, n)| (format!("redaction.{rule}"), *n));
            for (name, value) in tallies.into_iter().chain(redactions).filter(|(_, v)| *v > 0) {
                add_tally(c, &name, clamp(value))?;
            }
            for user in &flush.users {
                diesel::insert_into(telemetry_users::table)
                    .values((telemetry_users::user_hash.eq(user), telemetry_users::last_seen.eq(naive(now))))
                    .on_conflict(telemetry_users::user_hash)
                    .do_update()
                    .set(telemetry_users::last_seen.eq(naive(now)))
                    .execute(c)?;
            }
            for (name, health) in &flush.health {
                let status = health.as_str();
                diesel::insert_into(telemetry_health::table)
                    .values((
                        telemetry_health::name.eq(name),
                        telemetry_health::status.eq(status),
                        telemetry_health::checked_at.eq(naive(now)),
                    ))
                    .on_conflict(telemetry_health::name)
                    .do_update()
                    .set((telemetry_health::status.eq(status), telemetry_health::checked_at.eq(naive(now))))
                    .execute(c)?;
            }
            Ok(())
        })
    }

    /// The batch to send next: the outbox row if there is one (a retry sends it again, same
    /// id, same bytes), otherwise a new batch assembled from every row not yet in a batch,
    /// written to the outbox in the same transaction. `environment`'s user-count range and
    /// health are filled in from the tables.
    pub fn next_batch(
        &self,
        environment: Environment,
        now: DateTime<Utc>,
        limits: &BatchLimits,
    ) -> Result<Outgoing, LocalError> {
        let mut conn = self.conn();
        conn.immediate_transaction(|c| {
            if let Some(mut out) =
                telemetry_outbox::table.select(Outgoing::as_select()).first(c).optional()?
            {
                diesel::update(telemetry_outbox::table.find(&out.batch_id))
                    .set(telemetry_outbox::attempts.eq(telemetry_outbox::attempts + 1))
                    .execute(c)?;
                out.attempts += 1;
                return Ok(out);
            }
            let batch_id = uuid::Uuid::new_v4();
            let batch = assemble(c, batch_id, environment, now, limits)?;
            let payload = serde_json::to_string(&batch)
                .map_err(|e| LocalError::Corrupt { what: "batch", message: e.to_string() })?;
            let id = batch_id.to_string();
            for table in
                ["telemetry_events", "telemetry_performance", "telemetry_errors", "telemetry_sessions"]
            {
                diesel::sql_query(format!("UPDATE {table} SET batch_id = $1 WHERE batch_id = ''"))
                    .bind::<diesel::sql_types::Text, _>(&id)
                    .execute(c)?;
            }
            diesel::delete(telemetry_tallies::table).execute(c)?;
            diesel::update(verifier_state::table)
                .set(verifier_state::period_start.eq(naive(now)))
                .execute(c)?;
            let out = Outgoing {
                batch_id: id,
                created_at: naive(now),
                digest: protocol::digest(payload.as_bytes()),
                payload,
                attempts: 1,
            };
            diesel::insert_into(telemetry_outbox::table)
                .values((
                    telemetry_outbox::batch_id.eq(&out.batch_id),
                    telemetry_outbox::created_at.eq(out.created_at),
                    telemetry_outbox::payload.eq(&out.payload),
                    telemetry_outbox::digest.eq(&out.digest),
                    telemetry_outbox::attempts.eq(out.attempts),
                ))
                .execute(c)?;
            Ok(out)
        })
    }

    /// What `next_batch` would send now, without changing anything: the outbox row, or a
    /// batch assembled in a transaction that is rolled back (its id and `period_end` are the
    /// only parts that will differ when it is really assembled).
    pub fn preview(
        &self,
        environment: Environment,
        now: DateTime<Utc>,
        limits: &BatchLimits,
    ) -> Result<String, LocalError> {
        let mut conn = self.conn();
        if let Some(out) =
            telemetry_outbox::table.select(Outgoing::as_select()).first(&mut *conn).optional()?
        {
            return Ok(out.payload);
        }
        let batch = assemble(&mut conn, uuid::Uuid::new_v4(), environment, now, limits)?;
        serde_json::to_string(&batch)
            .map_err(|e| LocalError::Corrupt { what: "batch", message: e.to_string() })
    }

    /// The outbox row, if a batch is waiting to be acknowledged.
    pub fn outbox(&self) -> Result<Option<Outgoing>, LocalError> {
        Ok(telemetry_outbox::table.select(Outgoing::as_select()).first(&mut *self.conn()).optional()?)
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
                ))
                .execute(c)?;
            if let Some(batch_id) = &outcome.acknowledged {
                acknowledge(c, batch_id, now)?;
            }
            Ok(())
        })
    }

    /// Lets the outbox batch go without sending it and without counting it as dropped: it was
    /// shown to the operator instead (`LICENSOR_TELEMETRY_DEBUG`).
    pub fn release_outbox(&self, batch_id: &str) -> Result<bool, LocalError> {
        Ok(diesel::delete(telemetry_outbox::table.find(batch_id)).execute(&mut *self.conn())? > 0)
    }

    /// The ledger, newest first.
    pub fn ledger(&self) -> Result<Vec<LedgerEntry>, LocalError> {
        Ok(telemetry_batches::table
            .select(LedgerEntry::as_select())
            .order((telemetry_batches::acknowledged_at.desc(), telemetry_batches::batch_id))
            .load(&mut *self.conn())?)
    }

    /// Everything held about telemetry.
    pub fn export(&self) -> Result<Export, LocalError> {
        let mut conn = self.conn();
        conn.transaction(|c| {
            Ok(Export {
                events: telemetry_events::table
                    .select(EventRow::as_select())
                    .order((telemetry_events::period_start, telemetry_events::kind, telemetry_events::name))
                    .load(c)?,
                performance: telemetry_performance::table
                    .select(PerformanceRow::as_select())
                    .order((telemetry_performance::period_start, telemetry_performance::route))
                    .load(c)?,
                errors: telemetry_errors::table
                    .select(ErrorRow::as_select())
                    .order(telemetry_errors::first_seen)
                    .load(c)?,
                sessions: telemetry_sessions::table
                    .select(SessionRow::as_select())
                    .order(telemetry_sessions::period_start)
                    .load(c)?,
                tallies: telemetry_tallies::table
                    .select((telemetry_tallies::name, telemetry_tallies::value))
                    .load::<(String, i64)>(c)?
                    .into_iter()
                    .collect(),
                outbox: telemetry_outbox::table.select(Outgoing::as_select()).first(c).optional()?,
                ledger: telemetry_batches::table
                    .select(LedgerEntry::as_select())
                    .order(telemetry_batches::acknowledged_at.desc())
                    .load(c)?,
            })
        })
    }

    /// Deletes every telemetry figure held (and the outbox), and with `ledger` the ledger too.
    /// The verifier's state (instance id, lease) stays. Returns the rows deleted.
    pub fn clear(&self, ledger: bool) -> Result<usize, LocalError> {
        let mut conn = self.conn();
        conn.immediate_transaction(|c| {
            let mut n = diesel::delete(telemetry_events::table).execute(c)?;
            n += diesel::delete(telemetry_performance::table).execute(c)?;
            n += diesel::delete(telemetry_errors::table).execute(c)?;
            n += diesel::delete(telemetry_sessions::table).execute(c)?;
            n += diesel::delete(telemetry_tallies::table).execute(c)?;
            n += diesel::delete(telemetry_users::table).execute(c)?;
            n += diesel::delete(telemetry_health::table).execute(c)?;
            n += diesel::delete(telemetry_outbox::table).execute(c)?;
            if ledger {
                n += diesel::delete(telemetry_batches::table).execute(c)?;
            }
            Ok(n)
        })
    }

    /// The figures of the last `hours` (by hour bucket, so up to an hour more), sent or not.
    pub fn summary(&self, hours: u32, now: DateTime<Utc>) -> Result<Summary, LocalError> {
        let since = now - chrono::Duration::hours(i64::from(hours));
        let from = hour_of(since);
        let mut conn = self.conn();
        conn.transaction(|c| {
            let events: Vec<EventRow> = telemetry_events::table
                .filter(telemetry_events::period_start.ge(from))
                .select(EventRow::as_select())
                .load(c)?;
            let routes: Vec<PerformanceRow> = telemetry_performance::table
                .filter(telemetry_performance::period_start.ge(from))
                .select(PerformanceRow::as_select())
                .load(c)?;
            let errors: Vec<ErrorRow> = telemetry_errors::table
                .filter(telemetry_errors::last_seen.ge(naive(since)))
                .select(ErrorRow::as_select())
                .load(c)?;
            let sessions: Vec<SessionRow> = telemetry_sessions::table
                .filter(telemetry_sessions::period_start.ge(from))
                .select(SessionRow::as_select())
                .load(c)?;
            let mut usage = sum_usage(&events);
            usage.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.name.cmp(&b.name)));
            let performance = merge_routes(&routes)?
                .into_iter()
                .map(|r| RouteSummary {
                    method: r.method,
                    route: r.route,
                    count: r.count,
                    errors: r.errors,
                    p50_ms: r.p50_ms,
                    p95_ms: r.p95_ms,
                    p99_ms: r.p99_ms,
                    max_ms: r.max_ms,
                })
                .collect();
            Ok(Summary {
                since,
                usage,
                performance,
                errors: merge_errors(&errors)?,
                sessions: sum_sessions(&sessions)?,
            })
        })
    }

    /// Rolls old rows up into coarser periods (hourly rows older than two days into days, daily
    /// rows older than sixty days into months), removes sent rows older than
    /// [`SENT_KEPT_FOR`], and keeps each table within [`MAX_ROWS`], counting unsent events
    /// removed as dropped. Nothing unsent is lost by the roll-up itself: counts are summed and
    /// sketches merged.
    pub fn roll_up(&self, now: DateTime<Utc>) -> Result<RollUp, LocalError> {
        self.roll_up_within(now, MAX_ROWS)
    }

    /// [`LocalStore::roll_up`] with another bound on rows per table.
    pub fn roll_up_within(&self, now: DateTime<Utc>, max_rows: i64) -> Result<RollUp, LocalError> {
        let mut conn = self.conn();
        conn.immediate_transaction(|c| {
            let mut outcome = RollUp::default();
            let hourly_until = naive(now - HOURLY_FOR);
            let daily_until = naive(now - DAILY_FOR);
            // Decided by the day bucket, not the row's own time, so that rolling up again
            // moves nothing: a day bucket before the monthly line always becomes its month.
            let coarse = |t: NaiveDateTime| if day_of(t) < daily_until { month_of(t) } else { day_of(t) };

            // Events.
            let old: Vec<EventRow> = telemetry_events::table
                .filter(telemetry_events::period_start.lt(hourly_until))
                .select(EventRow::as_select())
                .load(c)?;
            let mut merged: BTreeMap<(NaiveDateTime, String, String, String), i64> = BTreeMap::new();
            for r in &old {
                *merged
                    .entry((coarse(r.period_start), r.kind.clone(), r.name.clone(), r.batch_id.clone()))
                    .or_default() += r.count;
            }
            if rewrite_needed(merged.len(), old.iter().map(|r| r.period_start), coarse) {
                outcome.merged += (old.len() - merged.len()) as u64;
                diesel::delete(
                    telemetry_events::table.filter(telemetry_events::period_start.lt(hourly_until)),
                )
                .execute(c)?;
                let rows: Vec<EventRow> = merged
                    .into_iter()
                    .map(|((period_start, kind, name, batch_id), count)| EventRow {
                        period_start,
                        kind,
                        name,
                        batch_id,
                        count,
                    })
                    .collect();
                for chunk in rows.chunks(500) {
                    diesel::insert_into(telemetry_events::table).values(chunk).execute(c)?;
                }
            }

            // Routes: sketches merge exactly.
            let old: Vec<PerformanceRow> = telemetry_performance::table
                .filter(telemetry_performance::period_start.lt(hourly_until))
                .select(PerformanceRow::as_select())
                .load(c)?;
            let mut merged: BTreeMap<(NaiveDateTime, String, String, String), (PerformanceRow, Sketch)> =
                BTreeMap::new();
            for r in &old {
                let sketch = decode_sketch(&r.sketch)?;
                let key = (coarse(r.period_start), r.method.clone(), r.route.clone(), r.batch_id.clone());
                match merged.get_mut(&key) {
                    Some((m, s)) => {
                        m.count += r.count;
                        m.errors += r.errors;
                        m.max_ms = m.max_ms.max(r.max_ms);
                        s.merge(&sketch).map_err(|e| corrupt("sketch", e))?;
                    }
                    None => {
                        let mut row = r.clone();
                        row.period_start = key.0;
                        merged.insert(key, (row, sketch));
                    }
                }
            }
            if rewrite_needed(merged.len(), old.iter().map(|r| r.period_start), coarse) {
                outcome.merged += (old.len() - merged.len()) as u64;
                diesel::delete(
                    telemetry_performance::table.filter(telemetry_performance::period_start.lt(hourly_until)),
                )
                .execute(c)?;
                for (_, (mut row, sketch)) in merged {
                    row.sketch = sketch.encode();
                    diesel::insert_into(telemetry_performance::table).values(&row).execute(c)?;
                }
            }

            // Sessions.
            let old: Vec<SessionRow> = telemetry_sessions::table
                .filter(telemetry_sessions::period_start.lt(hourly_until))
                .select(SessionRow::as_select())
                .load(c)?;
            let mut merged: BTreeMap<(NaiveDateTime, String), Sessions> = BTreeMap::new();
            for r in &old {
                let entry = merged.entry((coarse(r.period_start), r.batch_id.clone())).or_default();
                add_sessions(entry, &session_of(r)?);
            }
            if rewrite_needed(merged.len(), old.iter().map(|r| r.period_start), coarse) {
                outcome.merged += (old.len() - merged.len()) as u64;
                diesel::delete(
                    telemetry_sessions::table.filter(telemetry_sessions::period_start.lt(hourly_until)),
                )
                .execute(c)?;
                for ((period_start, batch_id), s) in merged {
                    record_sessions(c, period_start, &batch_id, &s)?;
                }
            }

            // Sent long ago: kept no longer.
            let sent_until = naive(now - SENT_KEPT_FOR);
            outcome.removed += diesel::delete(
                telemetry_events::table
                    .filter(telemetry_events::batch_id.ne(""))
                    .filter(telemetry_events::period_start.lt(sent_until)),
            )
            .execute(c)? as u64;
            outcome.removed += diesel::delete(
                telemetry_performance::table
                    .filter(telemetry_performance::batch_id.ne(""))
                    .filter(telemetry_performance::period_start.lt(sent_until)),
            )
            .execute(c)? as u64;
            outcome.removed += diesel::delete(
                telemetry_sessions::table
                    .filter(telemetry_sessions::batch_id.ne(""))
                    .filter(telemetry_sessions::period_start.lt(sent_until)),
            )
            .execute(c)? as u64;
            outcome.removed += diesel::delete(
                telemetry_errors::table
                    .filter(telemetry_errors::batch_id.ne(""))
                    .filter(telemetry_errors::last_seen.lt(sent_until)),
            )
            .execute(c)? as u64;
            diesel::delete(
                telemetry_users::table
                    .filter(telemetry_users::last_seen.lt(naive(now - ACTIVE_USERS_WINDOW))),
            )
            .execute(c)?;

            // The hard bound: the oldest rows go, sent ones first; unsent events lost are
            // counted.
            let events: i64 = telemetry_events::table.count().get_result(c)?;
            if events > max_rows {
                let excess = events - max_rows;
                let victims: Vec<EventRow> = telemetry_events::table
                    .select(EventRow::as_select())
                    .order(((telemetry_events::batch_id.eq("")), telemetry_events::period_start))
                    .limit(excess)
                    .load(c)?;
                let mut lost = 0;
                for v in &victims {
                    diesel::delete(telemetry_events::table.find((
                        v.period_start,
                        &v.kind,
                        &v.name,
                        &v.batch_id,
                    )))
                    .execute(c)?;
                    if v.batch_id.is_empty() {
                        lost += v.count;
                    }
                }
                outcome.removed += victims.len() as u64;
                outcome.dropped += lost as u64;
                if lost > 0 {
                    add_tally(c, "dropped.overflow", lost)?;
                }
            }
            for table in ["telemetry_performance", "telemetry_sessions"] {
                let removed = diesel::sql_query(format!(
                    "DELETE FROM {table} WHERE rowid IN (SELECT rowid FROM {table} ORDER BY batch_id = '', \
                     period_start LIMIT max(0, (SELECT count(*) FROM {table}) - $1))"
                ))
                .bind::<diesel::sql_types::BigInt, _>(max_rows)
                .execute(c)?;
                outcome.removed += removed as u64;
            }
            Ok(outcome)
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
}

/// Whether rolled-up rows differ from the rows read: fewer of them, or any moved to a coarser
/// period.
fn rewrite_needed(
    merged: usize,
    starts: impl ExactSizeIterator<Item = NaiveDateTime>,
    coarse: impl Fn(NaiveDateTime) -> NaiveDateTime,
) -> bool {
    let read = starts.len();
    let mut starts = starts;
    merged < read || starts.any(|t| coarse(t) != t)
}

fn clamp(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn corrupt(what: &'static str, e: impl std::fmt::Display) -> LocalError {
    LocalError::Corrupt { what, message: e.to_string() }
}

fn decode_sketch(text: &str) -> Result<Sketch, LocalError> {
    if text.is_empty() {
        return Ok(Sketch::default());
    }
    Sketch::decode(text).map_err(|e| corrupt("sketch", e))
}

fn add_tally(c: &mut SqliteConnection, name: &str, value: i64) -> QueryResult<usize> {
    diesel::insert_into(telemetry_tallies::table)
        .values((telemetry_tallies::name.eq(name), telemetry_tallies::value.eq(value)))
        .on_conflict(telemetry_tallies::name)
        .do_update()
        .set(telemetry_tallies::value.eq(telemetry_tallies::value + excluded(telemetry_tallies::value)))
        .execute(c)
}

fn record_route(
    c: &mut SqliteConnection,
    bucket: NaiveDateTime,
    r: &RoutePerformance,
) -> Result<(), LocalError> {
    let key = (bucket, r.method.as_str(), r.route.as_str(), "");
    let existing: Option<PerformanceRow> =
        telemetry_performance::table.find(key).select(PerformanceRow::as_select()).first(c).optional()?;
    let incoming = decode_sketch(&r.sketch)?;
    match existing {
        Some(row) => {
            let mut sketch = decode_sketch(&row.sketch)?;
            sketch.merge(&incoming).map_err(|e| corrupt("sketch", e))?;
            diesel::update(telemetry_performance::table.find(key))
                .set((
                    telemetry_performance::count.eq(row.count + clamp(r.count)),
                    telemetry_performance::errors.eq(row.errors + clamp(r.errors)),
                    telemetry_performance::max_ms.eq(row.max_ms.max(r.max_ms)),
                    telemetry_performance::sketch.eq(sketch.encode()),
                ))
                .execute(c)?;
        }
        None => {
            diesel::insert_into(telemetry_performance::table)
                .values(PerformanceRow {
                    period_start: bucket,
                    method: r.method.clone(),
                    route: r.route.clone(),
                    batch_id: String::new(),
                    count: clamp(r.count),
                    errors: clamp(r.errors),
                    max_ms: r.max_ms,
                    sketch: incoming.encode(),
                })
                .execute(c)?;
        }
    }
    Ok(())
}

/// Adds an error group; returns the events not kept because the bound on distinct unsent
/// groups was reached.
fn record_error(c: &mut SqliteConnection, e: &ErrorGroup, max_errors: usize) -> Result<u64, LocalError> {
    let key = (e.fingerprint.as_str(), "");
    let existing: Option<ErrorRow> =
        telemetry_errors::table.find(key).select(ErrorRow::as_select()).first(c).optional()?;
    match existing {
        Some(row) => {
            diesel::update(telemetry_errors::table.find(key))
                .set((
                    telemetry_errors::count.eq(row.count + clamp(e.count)),
                    telemetry_errors::first_seen.eq(row.first_seen.min(naive(e.first_seen))),
                    telemetry_errors::last_seen.eq(row.last_seen.max(naive(e.last_seen))),
                ))
                .execute(c)?;
        }
        None => {
            let unsent: i64 =
                telemetry_errors::table.filter(telemetry_errors::batch_id.eq("")).count().get_result(c)?;
            if unsent as usize >= max_errors {
                return Ok(e.count);
            }
            diesel::insert_into(telemetry_errors::table)
                .values(ErrorRow {
                    fingerprint: e.fingerprint.clone(),
                    batch_id: String::new(),
                    error_type: e.error_type.clone(),
                    message: e.message.clone(),
                    stack: serde_json::to_string(&e.stack).map_err(|err| corrupt("stack", err))?,
                    count: clamp(e.count),
                    first_seen: naive(e.first_seen),
                    last_seen: naive(e.last_seen),
                })
                .execute(c)?;
        }
    }
    Ok(0)
}

fn session_of(r: &SessionRow) -> Result<Sessions, LocalError> {
    Ok(Sessions {
        count: r.count.max(0) as u64,
        total_duration_s: r.total_duration_s.max(0) as u64,
        hourly: serde_json::from_str(&r.hourly).map_err(|e| corrupt("session hours", e))?,
    })
}

fn add_sessions(into: &mut Sessions, s: &Sessions) {
    into.count += s.count;
    into.total_duration_s += s.total_duration_s;
    for (a, b) in into.hourly.iter_mut().zip(s.hourly) {
        *a += b;
    }
}

fn record_sessions(
    c: &mut SqliteConnection,
    bucket: NaiveDateTime,
    batch_id: &str,
    s: &Sessions,
) -> Result<(), LocalError> {
    let key = (bucket, batch_id);
    let existing: Option<SessionRow> =
        telemetry_sessions::table.find(key).select(SessionRow::as_select()).first(c).optional()?;
    let mut total = match &existing {
        Some(row) => session_of(row)?,
        None => Sessions::default(),
    };
    add_sessions(&mut total, s);
    let row = SessionRow {
        period_start: bucket,
        batch_id: batch_id.into(),
        count: clamp(total.count),
        total_duration_s: clamp(total.total_duration_s),
        hourly: serde_json::to_string(&total.hourly).map_err(|e| corrupt("session hours", e))?,
    };
    if existing.is_some() {
        diesel::update(telemetry_sessions::table.find(key))
            .set((
                telemetry_sessions::count.eq(row.count),
                telemetry_sessions::total_duration_s.eq(row.total_duration_s),
                telemetry_sessions::hourly.eq(&row.hourly),
            ))
            .execute(c)?;
    } else {
        diesel::insert_into(telemetry_sessions::table).values(&row).execute(c)?;
    }
    Ok(())
}

fn sum_usage(rows: &[EventRow]) -> Vec<UsageCount> {
    let mut sums: BTreeMap<(UsageKind, &str), u64> = BTreeMap::new();
    for r in rows {
        // A kind this build does not know cannot have been written by it; skip it.
        if let Some(kind) = UsageKind::parse(&r.kind) {
            *sums.entry((kind, r.name.as_str())).or_default() += r.count.max(0) as u64;
        }
    }
    sums.into_iter().map(|((kind, name), count)| UsageCount { kind, name: name.into(), count }).collect()
}

fn merge_routes(rows: &[PerformanceRow]) -> Result<Vec<RoutePerformance>, LocalError> {
    let mut merged: BTreeMap<(&str, &str), (u64, u64, f64, Sketch)> = BTreeMap::new();
    for r in rows {
        let sketch = decode_sketch(&r.sketch)?;
        match merged.get_mut(&(r.method.as_str(), r.route.as_str())) {
            Some((count, errors, max, s)) => {
                *count += r.count.max(0) as u64;
                *errors += r.errors.max(0) as u64;
                *max = max.max(r.max_ms);
                s.merge(&sketch).map_err(|e| corrupt("sketch", e))?;
            }
            None => {
                merged.insert(
                    (r.method.as_str(), r.route.as_str()),
                    (r.count.max(0) as u64, r.errors.max(0) as u64, r.max_ms, sketch),
                );
            }
        }
    }
    Ok(merged
        .into_iter()
        .map(|((method, route), (count, errors, max_ms, sketch))| {
            RoutePerformance::from_sketch(method.into(), route.into(), count, errors, max_ms, &sketch)
        })
        .collect())
}

fn merge_errors(rows: &[ErrorRow]) -> Result<Vec<ErrorGroup>, LocalError> {
    let mut merged: BTreeMap<&str, ErrorGroup> = BTreeMap::new();
    for r in rows {
        match merged.get_mut(r.fingerprint.as_str()) {
            Some(g) => {
                g.count += r.count.max(0) as u64;
                g.first_seen = g.first_seen.min(utc(r.first_seen));
                g.last_seen = g.last_seen.max(utc(r.last_seen));
            }
            None => {
                merged.insert(
                    &r.fingerprint,
                    ErrorGroup {
                        fingerprint: r.fingerprint.clone(),
                        error_type: r.error_type.clone(),
                        message: r.message.clone(),
                        stack: serde_json::from_str(&r.stack).map_err(|e| corrupt("stack", e))?,
                        count: r.count.max(0) as u64,
                        first_seen: utc(r.first_seen),
                        last_seen: utc(r.last_seen),
                    },
                );
            }
        }
    }
    let mut groups: Vec<ErrorGroup> = merged.into_values().collect();
    groups.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.fingerprint.cmp(&b.fingerprint)));
    Ok(groups)
}

fn sum_sessions(rows: &[SessionRow]) -> Result<Sessions, LocalError> {
    let mut total = Sessions::default();
    for r in rows {
        add_sessions(&mut total, &session_of(r)?);
    }
    Ok(total)
}

/// Keeps the `limit` largest entries by `weight` (ties by their order), returning the rest's
/// total weight.
fn keep_largest<T>(items: &mut Vec<T>, limit: usize, weight: impl Fn(&T) -> u64) -> u64 {
    if items.len() <= limit {
        return 0;
    }
    items.sort_by_key(|item| std::cmp::Reverse(weight(item)));
    let rest: u64 = items[limit..].iter().map(&weight).sum();
    items.truncate(limit);
    rest
}

/// Builds a batch from every row not yet in one.
fn assemble(
    c: &mut SqliteConnection,
    batch_id: uuid::Uuid,
    mut environment: Environment,
    now: DateTime<Utc>,
    limits: &BatchLimits,
) -> Result<TelemetryBatch, LocalError> {
    let state: VerifierState = verifier_state::table.select(VerifierState::as_select()).first(c)?;
    let events: Vec<EventRow> = telemetry_events::table
        .filter(telemetry_events::batch_id.eq(""))
        .select(EventRow::as_select())
        .load(c)?;
    let routes: Vec<PerformanceRow> = telemetry_performance::table
        .filter(telemetry_performance::batch_id.eq(""))
        .select(PerformanceRow::as_select())
        .load(c)?;
    let errors: Vec<ErrorRow> = telemetry_errors::table
        .filter(telemetry_errors::batch_id.eq(""))
        .select(ErrorRow::as_select())
        .load(c)?;
    let sessions: Vec<SessionRow> = telemetry_sessions::table
        .filter(telemetry_sessions::batch_id.eq(""))
        .select(SessionRow::as_select())
        .load(c)?;
    let tallies: Vec<(String, i64)> =
        telemetry_tallies::table.select((telemetry_tallies::name, telemetry_tallies::value)).load(c)?;
    let users: i64 = telemetry_users::table
        .filter(telemetry_users::last_seen.ge(naive(now - ACTIVE_USERS_WINDOW)))
        .count()
        .get_result(c)?;
    let health: Vec<(String, String)> =
        telemetry_health::table.select((telemetry_health::name, telemetry_health::status)).load(c)?;

    let mut usage = sum_usage(&events);
    let mut performance = merge_routes(&routes)?;
    let mut error_groups = merge_errors(&errors)?;
    let mut dropped = Dropped::default();
    let mut redactions = BTreeMap::new();
    for (name, value) in tallies {
        let value = value.max(0) as u64;
        match name.as_str() {
            "dropped.sampled" => dropped.sampled += value,
            "dropped.throttled" => dropped.throttled += value,
            "dropped.overflow" => dropped.overflow += value,
            other => {
                if let Some(rule) = other.strip_prefix("redaction.") {
                    redactions.insert(rule.to_string(), value);
                }
            }
        }
    }
    // The server's limits on lists: the largest are kept, the rest counted as dropped.
    dropped.overflow += keep_largest(&mut usage, limits.max_usage, |u| u.count);
    dropped.overflow += keep_largest(&mut performance, limits.max_routes, |r| r.count);
    dropped.overflow += keep_largest(&mut error_groups, limits.max_errors, |e| e.count);
    usage.sort_by(|a, b| (a.kind, &a.name).cmp(&(b.kind, &b.name)));
    environment.user_count_range = UserCountRange::of(users.max(1) as u64);
    environment.health = health
        .into_iter()
        .filter_map(|(name, status)| Health::parse(&status).map(|h| (name, h)))
        .take(limits.max_health)
        .collect();
    Ok(TelemetryBatch {
        schema: TELEMETRY_SCHEMA,
        batch_id,
        period_start: utc(state.period_start).min(now),
        period_end: now,
        environment,
        usage,
        performance,
        errors: error_groups,
        sessions: sum_sessions(&sessions)?,
        dropped,
        redactions,
    })
}

fn acknowledge(c: &mut SqliteConnection, batch_id: &str, now: DateTime<Utc>) -> Result<(), LocalError> {
    let Some(out) =
        telemetry_outbox::table.find(batch_id).select(Outgoing::as_select()).first(c).optional()?
    else {
        return Ok(());
    };
    diesel::insert_into(telemetry_batches::table)
        .values((
            telemetry_batches::batch_id.eq(&out.batch_id),
            telemetry_batches::acknowledged_at.eq(naive(now)),
            telemetry_batches::payload.eq(&out.payload),
            telemetry_batches::digest.eq(&out.digest),
        ))
        .on_conflict_do_nothing()
        .execute(c)?;
    diesel::delete(telemetry_outbox::table.find(batch_id)).execute(c)?;
    diesel::sql_query(
        "DELETE FROM telemetry_batches WHERE batch_id NOT IN \
         (SELECT batch_id FROM telemetry_batches ORDER BY acknowledged_at DESC, batch_id LIMIT $1)",
    )
    .bind::<diesel::sql_types::BigInt, _>(LEDGER_MAX)
    .execute(c)?;
    Ok(())
}

/// Stored (naive UTC) times as RFC 3339, for exports.
mod naive_rfc3339 {
    use chrono::NaiveDateTime;
    use serde::Serializer;

    pub fn serialize<S: Serializer>(t: &NaiveDateTime, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&crate::time::format(&super::utc(*t)))
    }
}
