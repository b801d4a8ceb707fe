//! The wire types of the license holder's own view of its seats (`POST /v1/installs/list` and
//! `POST /v1/installs/release`; see docs/protocol-v1.md).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::time::rfc3339;

/// `POST /v1/installs/list` and `POST /v1/installs/release`: the license's holder asks about
/// (or frees) the license's installs, proven as for a deactivation by its license key and a
/// lease the server signed for one of its instances, which must still be current.
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstallsRequest {
    pub license_key: String,
    /// The asking instance, whose lease `lease` is.
    pub instance_id: String,
    pub nonce: String,
    /// A current lease (`LEASE1.`, status valid, not yet ended) of this license and instance.
    pub lease: String,
    /// For a release: the install id, or one process's instance id, to release.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release: Option<String>,
}

/// The answer to `POST /v1/installs/list`: the license's installs, each with its processes.
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstallsResponse {
    pub license_id: Uuid,
    /// The seats the license grants.
    pub seats: u32,
    /// Installs holding one of them now.
    pub seats_in_use: u32,
    /// Installs holding a place now first, then by their last check-in, newest first.
    pub installs: Vec<InstallListing>,
    #[serde(with = "rfc3339")]
    pub server_time: DateTime<Utc>,
}

/// One install of a license, as its holder sees it.
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstallListing {
    /// The install's id (hashed with the license id, as the client sends it), or the process's
    /// instance id where the process is its own install.
    pub install_id: String,
    /// Where its identity came from (`configured`, `instance_url`, `machine`,
    /// `data_directory`); absent for processes of clients before installs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// A developer's machine (loopback): it holds no seat, and is bounded apart.
    pub loopback: bool,
    /// Whether it holds a place (a seat, or a loopback place) now.
    pub holds_place: bool,
    /// When its last place ends (or ended), if it held one.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "crate::time::rfc3339_nullable")]
    pub place_until: Option<DateTime<Utc>>,
    /// Distinct machines among its processes (each known by a hashed identity).
    pub machines: u32,
    pub processes: Vec<ProcessListing>,
}

/// One process of an install.
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessListing {
    pub instance_id: String,
    pub software_version: String,
    #[serde(with = "rfc3339")]
    pub first_seen_at: DateTime<Utc>,
    #[serde(with = "rfc3339")]
    pub last_check_in_at: DateTime<Utc>,
    /// The status of its last check-in.
    pub last_status: String,
    /// The process that asked.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub asking: bool,
}

/// The answer to `POST /v1/installs/release`.
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstallReleaseResponse {
    /// `RECEIPT1.`, signed, naming what was released: the client believes nothing else of this
    /// answer.
    pub receipt: String,
    /// How many processes the server forgot (0 for a retry after the first answer was lost, or
    /// for an id it does not know: released all the same).
    pub processes: u32,
    /// Whether a seat was freed by it.
    pub seat_freed: bool,
}
