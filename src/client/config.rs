//! The verifier's configuration: built in code, read from the environment, or both (the
//! environment read into a `Config` that code then adjusts). Reading checks every value and
//! names the variable at fault; nothing here touches the network or the store.

use chrono::Utc;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::policy::{parse_switch, Switches};
use super::telemetry::{Limits, Sampling};
use crate::keys::KeyRing;

pub use crate::time::Clock;

/// The license key, given directly or as a file to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LicenseSource {
    Key(String),
    File(PathBuf),
}

/// The trusted key ring: built into the application, or a directory of public keys.
#[derive(Debug, Clone)]
pub enum KeySource {
    Ring(KeyRing),
    Dir(PathBuf),
}

/// Everything the verifier needs.
#[derive(Clone)]
pub struct Config {
    /// `LICENSOR_LICENSE_KEY` or `LICENSOR_LICENSE_FILE`.
    pub license: Option<LicenseSource>,
    /// `LICENSOR_SERVER_URL`: the license server's base URL. `https://`, or `http://` to a
    /// loopback address; plain `http://` elsewhere only with `allow_insecure_http`.
    pub server_url: Option<String>,
    /// `LICENSOR_ALLOW_INSECURE_HTTP`: send license keys and telemetry over plain `http://` to
    /// a server that is not on a loopback address (a lab, a TLS-terminating sidecar on another
    /// host). Off by default.
    pub allow_insecure_http: bool,
    /// `LICENSOR_KEYS_DIR`, or keys built into the application.
    pub keys: Option<KeySource>,
    /// `LICENSOR_CA_CERT`: a PEM file of root certificates trusted beside the system's, for a
    /// license server whose certificate a private authority signed.
    pub ca_certificate: Option<PathBuf>,
    /// `LICENSOR_DATA_DIR`: where the local store lives.
    pub data_dir: PathBuf,
    /// `LICENSOR_INSTANCE_URL`: the deployment's public URL.
    pub instance_url: Option<String>,
    /// `LICENSOR_INSTALL_ID`: names the install this process belongs to, so that every
    /// replica and redeploy of one deployment shares its seat (see [`crate::client::install`]).
    pub install_id: Option<String>,
    /// Where the machine's stable identity is read (`/etc/machine-id`, else
    /// `/var/lib/dbus/machine-id`); `None` reads none. Set in code (tests, other platforms).
    pub machine_id_files: Vec<PathBuf>,
    /// `TELEMETRY_DISABLED`, `DO_NOT_TRACK`, `LICENSOR_TELEMETRY_DEBUG`.
    pub switches: Switches,
    /// The application's version, sent with each check-in.
    pub software_version: String,
    /// The application's modules in use, sent in the batch's environment.
    pub modules_enabled: Vec<String>,
    pub limits: Limits,
    /// Which raw error events are kept.
    pub sampling: Sampling,
    /// How often tracked figures go from memory to the local store.
    pub flush_every: Duration,
    /// How often the registered health checks run.
    pub health_every: Duration,
    /// How soon after start the first check-in happens (a random part up to as much again
    /// is added, so a fleet restarted together does not call at once).
    pub first_check_in_after: Duration,
    /// The longest one check-in request may take.
    pub request_timeout: Duration,
    /// `LICENSOR_PUBLIC_INSIGHTS_URL`: the vendor's public insights page (aggregated figures
    /// across installs), which the privacy page links when set.
    pub public_insights_url: Option<String>,
    /// `LICENSOR_REPORT_DIR`: an air-gapped Enterprise deployment writes its signed usage
    /// reports here on the tier's schedule ([`crate::client::sender::ReportFiles`]), for an
    /// operator to carry to the vendor. Unused in other modes (start-up says so).
    pub report_dir: Option<PathBuf>,
    /// Where telemetry batches go instead of the license server (Enterprise only; see
    /// [`crate::client::sender`]). Set in code; `None` keeps the default.
    pub sender: Option<Arc<dyn crate::client::sender::Sender>>,
    /// Print start-up's notices (why telemetry is on, off, or not what was asked for) once to
    /// stderr, whether or not the host has a `tracing` subscriber. Default on; a host that
    /// shows them itself ([`crate::client::Licensing::notices`]) turns it off.
    pub print_notices: bool,
    pub clock: Clock,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The license key is not secret, but it identifies the customer: shown by kind only.
        f.debug_struct("Config")
            .field(
                "license",
                &self.license.as_ref().map(|l| match l {
                    LicenseSource::Key(_) => "key".to_string(),
                    LicenseSource::File(p) => format!("file {}", p.display()),
                }),
            )
            .field("server_url", &self.server_url)
            .field("data_dir", &self.data_dir)
            .field("instance_url", &self.instance_url)
            .field("install_id", &self.install_id)
            .field("switches", &self.switches)
            .field("software_version", &self.software_version)
            .field("report_dir", &self.report_dir)
            .field("sender", &self.sender.as_ref().map(|s| s.describe()))
            .finish_non_exhaustive()
    }
}

/// A configuration value that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A variable holds a value of the wrong shape; the message says which and why.
    #[error("{0}")]
    Invalid(String),
}

impl Config {
    /// A configuration in code: the license key and the trusted keys, everything else at its
    /// default (no server, no instance URL: a development instance until they are set).
    pub fn new(license_key: impl Into<String>, keys: KeyRing, software_version: impl Into<String>) -> Config {
        Config {
            license: Some(LicenseSource::Key(license_key.into())),
            keys: Some(KeySource::Ring(keys)),
            software_version: software_version.into(),
            ..Config::defaults()
        }
    }

    fn defaults() -> Config {
        Config {
            license: None,
            server_url: None,
            allow_insecure_http: false,
            keys: None,
            ca_certificate: None,
            data_dir: default_data_dir(|k| std::env::var(k).ok()),
            instance_url: None,
            install_id: None,
            machine_id_files: vec![
                PathBuf::from("/etc/machine-id"),
                PathBuf::from("/var/lib/dbus/machine-id"),
            ],
            switches: Switches::default(),
            software_version: String::new(),
            modules_enabled: Vec::new(),
            limits: Limits::default(),
            sampling: Sampling::Always,
            flush_every: Duration::from_secs(5 * 60),
            health_every: Duration::from_secs(60),
            first_check_in_after: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            public_insights_url: None,
            report_dir: None,
            sender: None,
            print_notices: true,
            clock: Arc::new(Utc::now),
        }
    }

    /// Reads the process environment.
    pub fn from_env(software_version: impl Into<String>) -> Result<Config, ConfigError> {
        Config::from_vars(|k| std::env::var(k).ok(), software_version)
    }

    /// Reads the environment through `var` (tests pass a map).
    pub fn from_vars(
        var: impl Fn(&str) -> Option<String>,
        software_version: impl Into<String>,
    ) -> Result<Config, ConfigError> {
        let text = |k: &str| var(k).map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
        let license = match (text("LICENSOR_LICENSE_KEY"), text("LICENSOR_LICENSE_FILE")) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::Invalid(
                    "LICENSOR_LICENSE_KEY and LICENSOR_LICENSE_FILE are both set: set one".into(),
                ))
            }
            (Some(key), None) => Some(LicenseSource::Key(key)),
            (None, Some(file)) => Some(LicenseSource::File(file.into())),
            (None, None) => None,
        };
        let switch = |k: &str| parse_switch(k, var(k).as_deref()).map_err(ConfigError::Invalid);
        let allow_insecure_http = switch("LICENSOR_ALLOW_INSECURE_HTTP")?;
        let server_url = text("LICENSOR_SERVER_URL");
        if let Some(url) = &server_url {
            check_server_url(url, allow_insecure_http).map_err(ConfigError::Invalid)?;
        }
        let mut config = Config {
            license,
            server_url,
            allow_insecure_http,
            keys: text("LICENSOR_KEYS_DIR").map(|d| KeySource::Dir(d.into())),
            ca_certificate: text("LICENSOR_CA_CERT").map(PathBuf::from),
            public_insights_url: match text("LICENSOR_PUBLIC_INSIGHTS_URL") {
                Some(url) if url.starts_with("https://") || url.starts_with("http://") => Some(url),
                Some(url) => {
                    return Err(ConfigError::Invalid(format!(
                        "LICENSOR_PUBLIC_INSIGHTS_URL={url:?} must be an http:// or https:// URL"
                    )))
                }
                None => None,
            },
            data_dir: default_data_dir(&var),
            instance_url: text("LICENSOR_INSTANCE_URL"),
            install_id: match text("LICENSOR_INSTALL_ID") {
                Some(id) if id.chars().count() > 128 || id.chars().any(char::is_control) => {
                    return Err(ConfigError::Invalid(format!(
                        "LICENSOR_INSTALL_ID={id:?} must be at most 128 characters, none of them control characters"
                    )))
                }
                id => id,
            },
            report_dir: text("LICENSOR_REPORT_DIR").map(PathBuf::from),
            switches: Switches {
                telemetry_disabled: switch("TELEMETRY_DISABLED")?,
                do_not_track: switch("DO_NOT_TRACK")?,
                debug: switch("LICENSOR_TELEMETRY_DEBUG")?,
                // Read from the data directory when the verifier opens.
                choice: None,
            },
            software_version: software_version.into(),
            ..Config::defaults()
        };
        if let Some(dir) = text("LICENSOR_DATA_DIR") {
            config.data_dir = dir.into();
        }
        Ok(config)
    }
}

/// Checks a license server URL: https with a host, or plain http to a loopback address (the
/// license key and telemetry never cross a network in the clear), or plain http anywhere when
/// the operator allowed it explicitly.
pub fn check_server_url(url: &str, allow_insecure_http: bool) -> Result<(), String> {
    let parsed = match reqwest::Url::parse(url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some_and(|h| !h.is_empty()) => u,
        Ok(_) => {
            return Err(format!("LICENSOR_SERVER_URL={url:?} must be an http:// or https:// URL with a host"))
        }
        Err(e) => return Err(format!("LICENSOR_SERVER_URL={url:?} is not a URL: {e}")),
    };
    let host = parsed.host_str().unwrap_or("").trim_start_matches('[').trim_end_matches(']');
    let loopback = match host.parse::<std::net::IpAddr>() {
        Ok(ip) => ip.is_loopback(),
        Err(_) => host.eq_ignore_ascii_case("localhost"),
    };
    if parsed.scheme() == "http" && !loopback && !allow_insecure_http {
        return Err(format!(
            "LICENSOR_SERVER_URL={url:?} is plain http to a host that is not on this machine: the license key \
             and telemetry would cross the network unencrypted. Use https://, or set \
             LICENSOR_ALLOW_INSECURE_HTTP=true to allow it"
        ));
    }
    Ok(())
}

/// `$XDG_DATA_HOME/licensor`, else `$HOME/.local/share/licensor`, else `./licensor-data`.
fn default_data_dir(var: impl Fn(&str) -> Option<String>) -> PathBuf {
    if let Some(xdg) = var("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(xdg).join("licensor");
    }
    if let Some(home) = var("HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(home).join(".local/share/licensor");
    }
    PathBuf::from("licensor-data")
}
