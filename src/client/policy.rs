//! What a deployment may collect and send, decided once at start from its tier, its public URL,
//! the environment and the operator's saved choice (`licensor telemetry enable|disable`):
//! development instances collect and send nothing; Community and Pro must send telemetry
//! (opting out is not honoured, and start-up says why); Enterprise may send basic health only,
//! or run air-gapped. No I/O: the environment and the choice come in as values.

use ipnet::{Ipv4Net, Ipv6Net};
use std::net::IpAddr;
use std::sync::LazyLock;

use super::choice::Choice;
use crate::license::Tier;

/// How the verifier runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// A development instance: the license is verified offline, nothing is collected or sent.
    Development { reason: String },
    /// Enterprise with telemetry disabled: no network connection at all, expiry enforced
    /// locally. Figures are collected at `level` into the local store, where they stay until
    /// the operator carries a signed usage report to the vendor by hand.
    AirGapped { level: Level },
    /// Telemetry is collected and sent at each check-in (or, with `debug`, printed to stderr
    /// instead of sent), at `level`.
    Telemetry { debug: bool, level: Level },
}

/// How much a check-in carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// Usage, request performance, errors and sessions, with the environment and its health.
    Full,
    /// The environment and its health only (Enterprise): nothing is collected, and each batch
    /// carries empty usage, performance, errors and sessions.
    Basic,
}

impl Mode {
    /// Telemetry at the full level, without debug printing: what a licensed public instance
    /// runs by default.
    pub const FULL: Mode = Mode::Telemetry { debug: false, level: Level::Full };
}

impl Mode {
    /// The level figures are kept at, where any are (telemetry and air-gapped).
    pub fn level(&self) -> Option<Level> {
        match self {
            Mode::Development { .. } => None,
            Mode::AirGapped { level } | Mode::Telemetry { level, .. } => Some(*level),
        }
    }

    /// What the deployment does in this mode, in a sentence for its operator.
    pub fn describe(&self) -> String {
        match self {
            Mode::Development { reason } => {
                format!("Nothing is collected or sent: this is a development instance ({reason}).")
            }
            Mode::AirGapped { level } => format!(
                "Telemetry is off: this deployment is air-gapped and makes no connection at all. {} kept here \
                 until you carry a signed usage report to the vendor (`licensor telemetry export --signed`).",
                match level {
                    Level::Full => "Usage figures are",
                    Level::Basic => "Only basic health (no usage details) is",
                }
            ),
            Mode::Telemetry { level: Level::Basic, .. } => {
                "Basic health only: each check-in carries the environment and its health, no usage details."
                    .into()
            }
            Mode::Telemetry { .. } => "Telemetry is on: aggregated usage is sent with each check-in.".into(),
        }
    }

    /// Why nothing is collected or sent in this mode, or `None` where telemetry is on.
    pub fn off_reason(&self) -> Option<String> {
        match self {
            Mode::Development { reason } => Some(format!("development instance: {reason}")),
            Mode::AirGapped { .. } => Some("air-gapped: no connection is made".into()),
            Mode::Telemetry { .. } => None,
        }
    }
}

/// The switches the environment (or the embedding code) sets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Switches {
    /// `TELEMETRY_DISABLED=true`.
    pub telemetry_disabled: bool,
    /// `DO_NOT_TRACK=1`.
    pub do_not_track: bool,
    /// `LICENSOR_TELEMETRY_DEBUG=1`.
    pub debug: bool,
    /// What `licensor telemetry enable|disable` saved in the data directory.
    pub choice: Option<Choice>,
}

/// The mode, and what start-up must tell the operator about how it was reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub mode: Mode,
    pub notices: Vec<String>,
}

/// Decides the mode for a license `tier`, the deployment's public URL (`None` when not
/// configured) and the switches.
pub fn decide(tier: Tier, instance_url: Option<&str>, switches: &Switches) -> Decision {
    let mut notices = Vec::new();
    if let Some(reason) = development_reason(instance_url) {
        notices.push(format!("development instance ({reason}): nothing is collected or sent"));
        return Decision { mode: Mode::Development { reason }, notices };
    }
    let saved_off = matches!(switches.choice, Some(Choice::Disabled | Choice::DisabledBasic));
    let opted_out = switches.telemetry_disabled || switches.do_not_track || saved_off;
    // What asked for it, as the operator would recognise it.
    let switch = if switches.telemetry_disabled {
        "TELEMETRY_DISABLED=true"
    } else if switches.do_not_track {
        "DO_NOT_TRACK=1"
    } else {
        "`licensor telemetry disable` (saved in the data directory)"
    };
    if opted_out && tier == Tier::Enterprise {
        // What a signed usage report carries: basic health when the operator asked for it
        // (with `disable --level basic`, or `enable --level basic` beside an opt-out in the
        // environment), the full figures otherwise.
        let level = match switches.choice {
            Some(Choice::Basic | Choice::DisabledBasic) => Level::Basic,
            _ => Level::Full,
        };
        notices.push(format!(
            "{switch}: air-gapped mode; no connection is made and the license's expiry is enforced offline; {} \
             kept locally for a signed usage report carried by hand (`licensor telemetry export --signed`)",
            match level {
                Level::Full => "usage figures are",
                Level::Basic => "basic health only is",
            }
        ));
        return Decision { mode: Mode::AirGapped { level }, notices };
    }
    if opted_out {
        notices.push(format!(
            "{switch} is not honoured on the {tier} tier: its license requires usage telemetry (only Enterprise \
             licenses may disable it), and the license server would answer telemetry_required. What is sent is \
             aggregated and scrubbed of personal data; `licensor telemetry preview` shows every byte."
        ));
    }
    let level = match (switches.choice, tier) {
        (Some(Choice::Basic), Tier::Enterprise) => {
            notices.push(
                "`licensor telemetry enable --level basic`: check-ins carry basic health only (version, platform, \
                 uptime, last sync, health); no usage details are collected or sent"
                    .into(),
            );
            Level::Basic
        }
        (Some(Choice::Basic), _) => {
            notices.push(format!(
                "`licensor telemetry enable --level basic` is not honoured on the {tier} tier: its license requires \
                 usage telemetry (only Enterprise licenses may send basic health only)"
            ));
            Level::Full
        }
        _ => Level::Full,
    };
    if switches.debug {
        notices.push(
            "LICENSOR_TELEMETRY_DEBUG=1: each payload is printed to stderr instead of being sent".into(),
        );
    }
    Decision { mode: Mode::Telemetry { debug: switches.debug, level }, notices }
}

static PRIVATE_V4: LazyLock<Vec<Ipv4Net>> = LazyLock::new(|| {
    [
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "100.64.0.0/10",
        "0.0.0.0/8",
    ]
    .iter()
    .map(|n| n.parse().expect("valid network"))
    .collect()
});
static PRIVATE_V6: LazyLock<Vec<Ipv6Net>> = LazyLock::new(|| {
    ["::1/128", "::/128", "fc00::/7", "fe80::/10"].iter().map(|n| n.parse().expect("valid network")).collect()
});

/// Why an instance URL makes this a development instance, or `None` for a public one: no URL,
/// a URL that cannot be read, `localhost`, `*.localhost`, `*.local`, or a loopback, private,
/// link-local or shared address (IPv4 and IPv6, IPv4-mapped IPv6 included).
pub fn development_reason(instance_url: Option<&str>) -> Option<String> {
    let Some(raw) = instance_url.map(str::trim).filter(|u| !u.is_empty()) else {
        return Some("no instance URL is configured (LICENSOR_INSTANCE_URL)".into());
    };
    let Ok(url) = reqwest::Url::parse(raw) else {
        return Some(format!("the instance URL {raw:?} cannot be read"));
    };
    match url.host_str() {
        None | Some("") => Some(format!("the instance URL {raw:?} has no host")),
        // IPv6 hosts come bracketed; `development_host` reads either form.
        Some(host) => development_host(host),
    }
}

/// Why a `Host` header's host is local, for the middleware's per-request check.
pub fn development_host(host: &str) -> Option<String> {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    if let Ok(ip) = host.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>() {
        return development_ip(ip);
    }
    if host == "localhost" || host.ends_with(".localhost") {
        return Some(format!("{host} is a localhost name"));
    }
    if host.ends_with(".local") {
        return Some(format!("{host} is a .local name"));
    }
    None
}

fn development_ip(ip: IpAddr) -> Option<String> {
    let private = match ip {
        IpAddr::V4(v4) => PRIVATE_V4.iter().any(|n| n.contains(&v4)),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => PRIVATE_V4.iter().any(|n| n.contains(&v4)),
            None => PRIVATE_V6.iter().any(|n| n.contains(&v6)),
        },
    };
    private.then(|| format!("{ip} is a loopback or private address"))
}

/// Reads a boolean switch from the environment's text: `1`, `true`, `yes`, `on` and `0`,
/// `false`, `no`, `off` (any case); unset or empty is false. Anything else is an error naming
/// the variable, rather than a guess.
pub fn parse_switch(name: &str, value: Option<&str>) -> Result<bool, String> {
    match value.map(|v| v.trim().to_ascii_lowercase()).as_deref() {
        None | Some("") => Ok(false),
        Some("1" | "true" | "yes" | "on") => Ok(true),
        Some("0" | "false" | "no" | "off") => Ok(false),
        Some(other) => {
            Err(format!("{name}={other:?} is not a boolean: use true/false, 1/0, yes/no or on/off"))
        }
    }
}
