//! License keys: the payload a vendor signs, the tiers and their schedules, issuing and
//! verification.
//!
//! Everything here is a plain function of its inputs: keys come in as a [`Signer`] or a
//! [`KeyRing`] and time as a `now` argument, so verification is offline and deterministic.
//! This module does no I/O.

use chrono::{DateTime, Duration, DurationRound as _, Utc};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use uuid::Uuid;

use crate::keys::{KeyRing, Signer};
use crate::token::{self, Claims, Kind, TokenError};

/// The license payload format version this build reads and writes.
pub const PAYLOAD_VERSION: u32 = 1;
/// The longest licensee name.
pub const MAX_LICENSEE_LEN: usize = 200;
/// The longest feature name (the protocol's limit on names).
pub const MAX_FEATURE_LEN: usize = 128;
/// The most feature entitlements one license may carry.
pub const MAX_FEATURES: usize = 256;
/// The most seats one license may grant.
pub const MAX_SEATS: u32 = 1_000_000;
/// The shortest check-in interval a license may set: shorter would only load the server.
pub const MIN_CHECK_IN_INTERVAL_S: u64 = 60 * 60;
/// The longest check-in interval a license may set.
pub const MAX_CHECK_IN_INTERVAL_S: u64 = 365 * 24 * 60 * 60;

/// A license tier. Each fixes a check-in schedule, a grace period and the telemetry rule.
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Tier {
    Community,
    Pro,
    Enterprise,
}

impl Tier {
    /// All tiers, from the smallest.
    pub const ALL: [Tier; 3] = [Tier::Community, Tier::Pro, Tier::Enterprise];

    /// The protocol's name of the tier.
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Community => "community",
            Tier::Pro => "pro",
            Tier::Enterprise => "enterprise",
        }
    }

    /// How often an instance checks in unless its license says otherwise.
    pub fn check_in_interval(self) -> Duration {
        match self {
            Tier::Community => Duration::hours(24),
            Tier::Pro => Duration::days(7),
            Tier::Enterprise => Duration::days(30),
        }
    }

    /// How long past a missed check-in a lease stays valid.
    pub fn grace(self) -> Duration {
        match self {
            Tier::Community => Duration::days(7),
            Tier::Pro => Duration::days(14),
            Tier::Enterprise => Duration::days(30),
        }
    }

    /// Whether instances on this tier must send telemetry (only Enterprise may opt out).
    pub fn telemetry_required(self) -> bool {
        self != Tier::Enterprise
    }
}

impl fmt::Display for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The tier name was not one of `community`, `pro`, `enterprise`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown tier {0:?}: expected community, pro or enterprise")]
pub struct UnknownTier(pub String);

impl FromStr for Tier {
    type Err = UnknownTier;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Tier::ALL
            .into_iter()
            .find(|t| t.as_str().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| UnknownTier(s.to_owned()))
    }
}

/// What a license key says. Field names are the wire format (see `docs/license-format.md`);
/// changing one breaks every key already issued.
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LicensePayload {
    /// Payload format version, [`PAYLOAD_VERSION`].
    pub v: u32,
    /// Id of the key that signed this license.
    pub kid: String,
    /// The license's unique id.
    pub license_id: Uuid,
    /// Who the license is for, as the vendor wrote it.
    pub licensee: String,
    pub tier: Tier,
    #[serde(with = "crate::time::rfc3339")]
    pub issued_at: DateTime<Utc>,
    /// First instant the license is valid (inclusive).
    #[serde(with = "crate::time::rfc3339")]
    pub not_before: DateTime<Utc>,
    /// Instant the license stops being valid (exclusive); `null` only for a perpetual license.
    #[serde(with = "crate::time::rfc3339_nullable")]
    pub expires_at: Option<DateTime<Utc>>,
    /// How many instances may hold a lease at once.
    pub seats: u32,
    /// Feature entitlements, sorted and without duplicates.
    pub features: Vec<String>,
    /// Overrides the tier's check-in interval, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check_in_interval_s: Option<u64>,
}

impl LicensePayload {
    /// Whether the license entitles its holder to `feature`.
    pub fn has_feature(&self, feature: &str) -> bool {
        self.features.binary_search_by(|f| f.as_str().cmp(feature)).is_ok()
    }

    /// The check-in interval in force: the license's override, else the tier's.
    pub fn check_in_interval(&self) -> Duration {
        match self.check_in_interval_s {
            // Bounded by `check_fields`, so the conversion cannot overflow.
            Some(s) => Duration::seconds(s as i64),
            None => self.tier.check_in_interval(),
        }
    }
}

impl Claims for LicensePayload {
    const KIND: Kind = token::LICENSE;
    const VERSION: u32 = PAYLOAD_VERSION;

    fn version(&self) -> u32 {
        self.v
    }

    fn kid(&self) -> &str {
        &self.kid
    }

    fn not_before(&self) -> Option<DateTime<Utc>> {
        Some(self.not_before)
    }

    fn expires_at(&self) -> Option<DateTime<Utc>> {
        self.expires_at
    }

    fn check_fields(&self) -> Result<(), String> {
        self.check().map_err(|e| e.to_string())
    }
}

impl LicensePayload {
    /// Checks every field against the format's rules, naming the first field that breaks one.
    pub fn check(&self) -> Result<(), FieldError> {
        let err = |field, message: String| Err(FieldError { field, message });
        if let Err(e) = crate::keys::validate_kid(&self.kid) {
            return err("kid", e.to_string());
        }
        if self.licensee.trim().is_empty() {
            return err("licensee", "must not be empty".into());
        }
        if self.licensee.chars().count() > MAX_LICENSEE_LEN {
            return err("licensee", format!("at most {MAX_LICENSEE_LEN} characters"));
        }
        if self.licensee.chars().any(char::is_control) {
            return err("licensee", "must not contain control characters".into());
        }
        if self.seats == 0 || self.seats > MAX_SEATS {
            return err("seats", format!("must be from 1 to {MAX_SEATS}, not {}", self.seats));
        }
        if self.features.len() > MAX_FEATURES {
            return err("features", format!("at most {MAX_FEATURES}, not {}", self.features.len()));
        }
        if let Some(bad) = self.features.iter().find(|f| !is_feature_name(f)) {
            return err(
                "features",
                format!(
                    "{bad:?}: use 1 to {MAX_FEATURE_LEN} characters of A-Z, a-z, 0-9, '_', '-', '.', ':'"
                ),
            );
        }
        if !self.features.windows(2).all(|w| w[0] < w[1]) {
            return err("features", "must be sorted and without duplicates".into());
        }
        if let Some(expires_at) = self.expires_at {
            if expires_at <= self.not_before {
                return err("expires_at", "must be later than not_before".into());
            }
        }
        if let Some(s) = self.check_in_interval_s {
            if !(MIN_CHECK_IN_INTERVAL_S..=MAX_CHECK_IN_INTERVAL_S).contains(&s) {
                let message = format!("must be from 1 hour to 365 days, not {}", humanize_seconds(s));
                return err("check_in_interval_s", message);
            }
        }
        Ok(())
    }
}

/// A payload field that breaks the format's rules.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    /// The payload field's wire name, e.g. `licensee`.
    pub field: &'static str,
    pub message: String,
}

fn is_feature_name(feature: &str) -> bool {
    !feature.is_empty()
        && feature.len() <= MAX_FEATURE_LEN
        && feature.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-.:".contains(&b))
}

fn humanize_seconds(s: u64) -> String {
    if s.is_multiple_of(86_400) {
        format!("{} days", s / 86_400)
    } else if s.is_multiple_of(3_600) {
        format!("{} hours", s / 3_600)
    } else {
        format!("{s} seconds")
    }
}

/// When a requested license ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// Valid until this instant (exclusive).
    At(DateTime<Utc>),
    /// Never expires: only when the vendor asks for it explicitly.
    Perpetual,
}

/// What a vendor asks for when issuing a license.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LicenseRequest {
    pub licensee: String,
    pub tier: Tier,
    pub expiry: Expiry,
    /// Defaults to the issuing instant.
    pub not_before: Option<DateTime<Utc>>,
    pub seats: u32,
    /// In any order, duplicates allowed: they are sorted and deduplicated.
    pub features: Vec<String>,
    pub check_in_interval: Option<std::time::Duration>,
}

/// Why a license could not be issued.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IssueError {
    /// A field of the request breaks the format's rules.
    #[error(transparent)]
    Invalid(#[from] FieldError),
    /// The license would already be expired when issued.
    #[error("expires_at {} is not in the future", crate::time::format(.0))]
    AlreadyExpired(DateTime<Utc>),
    /// The signing key is not a license key: a lease key must never mint a license.
    #[error("key {kid:?} is a {role} key; license keys are signed by a license key")]
    NotALicenseKey { kid: String, role: crate::keys::Role },
}

/// A signed license key and the payload it carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issued {
    pub key: String,
    pub payload: LicensePayload,
}

/// Issues a license under `signer` at `now`, with a fresh random license id.
/// Instants are truncated to whole seconds, as the wire format writes them.
pub fn issue(signer: &Signer, request: LicenseRequest, now: DateTime<Utc>) -> Result<Issued, IssueError> {
    if signer.role() != crate::keys::Role::License {
        return Err(IssueError::NotALicenseKey { kid: signer.kid().to_owned(), role: signer.role() });
    }
    let second = |t: DateTime<Utc>| t.duration_trunc(Duration::seconds(1)).unwrap_or(t);
    let now = second(now);
    let expires_at = match request.expiry {
        Expiry::At(t) => {
            let t = second(t);
            if t <= now {
                return Err(IssueError::AlreadyExpired(t));
            }
            Some(t)
        }
        Expiry::Perpetual => None,
    };
    let mut features = request.features;
    features.sort();
    features.dedup();
    let payload = LicensePayload {
        v: PAYLOAD_VERSION,
        kid: signer.kid().to_owned(),
        license_id: Uuid::new_v4(),
        licensee: request.licensee,
        tier: request.tier,
        issued_at: now,
        not_before: request.not_before.map(second).unwrap_or(now),
        expires_at,
        seats: request.seats,
        features,
        check_in_interval_s: request.check_in_interval.map(|d| d.as_secs()),
    };
    payload.check()?;
    let key = token::sign(&payload, signer.signing_key());
    Ok(Issued { key, payload })
}

/// What a renewal changes; a field left `None` keeps the license's current value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    pub expiry: Option<Expiry>,
    pub seats: Option<u32>,
    /// The whole new list of entitlements, in any order, duplicates allowed.
    pub features: Option<Vec<String>>,
    /// A new tier (an upgrade or a downgrade): its schedule, grace and telemetry rule apply from
    /// the key's delivery on.
    pub tier: Option<Tier>,
}

impl Changes {
    /// Whether the renewal would change nothing the vendor asked about.
    pub fn is_empty(&self) -> bool {
        self.expiry.is_none() && self.seats.is_none() && self.features.is_none() && self.tier.is_none()
    }
}

/// Issues the successor of `current` under `signer` at `now`: the same license id, licensee,
/// start and interval (and tier, unless it changes), with `changes` applied, signed by `signer` (which may be another
/// license key than the one that signed `current`, after a rotation).
///
/// Its `issued_at` is later than `current`'s, even when both fall in the same second: the
/// server and the clients keep the key issued last, so each renewal must be strictly newer.
pub fn renew(
    signer: &Signer,
    current: &LicensePayload,
    changes: Changes,
    now: DateTime<Utc>,
) -> Result<Issued, IssueError> {
    if signer.role() != crate::keys::Role::License {
        return Err(IssueError::NotALicenseKey { kid: signer.kid().to_owned(), role: signer.role() });
    }
    let second = |t: DateTime<Utc>| t.duration_trunc(Duration::seconds(1)).unwrap_or(t);
    let now = second(now);
    let mut payload = current.clone();
    payload.v = PAYLOAD_VERSION;
    payload.kid = signer.kid().to_owned();
    payload.issued_at = now.max(current.issued_at + Duration::seconds(1));
    match changes.expiry {
        Some(Expiry::At(t)) => {
            let t = second(t);
            if t <= now {
                return Err(IssueError::AlreadyExpired(t));
            }
            payload.expires_at = Some(t);
        }
        Some(Expiry::Perpetual) => payload.expires_at = None,
        None => {}
    }
    if let Some(seats) = changes.seats {
        payload.seats = seats;
    }
    if let Some(tier) = changes.tier {
        payload.tier = tier;
    }
    if let Some(mut features) = changes.features {
        features.sort();
        features.dedup();
        payload.features = features;
    }
    payload.check()?;
    let key = token::sign(&payload, signer.signing_key());
    Ok(Issued { key, payload })
}

/// Verifies a license key offline: structure, signature under `ring`, and validity at `now`.
pub fn verify(key: &str, ring: &KeyRing, now: DateTime<Utc>) -> Result<LicensePayload, TokenError> {
    token::verify(key, ring, now)
}
