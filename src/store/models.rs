//! Row types for the tables in `schema.rs`. Times are naive UTC (`TIMESTAMP`), ids and JSON
//! are text: the column types both backends share through the multi-connection enum.

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use diesel::prelude::*;
use serde::{Deserialize, Serialize};

use super::schema::*;

/// A UTC instant as stored.
pub fn naive(t: DateTime<Utc>) -> NaiveDateTime {
    t.naive_utc()
}

/// A stored instant back in UTC.
pub fn utc(t: NaiveDateTime) -> DateTime<Utc> {
    t.and_utc()
}

#[derive(Debug, Clone, PartialEq, Queryable, Selectable, Insertable)]
#[diesel(table_name = licenses)]
pub struct LicenseRow {
    pub id: String,
    pub kid: String,
    pub licensee: String,
    pub tier: String,
    pub seats: i32,
    pub features: String,
    pub issued_at: NaiveDateTime,
    pub not_before: NaiveDateTime,
    pub expires_at: Option<NaiveDateTime>,
    pub check_in_interval_s: Option<i64>,
    pub license_key: Option<String>,
    pub revoked_at: Option<NaiveDateTime>,
    pub revoked_reason: Option<String>,
    pub first_seen_at: NaiveDateTime,
    pub last_check_in_at: Option<NaiveDateTime>,
    /// This server issued (or renewed) the license through the admin API.
    pub issued_here: bool,
}

impl LicenseRow {
    /// The row of a license first seen at `now`, with its key (not issued here: the caller
    /// says so when it is).
    pub fn new(
        license: &crate::license::LicensePayload,
        key: Option<&str>,
        now: DateTime<Utc>,
    ) -> LicenseRow {
        LicenseRow {
            id: license.license_id.to_string(),
            kid: license.kid.clone(),
            licensee: license.licensee.clone(),
            tier: license.tier.as_str().to_owned(),
            // Bounded by the license format (at most 1,000,000 seats).
            seats: i32::try_from(license.seats).unwrap_or(i32::MAX),
            features: serde_json::to_string(&license.features).expect("a list of strings serialises"),
            issued_at: naive(license.issued_at),
            not_before: naive(license.not_before),
            expires_at: license.expires_at.map(naive),
            check_in_interval_s: license.check_in_interval_s.map(|s| s as i64),
            license_key: key.map(str::to_owned),
            revoked_at: None,
            revoked_reason: None,
            first_seen_at: naive(now),
            last_check_in_at: None,
            issued_here: false,
        }
    }

    /// The row of a license this server has never seen, revoked by its id before its first
    /// check-in (a key that leaked before it was used). Its fields stay empty (`kid` is
    /// empty: "not seen yet") until the first check-in presents the signed license, whose
    /// fields then replace them; the revocation stays.
    pub fn revoked_unseen(id: uuid::Uuid, reason: Option<String>, now: DateTime<Utc>) -> LicenseRow {
        LicenseRow {
            id: id.to_string(),
            kid: String::new(),
            licensee: String::new(),
            tier: String::new(),
            seats: 0,
            features: "[]".into(),
            issued_at: naive(now),
            not_before: naive(now),
            expires_at: None,
            check_in_interval_s: None,
            license_key: None,
            revoked_at: Some(naive(now)),
            revoked_reason: reason,
            first_seen_at: naive(now),
            last_check_in_at: None,
            issued_here: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Queryable, QueryableByName, Selectable, Insertable)]
// `None` is written as NULL (these columns have no defaults), not as DEFAULT, which SQLite's
// multi-row VALUES cannot take: so both backends upsert a group's rows in one statement.
#[diesel(table_name = instances, treat_none_as_default_value = false)]
pub struct InstanceRow {
    pub id: String,
    pub license_id: String,
    pub software_version: String,
    pub first_seen_at: NaiveDateTime,
    pub last_check_in_at: NaiveDateTime,
    pub last_status: String,
    pub seat_until: Option<NaiveDateTime>,
    /// The telemetry exemption declared at the last check-in (its protocol name), if any: a
    /// `loopback` instance holds no seat.
    pub exemption: Option<String>,
    /// The install this process belongs to (its own id for an instance from before installs
    /// or from a client that names none): seats count installs.
    pub install_id: Option<String>,
    /// How the client derived the install id (`configured`, `instance_url`, `machine`,
    /// `data_directory`).
    pub install_source: Option<String>,
    /// The machine's identity, hashed with the license id, where the client has one.
    pub machine: Option<String>,
}

/// The stored exemption of instances that hold no seat (developers' machines).
pub const LOOPBACK: &str = "loopback";

impl InstanceRow {
    /// Whether the process is a developer's machine, which holds no seat.
    pub fn is_loopback(&self) -> bool {
        self.exemption.as_deref() == Some(LOOPBACK)
    }

    /// The install the process belongs to.
    pub fn install(&self) -> &str {
        self.install_id.as_deref().unwrap_or(&self.id)
    }
}

/// What the vendor set for one license beside its key, and its soft seat overage.
#[derive(Debug, Clone, Default, PartialEq, Eq, Queryable, Selectable, Insertable)]
#[diesel(table_name = license_terms, treat_none_as_default_value = false)]
pub struct LicenseTerms {
    pub license_id: String,
    /// Whether private-network deployments may check in without telemetry; `None` takes the
    /// server's default for the tier.
    pub private_exemption: Option<bool>,
    /// How many loopback instances may hold a place at once; `None` takes the server's default.
    pub max_loopback: Option<i32>,
    /// When the license first went over its seats (its soft-overage period's start).
    pub overage_started_at: Option<NaiveDateTime>,
    /// How many processes of one install may hold its seat at once; `None` takes the server's
    /// default.
    pub max_processes: Option<i32>,
    /// How many distinct machines the processes of one install may run on at once; `None` takes
    /// the server's default (no limit unless the settings give one).
    pub max_machines: Option<i32>,
}

/// A change to a license's terms: `None` leaves a term as it is, `Some(None)` returns it to the
/// server's default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TermsChange {
    pub private_exemption: Option<Option<bool>>,
    pub max_loopback: Option<Option<i32>>,
    pub max_processes: Option<Option<i32>>,
    pub max_machines: Option<Option<i32>>,
}

/// An air-gapped install's pinned key and where its chain of usage reports stands.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Insertable)]
#[diesel(table_name = install_keys)]
pub struct InstallKeyRow {
    pub license_id: String,
    pub instance_id: String,
    /// Unpadded base64url of the install's Ed25519 public key, as its first report carried it;
    /// empty once the vendor reset the pin (`pinned_at` is then when), until the install's
    /// next report pins its key again.
    pub public_key: String,
    /// The sequence of the last report imported.
    pub report_sequence: i64,
    /// The digest of the last report imported.
    pub report_digest: String,
    pub pinned_at: NaiveDateTime,
    pub imported_at: NaiveDateTime,
}

#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = check_ins)]
pub struct NewCheckIn<'a> {
    pub instance_id: &'a str,
    pub license_id: Option<String>,
    pub at: NaiveDateTime,
    pub status: &'a str,
    pub software_version: &'a str,
    pub telemetry_batch_id: Option<String>,
    /// The end of the lease a `valid` check-in granted (the days it covers, for the roll-up).
    pub valid_until: Option<NaiveDateTime>,
    /// The sequence of the usage report this check-in stands for, when it was imported by hand.
    pub imported_report: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Queryable, Selectable)]
#[diesel(table_name = check_ins)]
pub struct CheckInRow {
    pub id: i64,
    pub instance_id: String,
    pub license_id: Option<String>,
    pub at: NaiveDateTime,
    pub status: String,
    pub software_version: String,
    pub telemetry_batch_id: Option<String>,
    pub valid_until: Option<NaiveDateTime>,
    /// The sequence of the usage report this check-in imported (an air-gapped install's file).
    pub imported_report: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Queryable, Selectable, Insertable)]
#[diesel(table_name = telemetry_batches)]
pub struct BatchRow {
    pub batch_id: String,
    pub instance_id: String,
    pub license_id: String,
    pub received_at: NaiveDateTime,
    pub period_start: NaiveDateTime,
    pub period_end: NaiveDateTime,
    pub digest: String,
    pub app_version: String,
    pub user_count_range: String,
    /// JSON of the batch's `environment`.
    pub environment: String,
    /// JSON of the batch's `dropped`.
    pub dropped: String,
    /// JSON of the batch's `redactions`.
    pub redactions: String,
}

/// A batch's raw payload: its usage, request performance and sessions in one JSON text.
#[derive(Debug, Clone, PartialEq, Queryable, Selectable, Insertable)]
#[diesel(table_name = telemetry_payloads)]
pub struct PayloadRow {
    pub batch_id: String,
    pub received_at: NaiveDateTime,
    /// A `Payload` in its stored form (see `store::payload`).
    pub body: Vec<u8>,
}

/// What `telemetry_payloads.body` holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Payload {
    pub usage: Vec<crate::protocol::UsageCount>,
    pub performance: Vec<crate::protocol::RoutePerformance>,
    pub sessions: PayloadSessions,
}

/// A batch's sessions as the payload holds them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PayloadSessions {
    pub count: u64,
    pub total_duration_s: u64,
    /// Sessions started in each hour of the day (UTC), 24 of them.
    pub hourly: Vec<u64>,
}

#[derive(Debug, Clone, PartialEq, Queryable, Selectable, Insertable)]
// As for instances: lets diesel build one multi-row upsert on SQLite too.
#[diesel(table_name = telemetry_errors, treat_none_as_default_value = false)]
pub struct ErrorRow {
    pub license_id: String,
    pub instance_id: String,
    pub fingerprint: String,
    pub error_type: String,
    pub message: String,
    pub stack: String,
    pub count: i64,
    pub first_seen: NaiveDateTime,
    pub last_seen: NaiveDateTime,
}

#[derive(Debug, Clone, PartialEq, Queryable, Selectable, Insertable)]
#[diesel(table_name = telemetry_features)]
pub struct FeatureRow {
    pub license_id: String,
    pub instance_id: String,
    pub day: NaiveDate,
    pub kind: String,
    pub name: String,
    pub count: i64,
    /// The install of the process (`None`: its own install).
    pub install_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Queryable, Selectable, Insertable)]
#[diesel(table_name = telemetry_aggregates)]
pub struct AggregateRow {
    pub day: NaiveDate,
    pub metric: String,
    pub dimension: String,
    pub value: f64,
    pub instances: i64,
    /// The installs behind the figure as a `crate::reach` sketch, for figures counted over
    /// periods (usage per name, active installs); empty otherwise.
    pub reach: String,
}

/// A batch ready to store, every string already scrubbed: what one accepted check-in writes.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredBatch {
    pub batch: BatchRow,
    pub payload: PayloadRow,
    pub errors: Vec<ErrorRow>,
}

impl StoredBatch {
    /// The telemetry text this batch writes (environment, payload, error groups): what the
    /// stored-bytes metric counts, without keys and fixed-size columns.
    pub fn text_bytes(&self) -> usize {
        let b = &self.batch;
        b.environment.len()
            + b.dropped.len()
            + self.payload.body.len()
            + self.errors.iter().map(|e| e.error_type.len() + e.message.len() + e.stack.len()).sum::<usize>()
    }
}
