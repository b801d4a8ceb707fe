//! The check-in protocol, version 1: the JSON the client sends and the server answers, and the
//! telemetry batch (schema 1) that rides along. Shared by client and server, so both sides
//! agree on every field by construction. Field names and statuses are fixed by
//! `docs/protocol-v1.md` (a copy of the team's contract); this module does no I/O.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use uuid::Uuid;

use crate::time::rfc3339;

mod installs;
pub use installs::*;

/// The telemetry batch schema version this build reads and writes.
pub const TELEMETRY_SCHEMA: u32 = 1;

/// The longest instance id.
pub const MAX_INSTANCE_ID_LEN: usize = 64;
/// The fewest random bytes a nonce must carry.
pub const MIN_NONCE_BYTES: usize = 16;
/// The most bytes a nonce may carry.
pub const MAX_NONCE_BYTES: usize = 128;
/// The longest software version string.
pub const MAX_VERSION_LEN: usize = 64;
/// The longest name (usage names, routes, modules, health keys), as the protocol fixes it.
pub const MAX_NAME_LEN: usize = 128;
/// The largest count a batch may carry (2^53 - 1, the largest integer every JSON reader holds
/// exactly). Far above any real figure for one batch, and low enough that sums of many batches
/// fit in the signed 64-bit integers both databases store; sums saturate beyond that.
pub const MAX_COUNT: u64 = (1 << 53) - 1;

/// The outcome of a check-in, as the server decides it.
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckInStatus {
    Valid,
    Expired,
    NotYetValid,
    Revoked,
    BadSignature,
    UnknownKey,
    Malformed,
    SeatLimitExceeded,
    TelemetryRequired,
    /// This process was released in favour of a newer process of its install (over the
    /// license's `max_processes`): it holds no place now; restarted, it comes back as new.
    Replaced,
}

impl CheckInStatus {
    /// Every status, for listings and tests.
    pub const ALL: [CheckInStatus; 10] = [
        CheckInStatus::Valid,
        CheckInStatus::Expired,
        CheckInStatus::NotYetValid,
        CheckInStatus::Revoked,
        CheckInStatus::BadSignature,
        CheckInStatus::UnknownKey,
        CheckInStatus::Malformed,
        CheckInStatus::SeatLimitExceeded,
        CheckInStatus::TelemetryRequired,
        CheckInStatus::Replaced,
    ];

    /// The protocol's name of the status.
    pub fn as_str(self) -> &'static str {
        match self {
            CheckInStatus::Valid => "valid",
            CheckInStatus::Expired => "expired",
            CheckInStatus::NotYetValid => "not_yet_valid",
            CheckInStatus::Revoked => "revoked",
            CheckInStatus::BadSignature => "bad_signature",
            CheckInStatus::UnknownKey => "unknown_key",
            CheckInStatus::Malformed => "malformed",
            CheckInStatus::SeatLimitExceeded => "seat_limit_exceeded",
            CheckInStatus::TelemetryRequired => "telemetry_required",
            CheckInStatus::Replaced => "replaced",
        }
    }

    /// Reads a status from its protocol name.
    pub fn parse(s: &str) -> Option<CheckInStatus> {
        CheckInStatus::ALL.into_iter().find(|st| st.as_str() == s)
    }
}

impl fmt::Display for CheckInStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a deployment checks in for its license without telemetry: its instance URL names a host
/// the product exempts from telemetry (never from the license). Declared by the client, which
/// alone can see its URL; the server accepts it from Community and Pro only within this set,
/// and the vendor may refuse the private-network kinds per license.
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TelemetryExemption {
    /// A loopback address, `localhost` or `*.localhost`: a developer's own machine. It holds
    /// no seat; such instances are counted apart, a few per license, on short leases.
    #[serde(rename = "loopback")]
    Loopback,
    /// A private or shared address (10/8, 172.16/12, 192.168/16, 100.64/10, fc00::/7).
    #[serde(rename = "private address")]
    PrivateAddress,
    /// A link-local address (169.254/16, fe80::/10).
    #[serde(rename = "link-local address")]
    LinkLocal,
    /// A `*.local` (multicast DNS) name.
    #[serde(rename = "local name")]
    LocalName,
}

impl TelemetryExemption {
    pub const ALL: [TelemetryExemption; 4] = [
        TelemetryExemption::Loopback,
        TelemetryExemption::PrivateAddress,
        TelemetryExemption::LinkLocal,
        TelemetryExemption::LocalName,
    ];

    /// The protocol's name of the exemption.
    pub fn as_str(self) -> &'static str {
        match self {
            TelemetryExemption::Loopback => "loopback",
            TelemetryExemption::PrivateAddress => "private address",
            TelemetryExemption::LinkLocal => "link-local address",
            TelemetryExemption::LocalName => "local name",
        }
    }

    /// Reads an exemption from its protocol name.
    pub fn parse(s: &str) -> Option<TelemetryExemption> {
        TelemetryExemption::ALL.into_iter().find(|e| e.as_str() == s)
    }

    /// Whether an instance of this kind holds one of its license's seats: all do but a
    /// developer's own machine.
    pub fn holds_seat(self) -> bool {
        self != TelemetryExemption::Loopback
    }
}

impl fmt::Display for TelemetryExemption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which install a process belongs to: seats count installs, and every process (replica,
/// restart, redeploy with a fresh data directory) of one install shares its seat. The ids are
/// SHA-256 hex of the source's value hashed with the license id, so no host name or machine id
/// leaves the deployment, and none links one vendor's installs to another's.
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstallRef {
    pub id: String,
    pub source: InstallSource,
    /// The machine's identity, hashed the same way, where the process has one: the server
    /// counts distinct machines per install, so one install id shared by a fleet shows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub machine: Option<String>,
}

/// Where an install's identity came from, in the order the client tries them.
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InstallSource {
    /// `LICENSOR_INSTALL_ID`, set by the operator.
    Configured,
    /// The instance URL's origin.
    InstanceUrl,
    /// The machine's stable identity (`/etc/machine-id`).
    Machine,
    /// The data directory's instance id: the process is its own install.
    DataDirectory,
}

impl InstallSource {
    pub fn as_str(self) -> &'static str {
        match self {
            InstallSource::Configured => "configured",
            InstallSource::InstanceUrl => "instance_url",
            InstallSource::Machine => "machine",
            InstallSource::DataDirectory => "data_directory",
        }
    }
}

/// Whether an install or machine id is of the form clients send: 64 lowercase hex digits.
pub fn valid_install_id(id: &str) -> bool {
    id.len() == 64 && id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// `POST /v1/check-ins`, as the server reads it. The telemetry value is kept as the raw
/// bytes received, because the acknowledgement carries their digest.
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
#[derive(Debug, Deserialize)]
pub struct CheckInRequest<'a> {
    pub license_key: String,
    pub instance_id: String,
    pub nonce: String,
    pub software_version: String,
    #[serde(default, borrow)]
    #[cfg_attr(feature = "server", schema(value_type = Option<TelemetryBatch>))]
    pub telemetry: Option<&'a serde_json::value::RawValue>,
    #[serde(default)]
    pub telemetry_disabled: bool,
    /// Why this check-in carries no telemetry, for a deployment on an exempt host (with
    /// `telemetry_disabled: true`).
    #[serde(default)]
    pub telemetry_exempt: Option<TelemetryExemption>,
    /// The install this process belongs to; without it, the process is its own install.
    #[serde(default)]
    pub install: Option<InstallRef>,
}

/// `POST /v1/check-ins`, as the client writes it: the batch is serialised once, digested, and
/// embedded byte for byte.
#[derive(Debug, Serialize)]
pub struct OutgoingCheckIn<'a> {
    pub license_key: &'a str,
    pub instance_id: &'a str,
    pub nonce: &'a str,
    pub software_version: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub telemetry: Option<&'a serde_json::value::RawValue>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub telemetry_disabled: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub telemetry_exempt: Option<TelemetryExemption>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub install: Option<&'a InstallRef>,
}

/// `POST /v1/deactivations`: an instance releases its seat, proven by its license key and the
/// last lease the server signed for it.
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeactivationRequest {
    pub license_key: String,
    pub instance_id: String,
    pub nonce: String,
    /// The instance's last lease (`LEASE1.`), which binds this license and instance.
    pub lease: String,
}

/// The answer to a deactivation.
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeactivationResponse {
    /// `RECEIPT1.`, signed: the client believes nothing else of this answer.
    pub receipt: String,
    /// Whether the server still knew the instance (false for a retry after the first answer
    /// was lost: the instance is released all the same).
    pub released: bool,
}

/// The answer to every well-formed check-in.
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckInResponse {
    pub status: CheckInStatus,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub license_id: Option<Uuid>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<String>,
    #[serde(with = "rfc3339")]
    pub next_check_in_at: DateTime<Utc>,
    #[serde(with = "rfc3339")]
    pub valid_until: DateTime<Utc>,
    #[serde(with = "rfc3339")]
    pub server_time: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub telemetry: Option<TelemetryAck>,
    /// A newer key for the same license (a renewal or a change of seats or features), which
    /// the client adopts once it verifies; the lease carries the same key, signed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub license_key: Option<String>,
}

/// The server's acknowledgement of a batch.
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TelemetryAck {
    pub batch_id: Uuid,
    /// False when the check-in's status kept the batch from being stored.
    pub accepted: bool,
    /// True when this batch id was stored before: a retry, acknowledged but not stored again.
    pub duplicate: bool,
    /// SHA-256, lowercase hex, of the exact bytes of the request's `telemetry` value.
    pub digest: String,
}

/// The error body every non-200 answer carries.
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    pub code: String,
    pub message: String,
}

/// SHA-256 of `bytes` as lowercase hex: the digest a telemetry acknowledgement carries.
pub fn digest(bytes: &[u8]) -> String {
    use sha2::{Digest as _, Sha256};
    hex::encode(Sha256::digest(bytes))
}

/// Checks an instance id: 1 to 64 characters of `[A-Za-z0-9_-]`.
pub fn valid_instance_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_INSTANCE_ID_LEN
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Checks the fields every signed answer binds (a lease's, a receipt's): the signing key's
/// id, the instance and the client's nonce, with a message naming the field at fault.
pub fn check_signed_answer(kid: &str, instance_id: &str, nonce: &str) -> Result<(), String> {
    crate::keys::validate_kid(kid).map_err(|e| format!("kid: {e}"))?;
    if !valid_instance_id(instance_id) {
        return Err("instance_id: 1 to 64 characters of A-Z, a-z, 0-9, '_', '-'".into());
    }
    if !valid_nonce(nonce) {
        return Err("nonce: base64url of 16 to 128 bytes".into());
    }
    Ok(())
}

/// Checks a nonce: canonical unpadded base64url of 16 to 128 bytes.
pub fn valid_nonce(nonce: &str) -> bool {
    use base64::Engine as _;
    match base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(nonce) {
        Ok(bytes) => (MIN_NONCE_BYTES..=MAX_NONCE_BYTES).contains(&bytes.len()),
        Err(_) => false,
    }
}

/// A telemetry batch, schema 1.
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TelemetryBatch {
    pub schema: u32,
    /// The idempotency key: a retry sends the same id.
    pub batch_id: Uuid,
    #[serde(with = "rfc3339")]
    pub period_start: DateTime<Utc>,
    #[serde(with = "rfc3339")]
    pub period_end: DateTime<Utc>,
    pub environment: Environment,
    #[serde(default)]
    pub usage: Vec<UsageCount>,
    #[serde(default)]
    pub performance: Vec<RoutePerformance>,
    #[serde(default)]
    pub errors: Vec<ErrorGroup>,
    #[serde(default)]
    pub sessions: Sessions,
    #[serde(default)]
    pub dropped: Dropped,
    /// Per privacy rule, how many values were redacted (never the values).
    #[serde(default)]
    pub redactions: BTreeMap<String, u64>,
}

#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Environment {
    pub app_version: String,
    pub os: String,
    pub arch: String,
    pub user_count_range: UserCountRange,
    #[serde(default)]
    pub modules_enabled: Vec<String>,
    pub uptime_hours: f64,
    pub last_sync_status: SyncStatus,
    #[serde(default)]
    pub health: BTreeMap<String, Health>,
}

/// How many users an install has, as a range so no exact figure leaves it.
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum UserCountRange {
    #[serde(rename = "1-10")]
    UpTo10,
    #[serde(rename = "11-50")]
    UpTo50,
    #[serde(rename = "51-200")]
    UpTo200,
    #[serde(rename = "201-1000")]
    UpTo1000,
    #[serde(rename = "1001+")]
    Over1000,
}

impl UserCountRange {
    /// Every range, from the smallest.
    pub const ALL: [UserCountRange; 5] = [
        UserCountRange::UpTo10,
        UserCountRange::UpTo50,
        UserCountRange::UpTo200,
        UserCountRange::UpTo1000,
        UserCountRange::Over1000,
    ];

    /// The range a user count falls in.
    pub fn of(users: u64) -> UserCountRange {
        match users {
            0..=10 => UserCountRange::UpTo10,
            11..=50 => UserCountRange::UpTo50,
            51..=200 => UserCountRange::UpTo200,
            201..=1000 => UserCountRange::UpTo1000,
            _ => UserCountRange::Over1000,
        }
    }

    /// The protocol's name of the range.
    pub fn as_str(self) -> &'static str {
        match self {
            UserCountRange::UpTo10 => "1-10",
            UserCountRange::UpTo50 => "11-50",
            UserCountRange::UpTo200 => "51-200",
            UserCountRange::UpTo1000 => "201-1000",
            UserCountRange::Over1000 => "1001+",
        }
    }
}

#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SyncStatus {
    Success,
    Error,
    None,
}

impl SyncStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            SyncStatus::Success => "success",
            SyncStatus::Error => "error",
            SyncStatus::None => "none",
        }
    }
}

#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Health {
    Healthy,
    Degraded,
    Unhealthy,
}

impl Health {
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Healthy => "healthy",
            Health::Degraded => "degraded",
            Health::Unhealthy => "unhealthy",
        }
    }

    pub fn parse(s: &str) -> Option<Health> {
        [Health::Healthy, Health::Degraded, Health::Unhealthy].into_iter().find(|h| h.as_str() == s)
    }
}

#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UsageKind {
    Feature,
    Api,
    Command,
    UiAction,
}

impl UsageKind {
    pub const ALL: [UsageKind; 4] =
        [UsageKind::Feature, UsageKind::Api, UsageKind::Command, UsageKind::UiAction];

    pub fn as_str(self) -> &'static str {
        match self {
            UsageKind::Feature => "feature",
            UsageKind::Api => "api",
            UsageKind::Command => "command",
            UsageKind::UiAction => "ui_action",
        }
    }

    pub fn parse(s: &str) -> Option<UsageKind> {
        UsageKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageCount {
    pub kind: UsageKind,
    pub name: String,
    pub count: u64,
}

#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoutePerformance {
    pub method: String,
    pub route: String,
    pub count: u64,
    pub errors: u64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// Implementation-defined, mergeable; opaque to the server.
    #[serde(default)]
    pub sketch: String,
}

#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorGroup {
    pub fingerprint: String,
    #[serde(rename = "type")]
    pub error_type: String,
    pub message: String,
    #[serde(default)]
    pub stack: Vec<String>,
    pub count: u64,
    #[serde(with = "rfc3339")]
    pub first_seen: DateTime<Utc>,
    #[serde(with = "rfc3339")]
    pub last_seen: DateTime<Utc>,
}

#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Sessions {
    pub count: u64,
    pub total_duration_s: u64,
    pub hourly: [u64; 24],
}

#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Dropped {
    #[serde(default)]
    pub sampled: u64,
    #[serde(default)]
    pub throttled: u64,
    #[serde(default)]
    pub overflow: u64,
}

impl RoutePerformance {
    /// A route's figures with its percentiles read from its sketch, in milliseconds to three
    /// decimals (enough for any latency, and a shorter payload).
    pub fn from_sketch(
        method: String,
        route: String,
        count: u64,
        errors: u64,
        max_ms: f64,
        sketch: &crate::sketch::Sketch,
    ) -> RoutePerformance {
        let [p50_ms, p95_ms, p99_ms] = percentiles_ms(sketch);
        RoutePerformance {
            method,
            route,
            count,
            errors,
            p50_ms,
            p95_ms,
            p99_ms,
            max_ms: round_ms(max_ms),
            sketch: sketch.encode(),
        }
    }
}

/// Percent-encodes a path segment or query value (everything but RFC 3986's unreserved
/// characters), for the admin command line and the dashboard's links.
///
/// ```
/// assert_eq!(licensor::protocol::percent_encode("a b/é"), "a%20b%2F%C3%A9");
/// ```
pub fn percent_encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The p50, p95 and p99 of a latency sketch, in milliseconds to three decimals (0 when empty).
pub fn percentiles_ms(sketch: &crate::sketch::Sketch) -> [f64; 3] {
    [0.50, 0.95, 0.99].map(|q| round_ms(sketch.quantile(q).unwrap_or(0.0)))
}

fn round_ms(ms: f64) -> f64 {
    (ms * 1000.0).round() / 1000.0
}

/// Bounds on a batch's lists and strings; the server's are configurable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BatchLimits {
    pub max_usage: usize,
    pub max_routes: usize,
    pub max_errors: usize,
    pub max_modules: usize,
    pub max_health: usize,
    pub max_stack_lines: usize,
    pub max_message_len: usize,
    pub max_stack_line_len: usize,
}

impl Default for BatchLimits {
    fn default() -> Self {
        BatchLimits {
            max_usage: 2_000,
            max_routes: 500,
            max_errors: 200,
            max_modules: 200,
            max_health: 100,
            max_stack_lines: 5,
            max_message_len: 2_048,
            max_stack_line_len: 512,
        }
    }
}

/// Why a batch was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    /// The `schema` field names a version this build does not read.
    #[error("telemetry schema {found} is not supported; this server reads schema {TELEMETRY_SCHEMA}")]
    UnsupportedSchema { found: String },
    /// The batch is not JSON of the schema's shape; the message says where.
    #[error("telemetry batch is not valid: {0}")]
    Invalid(String),
    /// A list is longer than the configured limit.
    #[error("telemetry batch has {found} {list}, more than the {limit} allowed")]
    TooMany { list: &'static str, found: usize, limit: usize },
}

/// Parses a batch from its raw JSON, telling an unknown schema apart from a broken batch.
pub fn parse_batch(raw: &str) -> Result<TelemetryBatch, BatchError> {
    #[derive(Deserialize)]
    struct Probe {
        schema: Option<serde_json::Value>,
    }
    let batch_error = match serde_json::from_str::<TelemetryBatch>(raw) {
        Ok(batch) if batch.schema == TELEMETRY_SCHEMA => return Ok(batch),
        Ok(batch) => return Err(BatchError::UnsupportedSchema { found: batch.schema.to_string() }),
        Err(e) => e,
    };
    // Only a batch that failed to parse is read again, to tell a batch of another schema
    // (whose shape may differ) from a broken one.
    match serde_json::from_str::<Probe>(raw) {
        Ok(Probe { schema: Some(serde_json::Value::Number(n)) })
            if n.as_u64() == Some(u64::from(TELEMETRY_SCHEMA)) =>
        {
            Err(BatchError::Invalid(batch_error.to_string()))
        }
        Ok(Probe { schema: Some(other) }) => Err(BatchError::UnsupportedSchema { found: other.to_string() }),
        Ok(Probe { schema: None }) => Err(BatchError::Invalid("missing field `schema`".into())),
        Err(e) => Err(BatchError::Invalid(e.to_string())),
    }
}

impl TelemetryBatch {
    /// Checks the batch against the schema's rules and `limits`.
    pub fn check(&self, limits: &BatchLimits) -> Result<(), BatchError> {
        let invalid = |m: String| Err(BatchError::Invalid(m));
        let too_many = |list, found, limit| {
            if found > limit {
                Err(BatchError::TooMany { list, found, limit })
            } else {
                Ok(())
            }
        };
        too_many("usage entries", self.usage.len(), limits.max_usage)?;
        too_many("performance entries", self.performance.len(), limits.max_routes)?;
        too_many("error groups", self.errors.len(), limits.max_errors)?;
        too_many("modules", self.environment.modules_enabled.len(), limits.max_modules)?;
        too_many("health entries", self.environment.health.len(), limits.max_health)?;
        if self.period_end < self.period_start {
            return invalid("period_end is before period_start".into());
        }
        let env = &self.environment;
        check_text("environment.app_version", &env.app_version, MAX_VERSION_LEN)?;
        check_text("environment.os", &env.os, MAX_NAME_LEN)?;
        check_text("environment.arch", &env.arch, MAX_NAME_LEN)?;
        check_number("environment.uptime_hours", env.uptime_hours)?;
        for module in &env.modules_enabled {
            check_text("environment.modules_enabled[]", module, MAX_NAME_LEN)?;
        }
        for key in env.health.keys() {
            check_text("environment.health key", key, MAX_NAME_LEN)?;
        }
        for u in &self.usage {
            check_text("usage[].name", &u.name, MAX_NAME_LEN)?;
            check_count("usage[].count", u.count)?;
        }
        for p in &self.performance {
            check_text("performance[].method", &p.method, 16)?;
            check_text("performance[].route", &p.route, MAX_NAME_LEN)?;
            check_count("performance[].count", p.count)?;
            check_count("performance[].errors", p.errors)?;
            for (name, v) in
                [("p50_ms", p.p50_ms), ("p95_ms", p.p95_ms), ("p99_ms", p.p99_ms), ("max_ms", p.max_ms)]
            {
                check_number(name, v)?;
            }
            if p.sketch.len() > 64 * 1024 {
                return invalid("performance[].sketch is longer than 64 KiB".into());
            }
            check_storable("performance[].sketch", &p.sketch)?;
        }
        for e in &self.errors {
            let hex = !e.fingerprint.is_empty()
                && e.fingerprint.len() <= MAX_NAME_LEN
                && e.fingerprint.bytes().all(|b| b.is_ascii_hexdigit());
            if !hex {
                return invalid("errors[].fingerprint must be 1 to 128 hex digits".into());
            }
            check_text("errors[].type", &e.error_type, MAX_NAME_LEN)?;
            if e.message.chars().count() > limits.max_message_len {
                return invalid(format!(
                    "errors[].message is longer than {} characters",
                    limits.max_message_len
                ));
            }
            check_storable("errors[].message", &e.message)?;
            too_many("stack lines", e.stack.len(), limits.max_stack_lines)?;
            if e.stack.iter().any(|l| l.chars().count() > limits.max_stack_line_len) {
                return invalid(format!(
                    "errors[].stack lines are at most {} characters",
                    limits.max_stack_line_len
                ));
            }
            for line in &e.stack {
                check_storable("errors[].stack[]", line)?;
            }
            check_count("errors[].count", e.count)?;
            if e.last_seen < e.first_seen {
                return invalid("errors[].last_seen is before first_seen".into());
            }
        }
        check_count("sessions.count", self.sessions.count)?;
        check_count("sessions.total_duration_s", self.sessions.total_duration_s)?;
        for n in self.sessions.hourly {
            check_count("sessions.hourly[]", n)?;
        }
        for (name, v) in [
            ("dropped.sampled", self.dropped.sampled),
            ("dropped.throttled", self.dropped.throttled),
            ("dropped.overflow", self.dropped.overflow),
        ] {
            check_count(name, v)?;
        }
        if self.redactions.len() > 64 {
            return invalid("redactions: at most 64 rules".into());
        }
        for (rule, n) in &self.redactions {
            check_text("redactions key", rule, 64)?;
            check_count("redactions[]", *n)?;
        }
        Ok(())
    }
}

fn check_text(field: &str, value: &str, max: usize) -> Result<(), BatchError> {
    if value.is_empty() || value.chars().count() > max || value.chars().any(char::is_control) {
        return Err(BatchError::Invalid(format!(
            "{field} must be 1 to {max} characters without control characters"
        )));
    }
    Ok(())
}

fn check_number(field: &str, value: f64) -> Result<(), BatchError> {
    if !value.is_finite() || value < 0.0 {
        return Err(BatchError::Invalid(format!("{field} must be a finite number, zero or more")));
    }
    Ok(())
}

/// Counts are at most [`MAX_COUNT`], so that sums stay exact and storable.
fn check_count(field: &str, value: u64) -> Result<(), BatchError> {
    if value > MAX_COUNT {
        return Err(BatchError::Invalid(format!("{field} is larger than {MAX_COUNT}")));
    }
    Ok(())
}

/// Free text (messages, stack lines, sketches) may hold line breaks and tabs, but nothing a
/// backend cannot store: PostgreSQL refuses NUL in text where SQLite keeps it, so both refuse
/// it here, before any database sees the batch.
fn check_storable(field: &str, value: &str) -> Result<(), BatchError> {
    if value.contains('\0') {
        return Err(BatchError::Invalid(format!("{field} contains a NUL character")));
    }
    Ok(())
}
