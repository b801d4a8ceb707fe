//! The `licensor` command line: argument definitions and the commands behind them.
//!
//! `main.rs` only parses [`Cli`] and hands it to [`run`]. Commands return `anyhow` errors,
//! which `run` prints and turns into exit codes: [`EXIT_OK`], [`EXIT_NOT_VALID`] (a verdict
//! or answer other than valid) and [`EXIT_ERROR`] (usage, input or I/O errors; clap's own
//! usage errors exit with 2 as well).

/// `println!` that hands back the write's error instead of panicking: a closed pipe
/// (`licensor inspect ... | head`) ends the output, and [`run`] exits quietly, as ripgrep does.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), $($arg)*)
    }};
}

#[cfg(feature = "cli")]
mod admin;
#[cfg(feature = "cli")]
mod admin_args;
#[cfg(feature = "cli")]
pub use admin_args::{
    AdminArgs, AdminCommand, InsightsView, JobName, JobsCommand, UsageImportsCommand, WebhooksCommand,
};
#[cfg(feature = "cli")]
mod bench;
#[cfg(feature = "cli")]
mod bulk;
#[cfg(feature = "cli")]
mod demo;
mod installs;
mod parsing;
pub use installs::{InstallsAction, InstallsArgs};
#[cfg(feature = "cli")]
mod serve;
mod telemetry;
#[cfg(feature = "cli")]
mod vendor;

#[cfg(feature = "cli")]
use chrono::{DateTime, Utc};
use clap::{Args, Parser, Subcommand};
#[cfg(feature = "cli")]
use std::path::PathBuf;
use std::process::ExitCode;

#[cfg(feature = "cli")]
use crate::license::Tier;

/// Success, and for `inspect` a `valid` verdict.
pub const EXIT_OK: u8 = 0;
/// The command ran, and its answer was not `valid`.
pub const EXIT_NOT_VALID: u8 = 1;
/// Usage, input or I/O error: the command could not give an answer.
pub const EXIT_ERROR: u8 = 2;

/// licensor: Ed25519-signed license keys, license server and telemetry client.
#[derive(Debug, Parser)]
#[command(name = "licensor", version, about, max_term_width = 100)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    #[cfg(feature = "cli")]
    /// Generate an Ed25519 key pair for one role: KID.ROLE.private.pem (mode 0600) and
    /// KID.ROLE.public.pem, ROLE being license (the vendor's) or lease (the server's).
    Keygen(KeygenArgs),
    #[cfg(feature = "cli")]
    /// Issue a signed license key, or many from a CSV file.
    Issue(IssueArgs),
    #[cfg(feature = "cli")]
    /// Decode a license key or a lease and verify it against a key ring.
    Inspect(InspectArgs),
    #[cfg(feature = "cli")]
    /// Walk through the vendor flow with a throwaway key: keygen, issue per tier, verify.
    Demo(DemoArgs),
    #[cfg(feature = "cli")]
    /// Run the license server (zero configuration starts a development set-up in ./data).
    Serve(Box<ServeArgs>),
    #[cfg(feature = "cli")]
    /// Ask a server whether it is healthy (a container's health check, where no shell or curl
    /// exists): exit 0 on a 2xx answer, 1 on any other answer, 2 when none came.
    Healthcheck(HealthcheckArgs),
    #[cfg(feature = "cli")]
    /// Copy the embedded SQLite database consistently while the server runs (PostgreSQL is
    /// backed up with pg_dump; see docs/operations.md).
    Backup(BackupArgs),
    #[cfg(feature = "cli")]
    /// Talk to a server's admin API: licenses, instances, telemetry.
    Admin(AdminArgs),
    /// What this deployment's verifier collects and sends: see it, export it, clear it.
    /// Needs only LICENSOR_DATA_DIR (the application records the rest there); the library's
    /// variables override.
    #[command(subcommand)]
    Telemetry(TelemetryCommand),
    /// Check in with the license server now and print the outcome: exit 0 only when the
    /// server answered `valid`, 1 for any other answer, 2 when no answer came.
    CheckIn(ClientArgs),
    /// Release this deployment's seat (it is being decommissioned), with a receipt signed by
    /// the license server: exit 0 when released, 2 when not (nothing changed then).
    Deactivate(ClientArgs),
    /// The license's installs and their processes as the license server knows them (asked
    /// with this deployment's license key and current lease), or `installs release ID` to free
    /// one install's seat (or one process) with a receipt signed by the server: exit 0 when
    /// done, 2 when not.
    Installs(InstallsArgs),
    #[cfg(feature = "cli")]
    /// Load and speed measurements that print figures.
    #[command(subcommand)]
    Bench(BenchCommand),
}

/// What every command on a deployment's data takes besides the environment.
#[derive(Debug, Args)]
pub struct ClientArgs {
    /// The application's version, as its check-ins report it.
    #[arg(long, env = "LICENSOR_SOFTWARE_VERSION", default_value = concat!("licensor-cli/", env!("CARGO_PKG_VERSION")))]
    pub software_version: String,
}

#[derive(Debug, Subcommand)]
pub enum TelemetryCommand {
    /// Whether telemetry is on and why, the tier, the last and next check-in, the last result.
    Status(ClientArgs),
    /// The exact JSON of the next batch (the outbox's bytes when one is waiting).
    Preview {
        #[command(flatten)]
        client: ClientArgs,
        /// Indent the JSON (then it is no longer byte for byte what is sent).
        #[arg(long)]
        pretty: bool,
    },
    /// The ledger: every batch the server acknowledged, newest first.
    Sent {
        #[command(flatten)]
        client: ClientArgs,
        /// Print the batches themselves, in a pretty JSON array (re-indented: --raw gives the
        /// exact bytes).
        #[arg(long, conflicts_with = "raw")]
        full: bool,
        /// Print one sent batch's bytes exactly as they were sent and kept, with nothing added:
        /// their SHA-256 is the digest the server acknowledged.
        #[arg(long)]
        raw: bool,
        /// With --raw: the batch to print (default: the newest).
        #[arg(long, requires = "raw")]
        batch: Option<String>,
    },
    /// Everything stored locally about telemetry; or, with --signed on an air-gapped
    /// Enterprise deployment, the signed usage report to carry to the vendor by hand.
    Export {
        #[command(flatten)]
        client: ClientArgs,
        /// json: every table as one document; csv: one row per stored row, the table in the
        /// first column.
        #[arg(long, value_enum, default_value_t = ExportFormat::Json, conflicts_with = "signed")]
        format: ExportFormat,
        /// Write the usage report for the vendor (air-gapped Enterprise only): everything
        /// collected since the last report, signed by this install's key and chained to the
        /// report before. Readable JSON: read it before handing it over. Until its receipt is
        /// imported, the same report is written again.
        #[arg(long, requires = "out")]
        signed: bool,
        /// With --signed: the file to write (it must not exist yet).
        #[arg(long, requires = "signed")]
        out: Option<std::path::PathBuf>,
    },
    /// Apply the vendor's usage receipt (air-gapped Enterprise): verified against the trusted
    /// keys and bound to the report this install exported, it moves the reported figures to
    /// the ledger and applies the lease and any renewed license key it carries.
    ImportReceipt {
        #[command(flatten)]
        client: ClientArgs,
        /// The receipt file `licensor admin import-usage` wrote.
        file: std::path::PathBuf,
    },
    /// Delete the telemetry stored locally and not yet sent (and the waiting batch).
    Clear {
        #[command(flatten)]
        client: ClientArgs,
        /// Delete the ledger of sent batches too.
        #[arg(long)]
        ledger: bool,
    },
    /// Keep telemetry on, saved in the data directory (telemetry.json) and applied at the
    /// application's next start: the full level, or on Enterprise basic health only.
    Enable {
        #[command(flatten)]
        client: ClientArgs,
        /// full: usage, request performance, errors, sessions and health; basic (Enterprise
        /// only): the environment and its health, no usage details.
        #[arg(long, value_enum, default_value_t = LevelArg::Full)]
        level: LevelArg,
    },
    /// Serve the local dashboard from this data directory (status, license, check-ins, charts
    /// of local usage, requests, errors and latency, the next batch byte for byte, the sent
    /// batches), on this machine only, until stopped.
    Dashboard {
        #[command(flatten)]
        client: ClientArgs,
        /// Where to listen: a loopback address (the page has no sign-in; reach it from elsewhere
        /// through an SSH tunnel).
        #[arg(long, default_value = "127.0.0.1:8089")]
        bind: String,
    },
    /// Turn telemetry off, saved in the data directory: on Enterprise, air-gapped mode (no
    /// connection at all; usage is reported by signed file, `export --signed`); refused on
    /// Community and Pro, whose licenses require it (exit 1).
    Disable {
        #[command(flatten)]
        client: ClientArgs,
        /// What the signed usage reports carry: full (the usage figures) or basic (the
        /// environment and its health; nothing else is collected).
        #[arg(long, value_enum, default_value_t = LevelArg::Full)]
        level: LevelArg,
    },
}

/// `licensor telemetry enable --level`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LevelArg {
    Full,
    Basic,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    Json,
    Csv,
}

#[cfg(feature = "cli")]
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Fire realistic check-ins at a running server and print check-ins/s, p50 and p99.
    CheckIns(BenchCheckInsArgs),
    /// Seed a fleet into an empty PostgreSQL database, then time the roll-up of a day, every
    /// insights view and every dashboard page, and print the roll-ups' size per instance-day.
    Insights(BenchInsightsArgs),
}

#[cfg(feature = "cli")]
#[derive(Debug, Args)]
pub struct BenchInsightsArgs {
    /// An empty PostgreSQL database to seed (it is left seeded, for --reuse).
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: String,
    /// Installs in the fleet.
    #[arg(long, default_value_t = 100_000)]
    pub installs: usize,
    /// Days of history.
    #[arg(long, default_value_t = 90)]
    pub days: u32,
    /// Installs per license.
    #[arg(long, default_value_t = 50)]
    pub installs_per_license: usize,
    /// Requests per view and page.
    #[arg(long, default_value_t = 20)]
    pub requests: usize,
    /// Time what an earlier run seeded instead of seeding.
    #[arg(long)]
    pub reuse: bool,
}

#[cfg(feature = "cli")]
#[derive(Debug, Args)]
pub struct BenchCheckInsArgs {
    /// The server's base URL.
    #[arg(long, env = "LICENSOR_SERVER_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// Root certificates (PEM) trusted beside the system's, for a server whose certificate a
    /// private authority signed.
    #[arg(long, env = "LICENSOR_CA_CERT")]
    pub ca_cert: Option<PathBuf>,

    /// The admin token, to issue the licenses the load uses (the server needs an issuing key).
    #[arg(long, env = "LICENSOR_ADMIN_TOKEN", hide_env_values = true)]
    pub token: String,
    /// Licenses to spread the instances over.
    #[arg(long, default_value_t = 200)]
    pub licenses: usize,
    /// Simulated instances.
    #[arg(long, default_value_t = 100_000)]
    pub instances: usize,
    /// Check-ins to send in all.
    #[arg(long, default_value_t = 40_000)]
    pub requests: usize,
    /// Check-ins in flight at once.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Threads of the load generator.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// The server's PostgreSQL database: also print the bytes the run stored per check-in.
    #[arg(long)]
    pub database_url: Option<String>,
}

/// How the server writes its log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

#[cfg(feature = "cli")]
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// TOML file with further settings (flags and environment take precedence).
    #[arg(long, env = "LICENSOR_CONFIG")]
    pub config: Option<PathBuf>,
    /// How log lines are written to stderr: text (coloured only on a terminal), or json (one
    /// object per line, each with the request id of the request that caused it).
    #[arg(long, env = "LICENSOR_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// Address to listen on [default: 127.0.0.1:8080].
    #[arg(long, env = "LICENSOR_BIND")]
    pub bind: Option<String>,
    /// sqlite://PATH or postgres://... [default: sqlite://DATA_DIR/licensor.db].
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// A file holding the database URL (a container secret), instead of --database-url.
    #[arg(long, env = "LICENSOR_DATABASE_URL_FILE")]
    pub database_url_file: Option<PathBuf>,
    /// Directory for the embedded database and the development set-up [default: data].
    #[arg(long, env = "LICENSOR_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Key ring of trusted public keys, KID.ROLE.public.pem [default: DATA_DIR/keys].
    #[arg(long, env = "LICENSOR_KEYS_DIR")]
    pub keys_dir: Option<PathBuf>,
    /// The PKCS#8 key that signs leases, KID.lease.private.pem (generated in development).
    #[arg(long, env = "LICENSOR_SIGNING_KEY")]
    pub signing_key: Option<PathBuf>,
    /// A PKCS#8 key that lets the admin API issue licenses, KID.license.private.pem.
    #[arg(long, env = "LICENSOR_ISSUING_KEY")]
    pub issuing_key: Option<PathBuf>,
    /// Bearer token of the admin API, named admin, full scope (prefer the environment to the flag);
    /// generated in the development set-up unless named tokens are configured.
    #[arg(long, env = "LICENSOR_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// A file holding the admin token (a container secret), instead of --admin-token.
    #[arg(long, env = "LICENSOR_ADMIN_TOKEN_FILE")]
    pub admin_token_file: Option<PathBuf>,
    /// HTTP worker threads [default: one per core].
    #[arg(long, env = "LICENSOR_WORKERS")]
    pub workers: Option<usize>,
    /// Days raw telemetry is kept [default: 90].
    #[arg(long, env = "LICENSOR_RETENTION_DAYS")]
    pub retention_days: Option<u32>,
    /// Check-ins one client address may start per minute [default: 600].
    #[arg(long, env = "LICENSOR_RATE_LIMIT_PER_ADDRESS")]
    pub rate_limit_per_address: Option<u32>,
    /// The IPv6 prefix length that counts as one client address for that limit: whoever holds
    /// a /64 holds every address in it [default: 64; from 32 to 128].
    #[arg(long, env = "LICENSOR_RATE_LIMIT_IPV6_PREFIX")]
    pub rate_limit_ipv6_prefix: Option<u8>,
    /// Reverse proxies whose X-Forwarded-For is believed, as comma-separated addresses or
    /// networks (10.0.0.0/8,::1) [default: none; the peer address is the client's].
    #[arg(long, env = "LICENSOR_TRUSTED_PROXIES")]
    pub trusted_proxies: Option<String>,
    /// Database connections in the pool [default: 16].
    #[arg(long, env = "LICENSOR_DB_POOL_SIZE")]
    pub db_pool_size: Option<u32>,
    /// The largest request body accepted, in bytes [default: 1048576].
    #[arg(long, env = "LICENSOR_MAX_BODY_BYTES")]
    pub max_body_bytes: Option<usize>,
    /// Seconds a request body may take to arrive before the answer is 408 [default: 10].
    #[arg(long, env = "LICENSOR_BODY_TIMEOUT_S")]
    pub body_timeout_s: Option<u64>,
    /// When the retention job runs: cron with seconds, UTC [default: "0 15 3 * * *"].
    #[arg(long, env = "LICENSOR_RETENTION_SCHEDULE")]
    pub retention_schedule: Option<String>,
    /// When the daily roll-up runs: cron with seconds, UTC [default: "0 5 0 * * *"].
    #[arg(long, env = "LICENSOR_ROLLUP_SCHEDULE")]
    pub rollup_schedule: Option<String>,
    /// Check-ins one instance may make per minute [default: 30].
    #[arg(long, env = "LICENSOR_RATE_LIMIT_PER_MINUTE")]
    pub rate_limit_per_minute: Option<u32>,
    /// Do not run the scheduled jobs on this replica.
    #[arg(long, env = "LICENSOR_NO_JOBS")]
    pub no_jobs: bool,
    /// Publish the k-anonymous fleet insights at /insights and /v1/insights, without
    /// authentication [default: off].
    #[arg(long, env = "LICENSOR_PUBLIC_INSIGHTS")]
    pub public_insights: bool,
    /// The fewest distinct licenses (customers) behind any public figure (k), at least 2
    /// [default: 10].
    #[arg(long, env = "LICENSOR_INSIGHTS_MIN_INSTALLS")]
    pub insights_min_installs: Option<u32>,
    /// Names the public insights publish, as comma-separated kind:name entries (feature:export,
    /// api:GET /v1/items, version:2.1.0), beside those marked public in the dashboard
    /// [default: none; every name folds into "other"].
    #[arg(long, env = "LICENSOR_PUBLIC_NAMES")]
    pub public_names: Option<String>,
    /// A second address serving only /metrics, without a token, for a private network
    /// [default: none; /metrics on the main address takes the admin token].
    #[arg(long, env = "LICENSOR_METRICS_BIND")]
    pub metrics_bind: Option<String>,
    /// A PEM certificate chain: with --tls-key the server speaks HTTPS itself, and reads both
    /// files again on SIGHUP [default: plain HTTP, for a TLS-terminating proxy in front].
    #[arg(long, env = "LICENSOR_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// The certificate's PEM private key (PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = "LICENSOR_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
}

#[cfg(feature = "cli")]
#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// Key id: 1 to 64 characters of A-Z, a-z, 0-9, '_' and '-'.
    #[arg(long)]
    pub kid: String,
    /// What the key signs: `license` (the vendor's issuing key, for license keys) or `lease`
    /// (the license server's key, for its answers). One key, one role.
    #[arg(long, default_value = "license", value_parser = parse_role)]
    pub role: crate::keys::Role,
    /// Directory to write the key pair into (created if missing).
    #[arg(long, default_value = "keys")]
    pub out_dir: PathBuf,
}

#[cfg(feature = "cli")]
#[derive(Debug, Args)]
pub struct IssueArgs {
    /// The issuing key, KID.license.private.pem; its key id is taken from the file name.
    #[arg(long, env = "LICENSOR_ISSUING_KEY")]
    pub private_key: PathBuf,
    /// community, pro or enterprise.
    #[arg(long, required_unless_present = "from")]
    pub tier: Option<Tier>,
    /// Who the license is for.
    #[arg(long, required_unless_present = "from")]
    pub licensee: Option<String>,
    /// When the license stops being valid: RFC 3339, or YYYY-MM-DD for 00:00:00 UTC that day.
    #[arg(long, value_parser = parse_instant, required_unless_present_any = ["from", "perpetual"], conflicts_with = "perpetual")]
    pub expires: Option<DateTime<Utc>>,
    /// When the license starts being valid (default: now); same forms as --expires.
    #[arg(long, value_parser = parse_instant)]
    pub not_before: Option<DateTime<Utc>>,
    /// How many instances may run at once.
    #[arg(long, default_value_t = 1)]
    pub seats: u32,
    /// A feature entitlement; repeat for several.
    #[arg(long = "feature", value_name = "NAME")]
    pub features: Vec<String>,
    /// Override the tier's check-in interval, e.g. 12h, 3days (1 hour to 365 days).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub check_in_interval: Option<std::time::Duration>,
    /// Issue a license that never expires (instead of --expires).
    #[arg(long)]
    pub perpetual: bool,
    /// Print the key and its decoded payload as JSON.
    #[arg(long)]
    pub json: bool,
    /// Issue one license per row of this CSV file (columns: licensee, tier, expires, and
    /// optionally not_before, seats, features separated by ';', check_in_interval).
    #[arg(long, value_name = "CSV", requires = "out", conflicts_with_all = [
        "tier", "licensee", "expires", "not_before", "features", "check_in_interval", "perpetual", "json",
    ])]
    pub from: Option<PathBuf>,
    /// Where to write the issued licenses (CSV); must not exist yet.
    #[arg(long, value_name = "CSV", requires = "from")]
    pub out: Option<PathBuf>,
}

#[cfg(feature = "cli")]
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// The license key or lease, or - to read it from standard input.
    pub key: String,
    /// Directory of trusted public keys (KID.ROLE.public.pem).
    #[arg(long, env = "LICENSOR_KEYS_DIR", default_value = "keys")]
    pub keys: PathBuf,
    /// Judge validity at this instant instead of now; same forms as issue --expires.
    #[arg(long, value_parser = parse_instant)]
    pub at: Option<DateTime<Utc>>,
    /// Print the verdict and payload as JSON.
    #[arg(long)]
    pub json: bool,
}

#[cfg(feature = "cli")]
#[derive(Debug, Args)]
pub struct BackupArgs {
    /// The database to copy: sqlite://PATH [default: sqlite://DATA_DIR/licensor.db].
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// The data directory whose embedded database is copied, when no URL is given.
    #[arg(long, env = "LICENSOR_DATA_DIR", default_value = "data")]
    pub data_dir: PathBuf,
    /// The file to write (it must not exist; it is created with mode 0600).
    #[arg(long)]
    pub out: PathBuf,
}

#[cfg(feature = "cli")]
#[derive(Debug, Args)]
pub struct HealthcheckArgs {
    /// The URL to ask: /healthz (the process serves) or /readyz (it can reach its database).
    #[arg(long, default_value = "http://127.0.0.1:8080/healthz")]
    pub url: String,
    /// Seconds to wait for the answer.
    #[arg(long, default_value_t = 3)]
    pub timeout_s: u64,
    /// Root certificates (PEM) trusted beside the system's, for a server whose certificate a
    /// private authority signed.
    #[arg(long, env = "LICENSOR_CA_CERT")]
    pub ca_cert: Option<PathBuf>,
}

#[cfg(feature = "cli")]
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Directory for the throwaway key pair (default: a new directory under the system's
    /// temporary directory).
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

/// Runs a parsed command line and returns the process exit code.
/// Writes `text` to `path`, which must not exist: through a temporary file beside it, linked
/// into place only if `path` is still absent, so the file is whole or absent and never another
/// file overwritten.
pub(crate) fn write_new_file(path: &std::path::Path, text: &str) -> anyhow::Result<()> {
    use anyhow::Context as _;
    use std::io::Write as _;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => std::path::Path::new("."),
    };
    let mut tmp =
        tempfile::NamedTempFile::new_in(dir).with_context(|| format!("cannot write in {}", dir.display()))?;
    tmp.write_all(text.as_bytes())?;
    tmp.as_file().sync_all()?;
    tmp.persist_noclobber(path).map_err(|e| {
        if e.error.kind() == std::io::ErrorKind::AlreadyExists {
            anyhow::anyhow!("{} exists already: refusing to overwrite it", path.display())
        } else {
            anyhow::Error::from(e.error).context(format!("cannot write {}", path.display()))
        }
    })?;
    Ok(())
}

#[cfg(feature = "cli")]
use parsing::parse_role;
pub use parsing::{parse_error, parse_instant};

pub fn run(cli: Cli) -> ExitCode {
    let result = match cli.command {
        #[cfg(feature = "cli")]
        Command::Keygen(args) => vendor::keygen(args),
        #[cfg(feature = "cli")]
        Command::Issue(args) => vendor::issue(args),
        #[cfg(feature = "cli")]
        Command::Inspect(args) => vendor::inspect(args),
        #[cfg(feature = "cli")]
        Command::Demo(args) => demo::run(args),
        #[cfg(feature = "cli")]
        Command::Serve(args) => serve::run(*args),
        #[cfg(feature = "cli")]
        Command::Healthcheck(args) => serve::healthcheck(args),
        #[cfg(feature = "cli")]
        Command::Backup(args) => serve::backup(args),
        #[cfg(feature = "cli")]
        Command::Admin(args) => admin::run(args),
        #[cfg(feature = "cli")]
        Command::Bench(BenchCommand::CheckIns(args)) => bench::check_ins(args),
        #[cfg(feature = "cli")]
        Command::Bench(BenchCommand::Insights(args)) => bench::insights(args),
        Command::Telemetry(command) => telemetry::run(command),
        Command::CheckIn(args) => telemetry::check_in(args),
        Command::Deactivate(args) => telemetry::deactivate(args),
        Command::Installs(args) => installs::run(args),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        // The reader went away (`| head`): the output simply ends there.
        Err(e) if is_broken_pipe(&e) => ExitCode::from(EXIT_OK),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}

/// Whether an error comes from writing to a pipe whose reader has closed it.
fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        cause.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
