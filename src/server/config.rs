//! Server configuration: command-line flags, then environment (both read by the CLI into
//! [`ServeOptions`]), then an optional TOML file, then defaults, validated at start with
//! errors that name the setting. With nothing configured the server still starts: it creates
//! a development set-up in its data directory and says so loudly.

use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::keys::{self, KeyRing, Role, Signer};
use crate::protocol::BatchLimits;

/// Settings given on the command line or in the environment; `None` falls through to the
/// TOML file, then to the defaults.
#[derive(Debug, Clone, Default)]
pub struct ServeOptions {
    pub config_file: Option<PathBuf>,
    pub bind: Option<String>,
    pub database_url: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub keys_dir: Option<PathBuf>,
    pub signing_key: Option<PathBuf>,
    pub issuing_key: Option<PathBuf>,
    pub admin_token: Option<String>,
    /// A file holding the admin token (a container secret), instead of the token itself.
    pub admin_token_file: Option<PathBuf>,
    /// A file holding the database URL (whose password is a secret), instead of the URL.
    pub database_url_file: Option<PathBuf>,
    pub workers: Option<usize>,
    pub retention_days: Option<u32>,
    pub jobs: Option<bool>,
    pub rate_limit_per_address: Option<u32>,
    pub rate_limit_ipv6_prefix: Option<u8>,
    /// Comma-separated addresses or networks.
    pub trusted_proxies: Option<String>,
    pub db_pool_size: Option<u32>,
    pub max_body_bytes: Option<usize>,
    pub body_timeout_s: Option<u64>,
    pub retention_schedule: Option<String>,
    pub rollup_schedule: Option<String>,
    pub rate_limit_per_minute: Option<u32>,
    pub public_insights: Option<bool>,
    pub insights_min_installs: Option<u32>,
    /// Comma-separated `kind:name` entries.
    pub public_names: Option<String>,
    /// A second address that serves `/metrics` without a token (for a private network).
    pub metrics_bind: Option<String>,
    /// A PEM certificate chain: with `tls_key`, the server speaks HTTPS itself.
    pub tls_cert: Option<PathBuf>,
    /// The certificate's PEM private key.
    pub tls_key: Option<PathBuf>,
    /// The settings above (by TOML key) whose value came from the environment rather than a
    /// flag, so that an error names what the operator actually set.
    pub from_env: Vec<&'static str>,
}

/// Every setting that has a flag and an environment variable: its TOML key, flag and variable.
/// (The batch `limits` and the `seats` rules are TOML tables only: structures, not one value.)
pub const SETTINGS: &[(&str, &str, &str)] = &[
    ("bind", "--bind", "LICENSOR_BIND"),
    ("database_url", "--database-url", "DATABASE_URL"),
    ("database_url_file", "--database-url-file", "LICENSOR_DATABASE_URL_FILE"),
    ("data_dir", "--data-dir", "LICENSOR_DATA_DIR"),
    ("keys_dir", "--keys-dir", "LICENSOR_KEYS_DIR"),
    ("signing_key", "--signing-key", "LICENSOR_SIGNING_KEY"),
    ("issuing_key", "--issuing-key", "LICENSOR_ISSUING_KEY"),
    ("admin_token", "--admin-token", "LICENSOR_ADMIN_TOKEN"),
    ("admin_token_file", "--admin-token-file", "LICENSOR_ADMIN_TOKEN_FILE"),
    ("workers", "--workers", "LICENSOR_WORKERS"),
    ("db_pool_size", "--db-pool-size", "LICENSOR_DB_POOL_SIZE"),
    ("max_body_bytes", "--max-body-bytes", "LICENSOR_MAX_BODY_BYTES"),
    ("body_timeout_s", "--body-timeout-s", "LICENSOR_BODY_TIMEOUT_S"),
    ("retention_days", "--retention-days", "LICENSOR_RETENTION_DAYS"),
    ("retention_schedule", "--retention-schedule", "LICENSOR_RETENTION_SCHEDULE"),
    ("rollup_schedule", "--rollup-schedule", "LICENSOR_ROLLUP_SCHEDULE"),
    ("rate_limit_per_minute", "--rate-limit-per-minute", "LICENSOR_RATE_LIMIT_PER_MINUTE"),
    ("rate_limit_per_address", "--rate-limit-per-address", "LICENSOR_RATE_LIMIT_PER_ADDRESS"),
    ("rate_limit_ipv6_prefix", "--rate-limit-ipv6-prefix", "LICENSOR_RATE_LIMIT_IPV6_PREFIX"),
    ("trusted_proxies", "--trusted-proxies", "LICENSOR_TRUSTED_PROXIES"),
    ("public_insights", "--public-insights", "LICENSOR_PUBLIC_INSIGHTS"),
    ("insights_min_installs", "--insights-min-installs", "LICENSOR_INSIGHTS_MIN_INSTALLS"),
    ("public_names", "--public-names", "LICENSOR_PUBLIC_NAMES"),
    ("metrics_bind", "--metrics-bind", "LICENSOR_METRICS_BIND"),
    ("tls_cert", "--tls-cert", "LICENSOR_TLS_CERT"),
    ("tls_key", "--tls-key", "LICENSOR_TLS_KEY"),
];

/// Where a setting's value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Given {
    Flag,
    Env,
    File,
    Default,
}

/// Names settings the way the operator gave them: the flag typed, the variable set, or the
/// key in the config file.
struct Sources<'a> {
    from_env: &'a [&'static str],
    file: Option<&'a Path>,
}

impl Sources<'_> {
    /// The value given first (flags and environment, then the file) and where it came from.
    fn pick<T>(&self, key: &'static str, given: Option<T>, file: Option<T>) -> (Option<T>, Given) {
        match (given, file) {
            (Some(v), _) if self.from_env.contains(&key) => (Some(v), Given::Env),
            (Some(v), _) => (Some(v), Given::Flag),
            (None, Some(v)) => (Some(v), Given::File),
            (None, None) => (None, Given::Default),
        }
    }

    fn name(&self, key: &'static str, given: Given) -> String {
        let (flag, env) =
            SETTINGS.iter().find(|(k, _, _)| *k == key).map_or((key, key), |(_, flag, env)| (*flag, *env));
        match (given, self.file) {
            (Given::Flag, _) => flag.to_owned(),
            (Given::File, Some(path)) => format!("{key} in {}", path.display()),
            (Given::Env | Given::Default | Given::File, _) => env.to_owned(),
        }
    }

    /// A secret given either as itself or as a file that holds it (as container secrets are
    /// mounted), never both. The file's content is the value without its trailing line end.
    /// The answer says which setting gave the value, and how, for the errors that follow.
    fn value_or_file(
        &self,
        (key, value, given): (&'static str, Option<String>, Given),
        (file_key, path, file_given): (&'static str, Option<PathBuf>, Given),
    ) -> Result<(Option<String>, &'static str, Given), ConfigError> {
        let Some(path) = path else { return Ok((value, key, given)) };
        if value.is_some() {
            return Err(self.invalid(
                file_key,
                file_given,
                format!(
                    "{} is given as well: give the value or the file that holds it, not both",
                    self.name(key, given)
                ),
            ));
        }
        let text = std::fs::read_to_string(&path).map_err(|e| {
            self.invalid(file_key, file_given, format!("cannot read {}: {e}", path.display()))
        })?;
        let text = text.trim_end_matches(['\n', '\r']);
        if text.is_empty() {
            return Err(self.invalid(file_key, file_given, format!("{} is empty", path.display())));
        }
        Ok((Some(text.to_owned()), file_key, file_given))
    }

    fn invalid(&self, key: &'static str, given: Given, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid { setting: self.name(key, given), message: message.into() }
    }
}

/// The TOML file's settings (the same names, in snake case).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FileConfig {
    pub bind: Option<String>,
    pub database_url: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub keys_dir: Option<PathBuf>,
    pub signing_key: Option<PathBuf>,
    pub issuing_key: Option<PathBuf>,
    pub admin_token: Option<String>,
    pub admin_token_file: Option<PathBuf>,
    pub database_url_file: Option<PathBuf>,
    pub workers: Option<usize>,
    pub db_pool_size: Option<u32>,
    pub max_body_bytes: Option<usize>,
    pub body_timeout_s: Option<u64>,
    pub retention_days: Option<u32>,
    pub jobs: Option<bool>,
    pub retention_schedule: Option<String>,
    pub rollup_schedule: Option<String>,
    pub rate_limit_per_minute: Option<u32>,
    pub rate_limit_per_address: Option<u32>,
    pub rate_limit_ipv6_prefix: Option<u8>,
    pub trusted_proxies: Option<Vec<String>>,
    pub public_insights: Option<bool>,
    pub insights_min_installs: Option<u32>,
    pub public_names: Option<Vec<String>>,
    pub metrics_bind: Option<String>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub limits: Option<BatchLimits>,
    /// Seats and exempt deployments (a table: TOML only).
    pub seats: Option<crate::checkin::SeatRules>,
    /// Further admin tokens, each named and scoped (a table list: TOML only).
    pub admin_tokens: Option<Vec<TokenEntry>>,
}

/// One further admin token in the TOML file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenEntry {
    /// How the audit log names it: 1 to 64 of a-z, 0-9, `-` and `_`.
    pub name: String,
    /// `read` or `full`.
    pub scope: crate::server::auth::Scope,
    /// The token itself, or `token_file` (better: a secret file).
    #[serde(default)]
    pub token: Option<String>,
    #[serde(default)]
    pub token_file: Option<PathBuf>,
}

/// An admin token with its name and scope.
#[derive(Clone, PartialEq, Eq)]
pub struct NamedToken {
    pub name: String,
    pub scope: crate::server::auth::Scope,
    pub token: String,
}

impl std::fmt::Debug for NamedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NamedToken")
            .field("name", &self.name)
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

/// The validated configuration a server runs with.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub bind: SocketAddr,
    pub database_url: String,
    pub data_dir: PathBuf,
    pub keys_dir: PathBuf,
    pub signing_key: PathBuf,
    pub issuing_key: Option<PathBuf>,
    /// The unnamed full-scope token (`admin`): configured, or generated in the development
    /// set-up; none when only named tokens are configured.
    pub admin_token: Option<String>,
    pub workers: usize,
    pub db_pool_size: u32,
    pub max_body_bytes: usize,
    /// How long a request body may take to arrive before the request is answered 408.
    pub body_timeout: std::time::Duration,
    pub retention_days: u32,
    pub jobs: bool,
    /// Cron expressions with seconds (`sec min hour day month weekday`), in UTC.
    pub retention_schedule: String,
    pub rollup_schedule: String,
    /// Check-ins one instance may make per minute before getting 429.
    pub rate_limit_per_minute: u32,
    /// Check-ins one client address may start per minute before getting 429.
    pub rate_limit_per_address: u32,
    /// The IPv6 prefix one address allowance covers (64: a /64 counts as one address).
    pub rate_limit_ipv6_prefix: u8,
    /// Reverse proxies whose `X-Forwarded-For` names the client; empty: the peer is the client.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    pub limits: BatchLimits,
    /// The soft seat overage, loopback places and private-network exemption by default.
    pub seats: crate::checkin::SeatRules,
    /// Serve the public, k-anonymous insights (`/insights`, `/v1/insights`).
    pub public_insights: bool,
    /// The fewest distinct licenses (customers) behind any public figure (k; at least 2).
    pub insights_min_installs: u32,
    /// Names the public insights publish (`(kind, name)`), beside those marked in the dashboard.
    pub public_names: crate::store::PublicNames,
    /// The certificate chain and key the server terminates TLS with (reloaded on SIGHUP);
    /// `None`: plain HTTP, for a reverse proxy in front to terminate TLS.
    pub tls: Option<TlsFiles>,
    /// Where `/metrics` is served without a token, besides the main address (with one).
    pub metrics_bind: Option<SocketAddr>,
    /// Admin tokens besides `admin_token` (which is named `admin`, of full scope).
    pub admin_tokens: Vec<NamedToken>,
    /// What the development set-up generated on this start, for the warning banner. It names
    /// no secret, so it may be logged.
    pub development: Vec<String>,
    /// The admin token was generated on this start: the banner on the terminal shows it once.
    pub admin_token_generated: bool,
    /// Files and directories the development set-up created on this start, newest last: a
    /// start that fails removes them ([`remove_created`]), so it leaves no generated key or
    /// token behind.
    pub created: Vec<PathBuf>,
    /// How the key settings were given, for `load_keys`' errors.
    pub key_setting_names: KeySettingNames,
}

/// The PEM files of the server's certificate, and the settings that named them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// `tls_cert` and `tls_key` as they were given, for errors.
    pub cert_setting: String,
    pub key_setting: String,
}

/// The key settings named as they were given (flag, variable or file key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySettingNames {
    pub keys_dir: String,
    pub signing_key: String,
    pub issuing_key: String,
}

impl Default for KeySettingNames {
    /// The variables' names.
    fn default() -> Self {
        KeySettingNames {
            keys_dir: "LICENSOR_KEYS_DIR".into(),
            signing_key: "LICENSOR_SIGNING_KEY".into(),
            issuing_key: "LICENSOR_ISSUING_KEY".into(),
        }
    }
}

/// A setting that is missing, malformed or inconsistent.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The TOML file could not be read.
    #[error("cannot read the config file {path}")]
    Read { path: PathBuf, source: std::io::Error },
    /// The TOML file is not valid, or names a setting that does not exist.
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    /// A setting's value is invalid; `setting` is named as it was given (flag, variable or
    /// file key).
    #[error("{setting}: {message}")]
    Invalid { setting: String, message: String },
    /// A key could not be loaded or created.
    #[error("{setting}")]
    Key { setting: String, source: keys::KeyError },
    /// Files of the development set-up could not be written.
    #[error("cannot create the development set-up in {path}")]
    Setup { path: PathBuf, source: std::io::Error },
}

const DEFAULT_BIND: &str = "127.0.0.1:8080";
const MIN_ADMIN_TOKEN_LEN: usize = 24;

fn invalid(setting: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { setting: setting.to_owned(), message: message.into() }
}

impl ServerConfig {
    /// Resolves flags and environment over the TOML file over defaults, creating the
    /// development set-up (keys, admin token) where nothing was configured.
    pub fn resolve(opts: ServeOptions) -> Result<ServerConfig, ConfigError> {
        let mut created = Vec::new();
        match ServerConfig::resolve_creating(opts, &mut created) {
            Ok(mut config) => {
                config.created = created;
                Ok(config)
            }
            Err(e) => {
                remove_created(&created);
                Err(e)
            }
        }
    }

    fn resolve_creating(opts: ServeOptions, created: &mut Vec<PathBuf>) -> Result<ServerConfig, ConfigError> {
        let file = match &opts.config_file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|source| ConfigError::Read { path: path.clone(), source })?;
                toml::from_str::<FileConfig>(&text).map_err(|e| ConfigError::Parse {
                    path: path.clone(),
                    message: format!("{}{}", where_in(&text, e.span()), e.message()),
                })?
            }
            None => FileConfig::default(),
        };
        let mut development = Vec::new();
        let src = Sources { from_env: &opts.from_env, file: opts.config_file.as_deref() };

        let (bind_text, given) = src.pick("bind", opts.bind, file.bind);
        let bind_text = bind_text.unwrap_or_else(|| DEFAULT_BIND.to_owned());
        let bind: SocketAddr = bind_text.parse().map_err(|_| {
            src.invalid("bind", given, format!("{bind_text:?} is not an address like 127.0.0.1:8080"))
        })?;
        let data_dir = opts.data_dir.or(file.data_dir).unwrap_or_else(|| PathBuf::from("data"));
        let (database_url, given) = src.pick("database_url", opts.database_url, file.database_url);
        let (url_file, url_file_given) =
            src.pick("database_url_file", opts.database_url_file, file.database_url_file);
        let (database_url, url_key, given) = src.value_or_file(
            ("database_url", database_url, given),
            ("database_url_file", url_file, url_file_given),
        )?;
        let database_url = match database_url {
            Some(url) => url,
            None => {
                ensure_data_dir(&data_dir, created)
                    .map_err(|source| ConfigError::Setup { path: data_dir.clone(), source })?;
                let file = data_dir.join("licensor.db");
                if !file.exists() {
                    // Created by the store when it opens; a failed start removes it with the
                    // rest (a missing -wal or -shm file is simply skipped).
                    created.extend(
                        ["licensor.db", "licensor.db-wal", "licensor.db-shm"].map(|f| data_dir.join(f)),
                    );
                }
                let url = format!("sqlite://{}", file.display());
                development.push(format!("database: {url} (embedded SQLite)"));
                url
            }
        };
        crate::store::Target::parse(&database_url).map_err(|e| src.invalid(url_key, given, e.to_string()))?;

        let (keys_dir, keys_given) = src.pick("keys_dir", opts.keys_dir, file.keys_dir);
        let (signing_key, signing_given) = src.pick("signing_key", opts.signing_key, file.signing_key);
        let (issuing_key, issuing_given) = src.pick("issuing_key", opts.issuing_key, file.issuing_key);
        let key_setting_names = KeySettingNames {
            keys_dir: src.name("keys_dir", keys_given),
            signing_key: src.name("signing_key", signing_given),
            issuing_key: src.name("issuing_key", issuing_given),
        };
        let keys_configured = keys_dir.is_some();
        let keys_dir = keys_dir.unwrap_or_else(|| data_dir.join("keys"));
        // The development set-up keeps its private keys apart from the ring of trusted public
        // keys, which may be copied to clients as it is.
        let private_dir = data_dir.join("private");
        let signing_key = match signing_key {
            Some(path) => path,
            None => development_key(
                &private_dir,
                &keys_dir,
                "dev-server",
                Role::Lease,
                &mut development,
                created,
            )?,
        };
        let issuing_key = match issuing_key {
            Some(path) => Some(path),
            // Only a development set-up issues licenses without being told to, so that a
            // fresh checkout can run the whole flow.
            None if !keys_configured => Some(development_key(
                &private_dir,
                &keys_dir,
                "vendor-dev",
                Role::License,
                &mut development,
                created,
            )?),
            None => None,
        };
        let (admin_token, given) = src.pick("admin_token", opts.admin_token, file.admin_token);
        let (token_file, token_file_given) =
            src.pick("admin_token_file", opts.admin_token_file, file.admin_token_file);
        let (admin_token, token_key, given) = src.value_or_file(
            ("admin_token", admin_token, given),
            ("admin_token_file", token_file, token_file_given),
        )?;
        if admin_token
            .as_ref()
            .is_some_and(|t| t.len() < MIN_ADMIN_TOKEN_LEN || t.chars().any(char::is_whitespace))
        {
            return Err(src.invalid(
                token_key,
                given,
                format!("must be at least {MIN_ADMIN_TOKEN_LEN} characters without white space"),
            ));
        }

        let (workers, given) = src.pick("workers", opts.workers, file.workers);
        let workers = workers.unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
        if !(1..=256).contains(&workers) {
            return Err(src.invalid("workers", given, "must be from 1 to 256"));
        }
        let (db_pool_size, given) = src.pick("db_pool_size", opts.db_pool_size, file.db_pool_size);
        let db_pool_size = db_pool_size.unwrap_or(16);
        if !(1..=512).contains(&db_pool_size) {
            return Err(src.invalid("db_pool_size", given, "must be from 1 to 512"));
        }
        let (max_body_bytes, given) = src.pick("max_body_bytes", opts.max_body_bytes, file.max_body_bytes);
        let max_body_bytes = max_body_bytes.unwrap_or(1024 * 1024);
        if !(1024..=64 * 1024 * 1024).contains(&max_body_bytes) {
            return Err(src.invalid("max_body_bytes", given, "must be from 1 KiB to 64 MiB"));
        }
        let (body_timeout_s, given) = src.pick("body_timeout_s", opts.body_timeout_s, file.body_timeout_s);
        let body_timeout_s = body_timeout_s.unwrap_or(10);
        if !(1..=300).contains(&body_timeout_s) {
            return Err(src.invalid("body_timeout_s", given, "must be from 1 to 300 seconds"));
        }
        let (retention_days, given) = src.pick("retention_days", opts.retention_days, file.retention_days);
        let retention_days = retention_days.unwrap_or(90);
        if !(1..=3650).contains(&retention_days) {
            return Err(src.invalid("retention_days", given, "must be from 1 to 3650"));
        }
        let (retention_schedule, retention_given) =
            src.pick("retention_schedule", opts.retention_schedule, file.retention_schedule);
        let retention_schedule = retention_schedule.unwrap_or_else(|| "0 15 3 * * *".to_owned());
        let (rollup_schedule, rollup_given) =
            src.pick("rollup_schedule", opts.rollup_schedule, file.rollup_schedule);
        let rollup_schedule = rollup_schedule.unwrap_or_else(|| "0 5 0 * * *".to_owned());
        for (setting, given, expr) in [
            ("retention_schedule", retention_given, &retention_schedule),
            ("rollup_schedule", rollup_given, &rollup_schedule),
        ] {
            if expr.split_whitespace().count() != 6 {
                return Err(src.invalid(
                    setting,
                    given,
                    format!("{expr:?} is not a cron expression with seconds (6 fields)"),
                ));
            }
        }
        let (rate_limit_per_minute, given) =
            src.pick("rate_limit_per_minute", opts.rate_limit_per_minute, file.rate_limit_per_minute);
        let rate_limit_per_minute = rate_limit_per_minute.unwrap_or(30);
        if rate_limit_per_minute == 0 {
            return Err(src.invalid("rate_limit_per_minute", given, "must be at least 1"));
        }
        let (rate_limit_per_address, given) =
            src.pick("rate_limit_per_address", opts.rate_limit_per_address, file.rate_limit_per_address);
        let rate_limit_per_address = rate_limit_per_address.unwrap_or(600);
        if rate_limit_per_address == 0 {
            return Err(src.invalid("rate_limit_per_address", given, "must be at least 1"));
        }
        let (prefix, given) =
            src.pick("rate_limit_ipv6_prefix", opts.rate_limit_ipv6_prefix, file.rate_limit_ipv6_prefix);
        let rate_limit_ipv6_prefix = prefix.unwrap_or(64);
        if !(32..=128).contains(&rate_limit_ipv6_prefix) {
            return Err(src.invalid(
                "rate_limit_ipv6_prefix",
                given,
                "must be from 32 to 128 (64: what one subscriber holds)",
            ));
        }
        let (proxies, given) = src.pick(
            "trusted_proxies",
            opts.trusted_proxies.as_deref().map(comma_list),
            file.trusted_proxies,
        );
        let trusted_proxies = proxies
            .unwrap_or_default()
            .iter()
            .map(|p: &String| {
                p.parse::<ipnet::IpNet>()
                    .or_else(|_| p.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                    .map_err(|_| {
                        src.invalid(
                            "trusted_proxies",
                            given,
                            format!("{p:?} is not an address or a network like 10.0.0.0/8"),
                        )
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;

        let (min_installs, given) =
            src.pick("insights_min_installs", opts.insights_min_installs, file.insights_min_installs);
        let insights_min_installs = min_installs.unwrap_or(10);
        if insights_min_installs < 2 {
            return Err(src.invalid(
                "insights_min_installs",
                given,
                "must be at least 2: a figure from one install would single it out",
            ));
        }

        let (names, given) =
            src.pick("public_names", opts.public_names.as_deref().map(comma_list), file.public_names);
        let public_names = names
            .unwrap_or_default()
            .iter()
            .map(|entry: &String| {
                let parsed = entry.split_once(':').filter(|(kind, name)| {
                    crate::store::PUBLIC_KINDS.contains(kind) && crate::privacy::fits_name_grammar(name)
                });
                parsed.map(|(kind, name)| (kind.to_owned(), name.to_owned())).ok_or_else(|| {
                    src.invalid(
                        "public_names",
                        given,
                        format!(
                            "{entry:?} is not kind:name with a kind of {} and a name that is an identifier",
                            crate::store::PUBLIC_KINDS.join(", ")
                        ),
                    )
                })
            })
            .collect::<Result<crate::store::PublicNames, _>>()?;

        let (metrics_text, given) = src.pick("metrics_bind", opts.metrics_bind, file.metrics_bind);
        let metrics_bind = match metrics_text {
            Some(text) => {
                let addr: SocketAddr = text.parse().map_err(|_| {
                    src.invalid(
                        "metrics_bind",
                        given,
                        format!("{text:?} is not an address like 127.0.0.1:9090"),
                    )
                })?;
                if addr == bind && addr.port() != 0 {
                    return Err(src.invalid(
                        "metrics_bind",
                        given,
                        "must differ from the main address (bind)",
                    ));
                }
                Some(addr)
            }
            None => None,
        };
        let mut admin_tokens: Vec<NamedToken> = Vec::new();
        for entry in file.admin_tokens.unwrap_or_default() {
            let setting = format!(
                "admin_tokens in {}",
                opts.config_file
                    .as_deref()
                    .map_or_else(|| "the config file".into(), |p| p.display().to_string())
            );
            let bad = |message: String| ConfigError::Invalid { setting: setting.clone(), message };
            let name = entry.name.clone();
            if !(1..=64).contains(&name.len())
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
            {
                return Err(bad(format!("{name:?} is not a token name (1 to 64 of a-z, 0-9, - and _)")));
            }
            if name == "admin" || admin_tokens.iter().any(|t| t.name == name) {
                return Err(bad(format!("the name {name:?} is taken (\"admin\" is admin_token's)")));
            }
            let token = match (entry.token, entry.token_file) {
                (Some(token), None) => token,
                (None, Some(path)) => std::fs::read_to_string(&path)
                    .map_err(|e| bad(format!("{name}: cannot read {}: {e}", path.display())))?
                    .trim_end_matches(['\n', '\r'])
                    .to_owned(),
                _ => return Err(bad(format!("{name}: give token or token_file, one of them"))),
            };
            if token.len() < MIN_ADMIN_TOKEN_LEN || token.chars().any(char::is_whitespace) {
                return Err(bad(format!(
                    "{name}: the token must be at least {MIN_ADMIN_TOKEN_LEN} characters without white space"
                )));
            }
            if admin_token.as_ref() == Some(&token) || admin_tokens.iter().any(|t| t.token == token) {
                return Err(bad(format!("{name}: the token is another name's too; each needs its own")));
            }
            admin_tokens.push(NamedToken { name, scope: entry.scope, token });
        }
        // A set-up with named tokens has chosen its tokens: none is generated beside them, and
        // without admin_token there is no unnamed one.
        let (admin_token, admin_token_generated) = match admin_token {
            Some(token) => (Some(token), false),
            None if !admin_tokens.is_empty() => (None, false),
            None => {
                let (token, generated) = development_admin_token(&data_dir, &mut development, created)?;
                (Some(token), generated)
            }
        };
        let (tls_cert, cert_given) = src.pick("tls_cert", opts.tls_cert, file.tls_cert);
        let (tls_key, key_given) = src.pick("tls_key", opts.tls_key, file.tls_key);
        let tls = match (tls_cert, tls_key) {
            (Some(cert), Some(key)) => Some(TlsFiles {
                cert,
                key,
                cert_setting: src.name("tls_cert", cert_given),
                key_setting: src.name("tls_key", key_given),
            }),
            (None, None) => None,
            (Some(_), None) => {
                return Err(src.invalid(
                    "tls_cert",
                    cert_given,
                    "needs the certificate's key as well (tls_key)",
                ))
            }
            (None, Some(_)) => {
                return Err(src.invalid("tls_key", key_given, "needs the certificate as well (tls_cert)"))
            }
        };

        Ok(ServerConfig {
            bind,
            database_url,
            data_dir,
            keys_dir,
            signing_key,
            issuing_key,
            admin_token,
            workers,
            db_pool_size,
            max_body_bytes,
            body_timeout: std::time::Duration::from_secs(body_timeout_s),
            retention_days,
            jobs: opts.jobs.or(file.jobs).unwrap_or(true),
            retention_schedule,
            rollup_schedule,
            rate_limit_per_minute,
            rate_limit_per_address,
            rate_limit_ipv6_prefix,
            trusted_proxies,
            limits: file.limits.unwrap_or_default(),
            seats: file.seats.unwrap_or_default(),
            public_insights: opts.public_insights.or(file.public_insights).unwrap_or(false),
            insights_min_installs,
            public_names,
            tls,
            metrics_bind,
            admin_tokens,
            development,
            admin_token_generated,
            created: Vec::new(),
            key_setting_names,
        })
    }

    /// Loads the key ring and the keys, checking that they fit together.
    pub fn load_keys(&self) -> Result<(KeyRing, Signer, Option<Signer>), ConfigError> {
        let ring = KeyRing::load_dir(&self.keys_dir).map_err(|source| ConfigError::Key {
            setting: self.key_setting_names.keys_dir.clone(),
            source,
        })?;
        // One key, one role: the lease key signs answers only, the issuing key licenses only.
        let signer = Signer::load_for(&self.signing_key, Role::Lease).map_err(|source| ConfigError::Key {
            setting: self.key_setting_names.signing_key.clone(),
            source,
        })?;
        if ring.get(signer.kid(), Role::Lease) != Some(&signer.verifying_key()) {
            return Err(invalid(
                &self.key_setting_names.signing_key,
                format!(
                    "the public half of lease-signing key {:?} is not in the key ring {} as a lease key (clients \
                     trusting that ring could not verify leases): copy {}.lease.public.pem there",
                    signer.kid(),
                    self.keys_dir.display(),
                    signer.kid()
                ),
            ));
        }
        let issuer = match &self.issuing_key {
            Some(path) => Some(Signer::load_for(path, Role::License).map_err(|source| ConfigError::Key {
                setting: self.key_setting_names.issuing_key.clone(),
                source,
            })?),
            None => None,
        };
        if !ring.kids().any(|kid| ring.role(kid) == Some(Role::License)) {
            return Err(invalid(
                &self.key_setting_names.keys_dir,
                format!(
                    "no *.license.public.pem keys in {}: no license could verify",
                    self.keys_dir.display()
                ),
            ));
        }
        Ok((ring, signer, issuer))
    }
}

/// Creates the data directory, if missing, so that only its owner may enter it: it holds the
/// admin token, the private keys and the database of a development set-up.
fn ensure_data_dir(data_dir: &Path, created: &mut Vec<PathBuf>) -> std::io::Result<()> {
    if data_dir.exists() {
        return Ok(());
    }
    created.push(data_dir.to_owned());
    let mut dir = std::fs::DirBuilder::new();
    dir.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt as _;
        dir.mode(0o700);
    }
    dir.create(data_dir)
}

/// The development key `kid` of `role`, generated on first start: the private half in
/// `private_dir` (0700), the public half in the ring `public_dir`, which so holds no secret.
fn development_key(
    private_dir: &Path,
    public_dir: &Path,
    kid: &str,
    role: Role,
    development: &mut Vec<String>,
    created: &mut Vec<PathBuf>,
) -> Result<PathBuf, ConfigError> {
    let path = private_dir.join(format!("{kid}.{role}{}", keys::PRIVATE_SUFFIX));
    if let Some(data_dir) = private_dir.parent() {
        ensure_data_dir(data_dir, created)
            .map_err(|source| ConfigError::Setup { path: data_dir.to_owned(), source })?;
    }
    let public = public_dir.join(format!("{kid}.{role}{}", keys::PUBLIC_SUFFIX));
    if !path.exists() && public.exists() {
        // A data directory from before key roles kept the private key beside the public one.
        return Err(invalid(
            "keys",
            format!(
                "{} exists but its private key {} does not: move the private key there (the layout before \
                 key roles kept it in the ring directory), or start the development set-up afresh",
                public.display(),
                path.display()
            ),
        ));
    }
    if !path.exists() {
        let signer = Signer::generate(kid, role)
            .map_err(|source| ConfigError::Key { setting: "keys".into(), source })?;
        for dir in [private_dir, public_dir] {
            if !dir.exists() {
                created.push(dir.to_owned());
            }
        }
        let paths = signer
            .write_split(private_dir, public_dir)
            .map_err(|source| ConfigError::Key { setting: "keys".into(), source })?;
        created.extend([path.clone(), paths.public.clone()]);
        development.push(format!(
            "generated {role} key {} (public half in {})",
            path.display(),
            paths.public.display()
        ));
    } else {
        development.push(format!("using development {role} key {}", path.display()));
    }
    Ok(path)
}

/// Where in a TOML file an error is, as its writer would look for it: `line 3, [limits]
/// max_usage: `. The parser gives a byte span; the key is what stands before `=` on that
/// line, and the table the last `[header]` above it.
fn where_in(text: &str, span: Option<std::ops::Range<usize>>) -> String {
    let Some(span) = span else { return String::new() };
    let start = span.start.min(text.len());
    let before = &text[..start];
    let line_no = before.matches('\n').count() + 1;
    let line = text[before.rfind('\n').map_or(0, |i| i + 1)..].lines().next().unwrap_or("");
    let key = line.split_once('=').map(|(k, _)| k.trim()).filter(|k| !k.is_empty() && !k.starts_with('['));
    let table = before
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('[') && l.ends_with(']'))
        .map(|t| format!("{t} "));
    match key {
        Some(key) => format!("line {line_no}, {}{key}: ", table.unwrap_or_default()),
        None => format!("line {line_no}: "),
    }
}

/// The development admin token in `data_dir/admin-token` (0600), generated on first start
/// (then the answer says so, and the banner prints it once).
fn development_admin_token(
    data_dir: &Path,
    development: &mut Vec<String>,
    created: &mut Vec<PathBuf>,
) -> Result<(String, bool), ConfigError> {
    use base64::Engine as _;
    use rand::RngCore as _;
    use std::io::Write as _;
    let path = data_dir.join("admin-token");
    let setup = |source| ConfigError::Setup { path: path.clone(), source };
    if let Ok(token) = std::fs::read_to_string(&path) {
        development.push(format!("admin token read from {}", path.display()));
        return Ok((token.trim().to_owned(), false));
    }
    ensure_data_dir(data_dir, created).map_err(setup)?;
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    // A fixed prefix: a token must never start with '-' (a command line would take it for a
    // flag), and it makes a leaked token easy to recognise and search for.
    let token = format!("lsa_{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options.open(&path).map_err(setup)?;
    created.push(path.clone());
    file.write_all(token.as_bytes()).map_err(setup)?;
    // The text banner prints it this once so the developer can use it (see
    // `ServerConfig::admin_token_generated`); it is never logged.
    development.push(format!("generated admin token (stored in {}, mode 0600)", path.display()));
    Ok((token, true))
}

/// Removes files and then directories created by a start (`ServerConfig::created`), newest
/// first, for a start that failed; a directory is removed
/// only when empty (a database file may have been created in it since, and is the operator's).
pub fn remove_created(created: &[PathBuf]) {
    for path in created.iter().rev() {
        let removed = if path.is_dir() { std::fs::remove_dir(path) } else { std::fs::remove_file(path) };
        if let Err(e) = removed {
            tracing::debug!("leaving {} in place: {e}", path.display());
        }
    }
}

/// A list setting given as one flag or variable: comma-separated, blanks ignored.
fn comma_list(text: &str) -> Vec<String> {
    text.split(',').map(str::trim).filter(|p| !p.is_empty()).map(str::to_owned).collect()
}
