//! What a deployment may collect and send, decided once at start from its tier, its public URL,
//! the environment and the operator's saved choice (`licensor telemetry enable|disable`):
//! instances on exempt hosts (loopback, private, link-local, `*.local`) collect and send
//! nothing but still check in for their license; Community and Pro must send telemetry
//! (opting out is not honoured, and start-up says why); Enterprise may send basic health only,
//! or run air-gapped. No I/O: the environment and the choice come in as values.

use ipnet::{Ipv4Net, Ipv6Net};
use std::net::IpAddr;
use std::sync::LazyLock;

use super::choice::Choice;
use crate::license::Tier;
use crate::protocol::TelemetryExemption;

/// How the verifier runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// The instance URL names a host exempt from telemetry (a loopback, private or link-local
    /// address, a `*.local` or `*.localhost` name): nothing is collected or sent, but the
    /// deployment checks in for its license like any other, naming its exemption.
    Exempt { exemption: TelemetryExemption, reason: String },
    /// The license key was refused offline: nothing is collected, sent or checked in, and the
    /// status says why the deployment is not licensed.
    Unlicensed { reason: String },
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
            Mode::Exempt { .. } | Mode::Unlicensed { .. } => None,
            Mode::AirGapped { level } | Mode::Telemetry { level, .. } => Some(*level),
        }
    }

    /// Whether the deployment checks in with the license server in this mode.
    pub fn checks_in(&self) -> bool {
        matches!(self, Mode::Exempt { .. } | Mode::Telemetry { .. })
    }

    /// What the deployment does in this mode, in a sentence for its operator.
    pub fn describe(&self) -> String {
        match self {
            Mode::Exempt { exemption, reason } => format!(
                "Nothing is collected or sent: {reason}. The deployment still checks in for its license ({}).",
                if exemption.holds_seat() {
                    "it holds a seat like any other"
                } else {
                    "a developer's machine holds no seat"
                }
            ),
            Mode::Unlicensed { reason } => format!("Nothing is collected or sent: {reason}."),
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
            Mode::Exempt { reason, .. } => Some(format!("exempt from telemetry: {reason}")),
            Mode::Unlicensed { reason } => Some(reason.clone()),
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
/// configured) and the switches. An instance URL that cannot be read is an error (the text
/// names it), never an exemption; an unset one is no exemption either.
pub fn decide(tier: Tier, instance_url: Option<&str>, switches: &Switches) -> Result<Decision, String> {
    let mut notices = Vec::new();
    let exempt = exemption(instance_url)?;
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
        return Ok(Decision { mode: Mode::AirGapped { level }, notices });
    }
    // Exempt hosts send nothing, whatever was asked for; their license is checked like any other.
    if let Some((exemption, reason)) = exempt {
        notices.push(format!(
            "telemetry exempt ({reason}): nothing is collected or sent; the deployment checks in for its license \
             on the {tier} schedule{}",
            if exemption.holds_seat() { " and holds a seat" } else { ", holding no seat (a developer's machine)" }
        ));
        return Ok(Decision { mode: Mode::Exempt { exemption, reason }, notices });
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
    Ok(Decision { mode: Mode::Telemetry { debug: switches.debug, level }, notices })
}

static LOOPBACK_V4: LazyLock<Vec<Ipv4Net>> = LazyLock::new(|| nets(&["127.0.0.0/8", "0.0.0.0/8"]));
static PRIVATE_V4: LazyLock<Vec<Ipv4Net>> =
    LazyLock::new(|| nets(&["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10"]));
static LINK_LOCAL_V4: LazyLock<Vec<Ipv4Net>> = LazyLock::new(|| nets(&["169.254.0.0/16"]));
static LOOPBACK_V6: LazyLock<Vec<Ipv6Net>> = LazyLock::new(|| nets(&["::1/128", "::/128"]));
static PRIVATE_V6: LazyLock<Vec<Ipv6Net>> = LazyLock::new(|| nets(&["fc00::/7"]));
static LINK_LOCAL_V6: LazyLock<Vec<Ipv6Net>> = LazyLock::new(|| nets(&["fe80::/10"]));

fn nets<N: std::str::FromStr>(list: &[&str]) -> Vec<N>
where
    N::Err: std::fmt::Debug,
{
    list.iter().map(|n| n.parse().expect("valid network")).collect()
}

/// The telemetry exemption an instance URL claims, with a sentence naming its host; `None` for
/// an unset URL or a public host, an error for a URL that cannot be read or has no host.
pub fn exemption(instance_url: Option<&str>) -> Result<Option<(TelemetryExemption, String)>, String> {
    let Some(raw) = instance_url.map(str::trim).filter(|u| !u.is_empty()) else {
        return Ok(None);
    };
    let url = reqwest::Url::parse(raw)
        .map_err(|e| format!("LICENSOR_INSTANCE_URL={raw:?} cannot be read as a URL: {e}"))?;
    match url.host_str() {
        None | Some("") => Err(format!("LICENSOR_INSTANCE_URL={raw:?} has no host")),
        // IPv6 hosts come bracketed; `host_exemption` reads either form.
        Some(host) => Ok(host_exemption(host).map(|e| (e, describe_host(host, e)))),
    }
}

/// The exemption a host (an instance URL's, or a request's `Host` without its port) falls
/// under, if any.
pub fn host_exemption(host: &str) -> Option<TelemetryExemption> {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    if let Ok(ip) = host.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>() {
        return ip_exemption(ip);
    }
    if host == "localhost" || host.ends_with(".localhost") {
        return Some(TelemetryExemption::Loopback);
    }
    host.ends_with(".local").then_some(TelemetryExemption::LocalName)
}

fn describe_host(host: &str, exemption: TelemetryExemption) -> String {
    match exemption {
        TelemetryExemption::Loopback => format!("{host} is this machine (loopback)"),
        TelemetryExemption::PrivateAddress => format!("{host} is a private address"),
        TelemetryExemption::LinkLocal => format!("{host} is a link-local address"),
        TelemetryExemption::LocalName => format!("{host} is a .local name"),
    }
}

fn ip_exemption(ip: IpAddr) -> Option<TelemetryExemption> {
    let v4 = match ip {
        IpAddr::V4(v4) => Some(v4),
        IpAddr::V6(v6) => v6.to_ipv4_mapped(),
    };
    let within = |v4s: &[Ipv4Net], v6s: &[Ipv6Net]| match (v4, ip) {
        (Some(v4), _) => v4s.iter().any(|n| n.contains(&v4)),
        (None, IpAddr::V6(v6)) => v6s.iter().any(|n| n.contains(&v6)),
        (None, IpAddr::V4(_)) => false,
    };
    if within(&LOOPBACK_V4, &LOOPBACK_V6) {
        Some(TelemetryExemption::Loopback)
    } else if within(&PRIVATE_V4, &PRIVATE_V6) {
        Some(TelemetryExemption::PrivateAddress)
    } else if within(&LINK_LOCAL_V4, &LINK_LOCAL_V6) {
        Some(TelemetryExemption::LinkLocal)
    } else {
        None
    }
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
