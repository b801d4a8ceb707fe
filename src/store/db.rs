//! The server's database: connections to either backend, the pool, migrations.

use diesel::connection::SimpleConnection as _;
use diesel::pg::PgConnection;
use diesel::r2d2::{self, ManageConnection};
use diesel::sqlite::SqliteConnection;
use diesel::Connection as _;
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness as _};
use std::path::PathBuf;
use std::time::Duration;

/// A connection to either backend.
#[derive(diesel::MultiConnection)]
pub enum DbConnection {
    Sqlite(SqliteConnection),
    Postgresql(PgConnection),
}

/// Runs `$body` with `$c` bound to the inner connection of either backend. The body is
/// compiled once per backend, so a query the enum cannot express is still written once.
macro_rules! on_backend {
    ($conn:expr, $c:ident => $body:expr) => {
        match $conn {
            $crate::store::DbConnection::Sqlite($c) => $body,
            $crate::store::DbConnection::Postgresql($c) => $body,
        }
    };
}
pub(crate) use on_backend;

/// Runs `f` in one transaction that may write. On SQLite it begins `IMMEDIATE`, taking the write
/// lock at once: a deferred transaction that reads and then writes cannot wait for the lock when
/// another connection committed in between (SQLite answers "database is locked" at once, busy
/// timeout or not), which is how a roll-up beside the check-in writer failed. On PostgreSQL it
/// is a plain transaction.
pub(super) fn write_transaction<T, E>(
    conn: &mut DbConnection,
    f: impl FnOnce(&mut DbConnection) -> Result<T, E>,
) -> Result<T, E>
where
    E: From<diesel::result::Error>,
{
    use diesel::connection::{AnsiTransactionManager, TransactionManager as _};
    let DbConnection::Sqlite(c) = conn else { return diesel::Connection::transaction(conn, f) };
    AnsiTransactionManager::begin_transaction_sql(c, "BEGIN IMMEDIATE")?;
    let outcome = f(conn);
    let DbConnection::Sqlite(c) = conn else { unreachable!("the connection's backend does not change") };
    match outcome {
        Ok(value) => {
            AnsiTransactionManager::commit_transaction(c)?;
            Ok(value)
        }
        Err(e) => {
            // The caller's error is the one to report; a failed rollback leaves the connection
            // marked broken, and the pool discards it.
            let _ = AnsiTransactionManager::rollback_transaction(c);
            Err(e)
        }
    }
}

const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/sqlite");
const POSTGRES_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/postgres");

/// A lock id no other application on the database should share: held while migrating, so
/// replicas starting together do not race each other's DDL.
const MIGRATION_LOCK_ID: i64 = 0x6c69_6365_6e73_6f72; // "licensor"

/// Why the store could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The operation runs on PostgreSQL only (the insights benchmark's seeding and sizes).
    #[error("{0} runs on PostgreSQL only")]
    PostgresOnly(&'static str),
    /// The operation runs on SQLite only (the built-in backup).
    #[error("{0} runs on SQLite only")]
    SqliteOnly(&'static str),
    /// The database URL names no backend licensor supports.
    #[error("unsupported DATABASE_URL {0:?}: use sqlite://PATH or postgres://...")]
    UnsupportedUrl(String),
    /// The database could not be reached or opened.
    #[error("cannot connect to the database")]
    Connect(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The SQLite file's directory could not be created, or the file made private.
    #[error("cannot prepare the database file {path}")]
    File { path: std::path::PathBuf, source: std::io::Error },
    /// Applying the schema migrations failed.
    #[error("database migration failed")]
    Migration(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The database answers but cannot record a check-in (its schema is missing, it is
    /// read-only, or full).
    #[error("the database cannot record check-ins")]
    NotReady(#[source] diesel::result::Error),
    /// A query failed.
    #[error("database query failed")]
    Query(#[from] diesel::result::Error),
    /// A stored value does not read back (damage, or a bug that wrote it): the read fails
    /// rather than a plausible default standing in for it.
    #[error("the database holds an unreadable {what}")]
    Corrupt { what: &'static str, source: Box<dyn std::error::Error + Send + Sync> },
    /// No pooled connection became free in time.
    #[error("no database connection became free")]
    Pool(#[from] r2d2::PoolError),
}

/// Which backend a store runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Where a `DATABASE_URL` points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A SQLite database file.
    Sqlite(PathBuf),
    /// A PostgreSQL connection URL, passed to libpq as is.
    Postgres(String),
}

impl Target {
    /// Reads a URL: `sqlite://PATH` (relative), `sqlite:///ABS/PATH`, `sqlite:PATH`, or
    /// `postgres://...` / `postgresql://...`.
    pub fn parse(url: &str) -> Result<Target, StoreError> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(Target::Postgres(url.to_owned()));
        }
        let path = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:"));
        match path {
            Some(p) if !p.is_empty() && !p.contains('?') => Ok(Target::Sqlite(PathBuf::from(p))),
            _ => Err(StoreError::UnsupportedUrl(url.to_owned())),
        }
    }

    pub fn backend(&self) -> Backend {
        match self {
            Target::Sqlite(_) => Backend::Sqlite,
            Target::Postgres(_) => Backend::Postgres,
        }
    }
}

/// Opens connections of the backend the URL names, with its real errors (diesel's own
/// multi-connection `establish` tries each backend and reports neither's error).
#[derive(Debug, Clone)]
pub struct Manager {
    target: Target,
}

impl ManageConnection for Manager {
    type Connection = DbConnection;
    type Error = r2d2::Error;

    fn connect(&self) -> Result<DbConnection, r2d2::Error> {
        match &self.target {
            Target::Sqlite(path) => {
                let url = path.to_string_lossy();
                let mut c = SqliteConnection::establish(&url).map_err(r2d2::Error::ConnectionError)?;
                // WAL lets readers run beside the writer; a busy timeout turns contention
                // into waiting instead of errors; foreign keys are off by default in SQLite.
                // synchronous = FULL syncs the WAL at every commit, so an acknowledged
                // check-in (a seat granted, a batch acknowledged and dropped by the client)
                // survives a power loss; with group commit that is one sync per group.
                c.batch_execute(
                    "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; \
                     PRAGMA busy_timeout = 15000; PRAGMA foreign_keys = ON;",
                )
                .map_err(r2d2::Error::QueryError)?;
                Ok(DbConnection::Sqlite(c))
            }
            Target::Postgres(url) => PgConnection::establish(url)
                .map(DbConnection::Postgresql)
                .map_err(r2d2::Error::ConnectionError),
        }
    }

    fn is_valid(&self, conn: &mut DbConnection) -> Result<(), r2d2::Error> {
        conn.batch_execute("SELECT 1").map_err(r2d2::Error::QueryError)
    }

    fn has_broken(&self, conn: &mut DbConnection) -> bool {
        r2d2::R2D2Connection::is_broken(conn)
    }
}

/// A pooled connection.
pub type PooledConnection = r2d2::PooledConnection<Manager>;

/// The database: a connection pool over one backend.
#[derive(Clone)]
pub struct Store {
    pool: r2d2::Pool<Manager>,
    backend: Backend,
    /// Where the time spent waiting for a pooled connection is recorded, when anywhere.
    pool_wait: Option<prometheus_client::metrics::histogram::Histogram>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("backend", &self.backend).finish_non_exhaustive()
    }
}

impl StoreError {
    /// Whether the failure may come from what was written (a constraint, a value the database
    /// refused, a conflict between transactions), rather than from the database being out of
    /// reach: writing the same work in smaller parts can then isolate the part at fault.
    pub fn may_come_from_content(&self) -> bool {
        use diesel::result::{DatabaseErrorKind, Error};
        match self {
            StoreError::Query(Error::DatabaseError(kind, _)) => {
                !matches!(kind, DatabaseErrorKind::ClosedConnection | DatabaseErrorKind::UnableToSendCommand)
            }
            StoreError::Query(Error::SerializationError(_)) => true,
            // A stored value that does not read (a license's damaged key, say) belongs to the
            // rows one check-in touched: writing the group in parts isolates it.
            StoreError::Corrupt { .. } => true,
            _ => false,
        }
    }

    /// Whether retrying may succeed: the database is out of reach, busy or locked, or the
    /// transaction lost a race (a serialization failure or deadlock). A constraint or a stored
    /// value that does not read will fail again.
    pub fn is_transient(&self) -> bool {
        use diesel::result::{DatabaseErrorKind, Error};
        match self {
            StoreError::Query(Error::DatabaseError(DatabaseErrorKind::SerializationFailure, _)) => true,
            StoreError::Query(Error::DatabaseError(DatabaseErrorKind::Unknown, info)) => {
                // SQLite's busy and locked errors, and PostgreSQL's deadlocks and lock timeouts,
                // have no kind of their own in diesel: their messages say it.
                let message = info.message().to_ascii_lowercase();
                [
                    "database is locked",
                    "database is busy",
                    "deadlock detected",
                    "lock timeout",
                    "canceling statement",
                ]
                .iter()
                .any(|m| message.contains(m))
            }
            _ => self.is_unavailable(),
        }
    }

    /// Whether the failure is the database being out of reach (answered 503, retry later)
    /// rather than a query going wrong.
    pub fn is_unavailable(&self) -> bool {
        use diesel::result::{DatabaseErrorKind, Error};
        match self {
            StoreError::Pool(_) | StoreError::Connect(_) | StoreError::NotReady(_) => true,
            StoreError::Query(Error::DatabaseError(kind, _)) => {
                matches!(kind, DatabaseErrorKind::ClosedConnection | DatabaseErrorKind::UnableToSendCommand)
            }
            _ => false,
        }
    }
}

/// The most rows one multi-row statement carries: far below both backends' limits on bound
/// parameters (65,535 for PostgreSQL, 32,766 for SQLite) for any of these tables.
pub(crate) const ROWS_PER_STATEMENT: usize = 500;

/// How long a request waits for a pooled connection: a database that is down is answered with
/// 503 within a few seconds, not after the client gave up.
const POOL_WAIT: Duration = Duration::from_secs(3);

impl Store {
    /// Connects, creating a SQLite file's directory if needed, and applies pending migrations.
    /// A SQLite file is made 0600, and a directory created for it 0700: the database holds
    /// license keys and telemetry.
    pub fn open(url: &str, pool_size: u32) -> Result<Store, StoreError> {
        let target = Target::parse(url)?;
        if let Target::Sqlite(path) = &target {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                if !dir.exists() {
                    create_private_dir(dir)
                        .map_err(|source| StoreError::File { path: dir.to_owned(), source })?;
                }
            }
        }
        let backend = target.backend();
        let sqlite_file = match &target {
            Target::Sqlite(path) => Some(path.clone()),
            Target::Postgres(_) => None,
        };
        let manager = Manager { target };
        // Connect once outside the pool, so a bad URL or a database that is down gives its
        // own error message rather than r2d2's time-out.
        let mut first = manager.connect().map_err(|e| StoreError::Connect(e.into()))?;
        if let Some(path) = sqlite_file {
            // Changing the mode by path never opens the file, so it cannot drop the POSIX
            // locks this process holds on it. SQLite gives its -wal and -shm files the mode
            // of the database file.
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt as _;
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                    .map_err(|source| StoreError::File { path: path.clone(), source })?;
            }
        }
        migrate(&mut first)?;
        drop(first);
        let pool = r2d2::Pool::builder()
            .max_size(pool_size.max(1))
            // Testing each connection on checkout costs a round trip per unit of work; a
            // broken connection is still caught by `has_broken` and by the query itself.
            .test_on_check_out(false)
            .connection_timeout(POOL_WAIT)
            .build(manager)
            .map_err(|e| StoreError::Connect(e.into()))?;
        Ok(Store { pool, backend, pool_wait: None })
    }

    /// The backend this store runs on.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// A connection from the pool (blocking: call from a blocking context).
    pub fn conn(&self) -> Result<PooledConnection, StoreError> {
        let Some(wait) = &self.pool_wait else { return Ok(self.pool.get()?) };
        let started = std::time::Instant::now();
        let conn = self.pool.get();
        wait.observe(started.elapsed().as_secs_f64());
        Ok(conn?)
    }

    /// Records, from now on, how long each connection took to come from the pool (the
    /// store's clones made afterwards record too).
    pub fn record_pool_wait(&mut self, histogram: prometheus_client::metrics::histogram::Histogram) {
        self.pool_wait = Some(histogram);
    }

    /// Whether the database answers a trivial query.
    pub fn ping(&self) -> Result<(), StoreError> {
        self.conn()?.batch_execute("SELECT 1")?;
        Ok(())
    }

    /// Whether a check-in could be recorded now: the check-in path's tables answer, and a
    /// write goes through (it is rolled back). A database that is read-only, full or without
    /// its schema fails here, where `ping` would pass.
    pub fn ready(&self) -> Result<(), StoreError> {
        use super::schema::{check_ins, instances, job_runs, licenses};
        use diesel::prelude::*;
        let mut conn = self.conn()?;
        // A write transaction, as a check-in's is: a deferred one that reads first fails at once
        // with "database is locked" on SQLite when another connection commits in between (a
        // server starting up writes too), which said "not ready" of a ready server.
        let outcome = write_transaction::<(), ProbeEnd>(&mut conn, |c| {
            licenses::table.select(licenses::id).limit(1).load::<String>(c)?;
            instances::table.select(instances::id).limit(1).load::<String>(c)?;
            check_ins::table.select(check_ins::id).limit(1).load::<i64>(c)?;
            diesel::insert_into(job_runs::table)
                .values((
                    job_runs::job.eq("readiness-probe"),
                    job_runs::run_key.eq(uuid::Uuid::new_v4().to_string()),
                    job_runs::started_at.eq(chrono::Utc::now().naive_utc()),
                ))
                .execute(c)?;
            Err(ProbeEnd::RolledBack)
        });
        match outcome {
            Ok(()) | Err(ProbeEnd::RolledBack) => Ok(()),
            Err(ProbeEnd::Failed(e)) => Err(e),
        }
    }
}

/// How the readiness probe's transaction ended: always rolled back, by design or by failure.
enum ProbeEnd {
    RolledBack,
    Failed(StoreError),
}

impl From<diesel::result::Error> for ProbeEnd {
    fn from(e: diesel::result::Error) -> Self {
        match StoreError::Query(e) {
            unavailable if unavailable.is_unavailable() => ProbeEnd::Failed(unavailable),
            StoreError::Query(e) => ProbeEnd::Failed(StoreError::NotReady(e)),
            other => ProbeEnd::Failed(other),
        }
    }
}

/// Creates a directory (and its parents) that only its owner may enter.
fn create_private_dir(dir: &std::path::Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt as _;
        builder.mode(0o700);
    }
    builder.create(dir)
}

/// Applies pending migrations of the connection's backend.
fn migrate(conn: &mut DbConnection) -> Result<(), StoreError> {
    let failed = StoreError::Migration;
    match conn {
        DbConnection::Sqlite(c) => {
            c.run_pending_migrations(SQLITE_MIGRATIONS).map_err(failed)?;
        }
        DbConnection::Postgresql(c) => {
            c.batch_execute(&format!("SELECT pg_advisory_lock({MIGRATION_LOCK_ID})"))?;
            let result = c.run_pending_migrations(POSTGRES_MIGRATIONS).map(|_| ()).map_err(failed);
            c.batch_execute(&format!("SELECT pg_advisory_unlock({MIGRATION_LOCK_ID})"))?;
            result?;
        }
    }
    Ok(())
}

/// Writes a consistent copy of the SQLite database at `url` to `to` (`VACUUM INTO`), while a
/// server may be using it: the copy is one transaction's snapshot, compacted, and a database
/// of its own (no `-wal` file goes with it). `to` must not exist; it is created 0600 before a
/// byte is written, as the database holds licenses and telemetry. The database is neither
/// migrated nor changed. PostgreSQL is backed up with its own tools (`pg_dump`).
pub fn backup_sqlite(url: &str, to: &std::path::Path) -> Result<(), StoreError> {
    let Target::Sqlite(path) = Target::parse(url)? else {
        return Err(StoreError::SqliteOnly("the built-in backup (use pg_dump for PostgreSQL)"));
    };
    if !path.is_file() {
        return Err(StoreError::File {
            path: path.clone(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no database file here"),
        });
    }
    let file = |source| StoreError::File { path: to.to_owned(), source };
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    drop(options.open(to).map_err(file)?);
    let copied = (|| {
        let mut c = SqliteConnection::establish(&path.to_string_lossy())
            .map_err(|e| StoreError::Connect(Box::new(e)))?;
        c.batch_execute("PRAGMA busy_timeout = 15000;")?;
        diesel::RunQueryDsl::execute(
            diesel::sql_query("VACUUM INTO ?")
                .bind::<diesel::sql_types::Text, _>(to.to_string_lossy().into_owned()),
            &mut c,
        )?;
        Ok(())
    })();
    if copied.is_err() {
        // No half-written copy stays behind to be mistaken for a backup.
        let _ = std::fs::remove_file(to);
    }
    copied
}
