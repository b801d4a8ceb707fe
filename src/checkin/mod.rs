//! The check-in: reading a request, deciding its status under the tier and seat rules,
//! recording it in one transaction, and answering with a signed lease. Knows neither actix
//! (the server module calls it from a blocking thread) nor diesel: the writer records a group
//! through the store's narrow [`CheckInWrite`](crate::store::CheckInWrite).

use chrono::{DateTime, Duration, DurationRound as _, Utc};
use std::sync::Arc;

use crate::keys::{KeyRing, Signer};
use crate::lease::{self, LeasePayload};
use crate::license::{LicensePayload, Tier};
use crate::privacy;
use crate::protocol::{
    self, BatchError, BatchLimits, CheckInRequest, CheckInResponse, CheckInStatus, TelemetryAck,
    TelemetryBatch,
};
use crate::store::{self, Store, StoreError};

mod holder;
pub mod limiter;
mod stored_batch;
mod writer;
use crate::token::{self, TokenError};
pub use holder::HolderRequest;
pub use limiter::{Limiter, LimiterClock, Rates, RetryAfter};

/// How soon an instance refused for a reason it can fix (no telemetry, no free seat) should
/// come back, at most.
const RETRY_SOON: i64 = 60 * 60;
/// Writer threads on PostgreSQL: enough that one group is written while another commits.
const WRITERS_ON_POSTGRES: usize = 3;
/// When to come back after a key that cannot be read or trusted at all.
const RETRY_UNREADABLE: i64 = 24 * 60 * 60;

/// A request the server refuses outright (400), with the code the error body carries.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct BadRequest {
    pub code: &'static str,
    pub message: String,
}

/// Why a check-in got no 200 answer.
#[derive(Debug, thiserror::Error)]
pub enum CheckInError {
    /// The request itself is malformed.
    #[error(transparent)]
    BadRequest(#[from] BadRequest),
    /// The client address, license or instance checked in more often than allowed; retry
    /// after this many seconds.
    #[error("too many check-ins; retry after {retry_after} s")]
    TooMany { retry_after: u64 },
    /// The database failed; the client should retry later.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The check-in's group could not be recorded because the database is out of reach or
    /// busy; the client should retry later (503).
    #[error("recording the check-in failed: the database is unavailable")]
    Unavailable(#[source] std::sync::Arc<StoreError>),
    /// The writer has stopped (the server is shutting down); retry later (503).
    #[error("recording the check-in failed: the writer has stopped")]
    WriterStopped,
    /// The database refused this check-in alone (a constraint, a stored value that does not
    /// read): retrying will not help (500, counted).
    #[error("the database refused the check-in")]
    Refused(#[source] std::sync::Arc<StoreError>),
    /// Recording panicked (a bug); the writer goes on with the next check-ins (500, counted).
    #[error("recording the check-in panicked")]
    Panicked,
    /// A check-in broke one of the writer's invariants (a bug); 500, counted with panics.
    #[error("a check-in broke the writer's invariant: {0}")]
    Invariant(&'static str),
}

fn bad(code: &'static str, message: impl Into<String>) -> BadRequest {
    BadRequest { code, message: message.into() }
}

/// The server's rules for exempt deployments and seats (settings), which a license's own terms
/// (`license_terms`, set by the vendor per license) override.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SeatRules {
    /// How long a license may stay over its seats, once, before newcomers are refused: the
    /// soft overage that keeps deployments running when an upgrade makes silent ones count.
    pub overage_days: u32,
    /// How many loopback instances (developers' machines, which hold no seat) a license may
    /// have at once, by default.
    pub max_loopback: u32,
    /// The tiers whose deployments on private networks may check in without telemetry, by
    /// default (Enterprise never needs telemetry, so its entry only matters for the record).
    pub private_exemption: Vec<Tier>,
    /// How many processes of one install may share its seat at once, by default; past it, the
    /// newest wins and the least recently seen is released (`replaced`).
    pub max_processes: u32,
    /// How many distinct machines the processes of one install may run on at once, by default
    /// (none: no limit); past it, a process on a further machine is refused.
    pub max_machines: Option<u32>,
}

impl Default for SeatRules {
    fn default() -> Self {
        SeatRules {
            overage_days: 14,
            max_loopback: 3,
            private_exemption: vec![Tier::Community, Tier::Pro, Tier::Enterprise],
            max_processes: 16,
            max_machines: None,
        }
    }
}

/// How long a loopback instance's lease runs: short, so that a developer's machine that went
/// away frees its place within a day.
const LOOPBACK_LEASE: i64 = 24 * 60 * 60;
/// How soon a loopback instance checks in again, at most.
const LOOPBACK_CHECK_IN: i64 = 12 * 60 * 60;

/// Everything a check-in needs besides the request.
pub struct CheckInService {
    pub ring: Arc<KeyRing>,
    pub signer: Arc<Signer>,
    pub limits: BatchLimits,
    /// The rate limits: per address (the server calls it before reading a body), per license
    /// and per instance (here, once the license verified).
    pub limiter: Limiter,
    /// The server's metrics, which the check-in path records into.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// The server's rules for seats and exempt deployments (a license's terms override them).
    pub rules: Arc<SeatRules>,
    writer: writer::Writer,
}

/// A batch that passed validation: what the acknowledgement needs, and (for a trusted
/// license) the batch as it will be stored, scrubbed.
pub struct Telemetry {
    batch_id: uuid::Uuid,
    digest: String,
    stored: Option<store::StoredBatch>,
}

/// Whose check-in this is, as far as the key tells.
pub enum Subject {
    /// The key cannot be read: answered `malformed`, with no lease.
    Unreadable(TokenError),
    /// A readable key this server cannot trust (`unknown_key`, `bad_signature`): answered with
    /// a lease saying so, but nothing about the license is recorded, as it may be forged.
    Untrusted { license: LicensePayload, error: TokenError },
    /// A license this server trusts: the writer decides under the tier and seat rules.
    Licensed(LicensePayload),
}

/// A check-in after the CPU work (parsing, validation, signature, scrubbing), ready for the
/// writer to decide and record.
pub struct Prepared {
    /// The license key as presented: the server keeps the newest key of each license.
    pub license_key: String,
    pub instance_id: String,
    pub nonce: String,
    pub software_version: String,
    pub now: DateTime<Utc>,
    pub subject: Subject,
    pub telemetry: Option<Telemetry>,
    /// The telemetry exemption the deployment declared (a license-only check-in from an exempt
    /// host).
    pub exemption: Option<protocol::TelemetryExemption>,
    /// The install this process belongs to, as its client named it (checked); `None`: the
    /// process is its own install.
    pub install: Option<protocol::InstallRef>,
    /// Set when this check-in is an air-gapped install's usage report, imported by hand: the
    /// writer checks and moves its chain in the same transaction.
    pub import: Option<ImportLink>,
    /// The audit entry of the admin request that imports this report, written in the group's
    /// transaction when the report is accepted.
    pub audit: Option<crate::store::Audit>,
}

/// Where an imported usage report stands in its install's chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportLink {
    /// The install key that signed it (unpadded base64url), pinned at the first import.
    pub public_key: String,
    pub sequence: u64,
    pub previous_digest: Option<String>,
    /// The digest of the report's signed bytes.
    pub digest: String,
}

/// A deactivation whose license and lease verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deactivation {
    pub license_id: uuid::Uuid,
    pub instance_id: String,
    pub nonce: String,
    pub now: DateTime<Utc>,
}

/// The writer's verdict on one check-in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub status: CheckInStatus,
    pub message: String,
    pub next_check_in_at: DateTime<Utc>,
    pub valid_until: DateTime<Utc>,
    /// The batch id was stored before (or earlier in the same group): acknowledged, not stored.
    pub duplicate: bool,
    /// The license's newest key, when the check-in presented an older one: the answer
    /// delivers it, and the decision was made under it.
    pub renewal: Option<String>,
    /// What the deployment's operator should know although the status is `valid` (a soft
    /// seat overage): carried in the signed lease.
    pub notice: Option<String>,
}

/// What the writer made of one check-in: a decision, recorded; or, for an imported report its
/// install's chain refuses (replayed, out of order, another key), a refusal with nothing of it
/// recorded, answered with this error (409). A refusal carries no status, so no valid status
/// can come with one.
#[derive(Debug, Clone)]
pub enum Outcome {
    Decided(Decision),
    Refused(BadRequest),
}

impl Prepared {
    /// The telemetry text this check-in writes when its batch is accepted, if it carries one.
    pub fn stored_bytes(&self) -> Option<usize> {
        self.telemetry.as_ref()?.stored.as_ref().map(store::StoredBatch::text_bytes)
    }
}

impl CheckInService {
    /// A service whose writer thread records check-ins in `store`.
    pub fn new(
        store: Store,
        ring: Arc<KeyRing>,
        signer: Arc<Signer>,
        limits: BatchLimits,
        rates: Rates,
        metrics: Arc<crate::metrics::Metrics>,
        rules: SeatRules,
    ) -> Self {
        let writers = match store.backend() {
            store::Backend::Sqlite => 1,
            store::Backend::Postgres => WRITERS_ON_POSTGRES,
        };
        let rules = Arc::new(rules);
        let writer = writer::Writer::start(store, writers, metrics.clone(), rules.clone());
        CheckInService { ring, signer, limits, limiter: Limiter::new(rates), metrics, rules, writer }
    }

    /// Reads and checks a check-in body at `now`: everything but the database.
    pub fn prepare(&self, body: &[u8], now: DateTime<Utc>) -> Result<Prepared, CheckInError> {
        let now = now.duration_trunc(Duration::seconds(1)).unwrap_or(now);
        let request: CheckInRequest<'_> = serde_json::from_slice(body)
            .map_err(|e| bad("invalid_request", format!("invalid check-in request: {e}")))?;
        check_request(&request)?;
        let subject = match token::decode::<LicensePayload>(&request.license_key) {
            Err(e) => Subject::Unreadable(e),
            Ok(decoded) => match decoded.verify_signature(&self.ring) {
                Err(error) => Subject::Untrusted { license: decoded.claims, error },
                Ok(()) => Subject::Licensed(decoded.claims),
            },
        };
        if let Subject::Licensed(license) = &subject {
            self.admit(license, &request.instance_id)?;
        }
        let batch = match (request.telemetry, request.telemetry_disabled) {
            (Some(_), true) => {
                return Err(bad(
                    "conflicting_telemetry",
                    "give either telemetry or telemetry_disabled: true, not both",
                )
                .into())
            }
            (None, false) => {
                return Err(
                    bad("missing_telemetry", "give a telemetry batch, or telemetry_disabled: true").into()
                )
            }
            (None, true) => None,
            (Some(_), false) if request.telemetry_exempt.is_some() => {
                return Err(bad(
                    "conflicting_telemetry",
                    "telemetry_exempt goes with telemetry_disabled: true (an exempt deployment sends no telemetry)",
                )
                .into())
            }
            (Some(raw), false) => Some(self.read_batch(raw.get())?),
        };
        let telemetry = batch.map(|(batch, digest)| {
            let stored = match &subject {
                Subject::Licensed(license) => Some(stored_batch::scrubbed_batch(
                    &batch,
                    &digest,
                    &request.instance_id,
                    &license.license_id.to_string(),
                    now,
                )),
                _ => None,
            };
            Telemetry { batch_id: batch.batch_id, digest, stored }
        });
        Ok(Prepared {
            license_key: request.license_key,
            instance_id: request.instance_id,
            nonce: request.nonce,
            // Stored with the instance and the check-in: a name like every other, or empty.
            software_version: version_name(&request.software_version),
            now,
            subject,
            telemetry,
            exemption: request.telemetry_exempt,
            install: request.install,
            import: None,
            audit: None,
        })
    }

    /// Reads and checks an air-gapped install's usage report (the file `licensor telemetry
    /// export --signed` writes) at `now`: its signature under the install key it carries, its
    /// fields, its license (trusted, Enterprise: the only tier that may run air-gapped) and its
    /// batch, exactly as a check-in's. Whether the key is the install's pinned one and the
    /// report the next of its chain is the writer's to decide, in the transaction that records
    /// it.
    pub fn prepare_import(&self, body: &[u8], now: DateTime<Utc>) -> Result<Prepared, CheckInError> {
        use crate::usage_report::{self, FileError};
        let now = now.duration_trunc(Duration::seconds(1)).unwrap_or(now);
        let text =
            std::str::from_utf8(body).map_err(|_| bad("invalid_report", "the report is not UTF-8 text"))?;
        let report = usage_report::read_report(text).map_err(|e| match e {
            FileError::UnsupportedVersion(_) => bad("unsupported_report_version", e.to_string()),
            FileError::BadSignature => bad("bad_report_signature", e.to_string()),
            _ => bad("invalid_report", e.to_string()),
        })?;
        let body = report.body;
        check_instance_and_nonce(&body.instance_id, &body.nonce)?;
        check_version(&body.software_version)?;
        let license = token::decode::<LicensePayload>(&body.license_key)
            .and_then(|d| d.verify_signature(&self.ring).map(|()| d.claims))
            .map_err(|e| {
                bad("invalid_license", format!("the report's license key is not one this server trusts: {e}"))
            })?;
        if license.tier != crate::license::Tier::Enterprise {
            return Err(bad(
                "air_gap_not_allowed",
                format!(
                    "license {} is {}: only Enterprise licenses may run air-gapped and report usage by file;                      its deployments check in",
                    license.license_id, license.tier
                ),
            )
            .into());
        }
        let (batch, digest) = self.read_batch(body.telemetry.get())?;
        let stored = stored_batch::scrubbed_batch(
            &batch,
            &digest,
            &body.instance_id,
            &license.license_id.to_string(),
            now,
        );
        Ok(Prepared {
            license_key: body.license_key,
            instance_id: body.instance_id,
            nonce: body.nonce,
            software_version: version_name(&body.software_version),
            now,
            subject: Subject::Licensed(license),
            telemetry: Some(Telemetry { batch_id: batch.batch_id, digest, stored: Some(stored) }),
            exemption: None,
            install: None,
            import: Some(ImportLink {
                public_key: body.install_key,
                sequence: body.sequence,
                previous_digest: body.previous_digest,
                digest: report.digest,
            }),
            audit: None,
        })
    }

    /// The signed receipt of an imported report.
    pub fn import_receipt(&self, p: &Prepared) -> Option<String> {
        let (Subject::Licensed(license), Some(link)) = (&p.subject, &p.import) else { return None };
        Some(crate::receipt::sign(
            &self.signer,
            crate::receipt::ReceiptPayload {
                v: crate::receipt::RECEIPT_VERSION,
                kid: self.signer.kid().to_owned(),
                action: crate::receipt::Action::UsageImported,
                license_id: license.license_id,
                instance_id: p.instance_id.clone(),
                nonce: p.nonce.clone(),
                server_time: p.now,
                report_digest: Some(link.digest.clone()),
                report_sequence: Some(link.sequence),
                released: None,
            },
        ))
    }

    /// Has the writer decide and record a prepared check-in, together with whatever else is
    /// waiting (one transaction for the group). A key that cannot be read or trusted is
    /// answered at once and recorded nowhere: it names no license this server knows, so
    /// nothing it says may grow the database.
    pub async fn record(&self, prepared: Prepared) -> Result<(Prepared, Outcome), CheckInError> {
        if let Some(decision) = writer::unlicensed(&prepared) {
            return Ok((prepared, Outcome::Decided(decision)));
        }
        self.writer.submit(prepared).await
    }

    /// Reads and checks a deactivation at `now`: the license must verify under the ring, and
    /// the lease presented must be one this server signed for this license and instance.
    pub fn prepare_deactivation(
        &self,
        body: &[u8],
        now: DateTime<Utc>,
    ) -> Result<Deactivation, CheckInError> {
        let now = now.duration_trunc(Duration::seconds(1)).unwrap_or(now);
        let request: protocol::DeactivationRequest = serde_json::from_slice(body)
            .map_err(|e| bad("invalid_request", format!("invalid deactivation request: {e}")))?;
        let proof = holder::Proof {
            license_key: &request.license_key,
            instance_id: &request.instance_id,
            nonce: &request.nonce,
            lease: &request.lease,
        };
        let license = self.prove(&proof, None)?;
        Ok(Deactivation {
            license_id: license.license_id,
            instance_id: request.instance_id,
            nonce: request.nonce,
            now,
        })
    }

    /// Counts a request of a license whose signature verified against its license's and its
    /// instance's rate limits. Only a license's holder can present it, so these limits cannot
    /// be spent by anyone else: nobody can lock a victim's instance out by naming its id.
    fn admit(&self, license: &LicensePayload, instance_id: &str) -> Result<(), CheckInError> {
        let too_many = |scope| {
            move |RetryAfter(retry_after)| {
                self.metrics.refused(scope);
                CheckInError::TooMany { retry_after }
            }
        };
        self.limiter.admit_license(license.license_id, license.seats).map_err(too_many("license"))?;
        self.limiter.admit_instance(license.license_id, instance_id).map_err(too_many("instance"))
    }

    /// The signed receipt of a deactivation.
    pub fn receipt(&self, d: &Deactivation) -> String {
        crate::receipt::sign(
            &self.signer,
            crate::receipt::ReceiptPayload {
                v: crate::receipt::RECEIPT_VERSION,
                kid: self.signer.kid().to_owned(),
                action: crate::receipt::Action::Deactivated,
                license_id: d.license_id,
                instance_id: d.instance_id.clone(),
                nonce: d.nonce.clone(),
                server_time: d.now,
                report_digest: None,
                report_sequence: None,
                released: None,
            },
        )
    }

    /// The answer to a recorded check-in, with its signed lease.
    pub fn respond(&self, p: &Prepared, d: &Decision) -> CheckInResponse {
        let license = match &p.subject {
            Subject::Unreadable(_) => None,
            Subject::Untrusted { license, .. } | Subject::Licensed(license) => Some(license),
        };
        let telemetry = p.telemetry.as_ref().map(|t| TelemetryAck {
            batch_id: t.batch_id,
            accepted: d.status == CheckInStatus::Valid,
            duplicate: d.duplicate,
            digest: t.digest.clone(),
        });
        let lease = license.map(|license| {
            lease::sign(
                &self.signer,
                LeasePayload {
                    v: lease::LEASE_VERSION,
                    kid: self.signer.kid().to_owned(),
                    status: d.status,
                    license_id: license.license_id,
                    instance_id: p.instance_id.clone(),
                    nonce: p.nonce.clone(),
                    server_time: p.now,
                    next_check_in_at: d.next_check_in_at,
                    valid_until: d.valid_until,
                    telemetry: telemetry.clone(),
                    license_key: d.renewal.clone(),
                    notice: d.notice.clone(),
                },
            )
        });
        CheckInResponse {
            status: d.status,
            message: d.message.clone(),
            license_id: license.map(|l| l.license_id),
            lease,
            next_check_in_at: d.next_check_in_at,
            valid_until: d.valid_until,
            server_time: p.now,
            telemetry,
            license_key: d.renewal.clone(),
        }
    }

    fn read_batch(&self, raw: &str) -> Result<(TelemetryBatch, String), BadRequest> {
        self.metrics.telemetry_received_bytes.inc_by(raw.len() as u64);
        let digest = protocol::digest(raw.as_bytes());
        let batch = protocol::parse_batch(raw).map_err(|e| match e {
            BatchError::UnsupportedSchema { .. } => bad("unsupported_schema", e.to_string()),
            BatchError::TooMany { .. } => bad("telemetry_limit_exceeded", e.to_string()),
            BatchError::Invalid(_) => bad("invalid_telemetry", e.to_string()),
        })?;
        batch.check(&self.limits).map_err(|e| match e {
            BatchError::TooMany { .. } => bad("telemetry_limit_exceeded", e.to_string()),
            _ => bad("invalid_telemetry", e.to_string()),
        })?;
        Ok((batch, digest))
    }
}

/// A software version as it is stored: itself when it is an identifier the scrubber leaves
/// unchanged, else empty (unknown).
fn version_name(version: &str) -> String {
    privacy::keep_name(version, &mut privacy::Redactions::default()).unwrap_or_default().to_owned()
}

/// The longest instance id that is neither a UUID nor a hex digest.
const MAX_SHORT_INSTANCE_ID: usize = 32;

/// Whether an instance id is one the server stores and shows as it is: a canonical UUID, a
/// lowercase hex digest (32, 40 or 64 digits), or a short identifier the scrubber leaves
/// unchanged. Anything else could carry a secret or a name into every view.
fn acceptable_instance_id(id: &str) -> bool {
    let hex = |s: &str| s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    let uuid =
        uuid::Uuid::try_parse(id).is_ok() && id.len() == 36 && id.bytes().filter(|b| *b == b'-').count() == 4;
    let digest = matches!(id.len(), 32 | 40 | 64) && hex(id);
    uuid || digest || (id.len() <= MAX_SHORT_INSTANCE_ID && privacy::is_unchanged(id))
}

/// Checks what every request of an instance carries: its id and the client's nonce.
fn check_instance_and_nonce(instance_id: &str, nonce: &str) -> Result<(), BadRequest> {
    if !protocol::valid_instance_id(instance_id) {
        return Err(bad(
            "invalid_instance_id",
            "instance_id must be 1 to 64 characters of A-Z, a-z, 0-9, '_' and '-'",
        ));
    }
    // The instance id is stored and shown as it is, never scrubbed: one that could carry a
    // secret or a name (an access key, say) is refused rather than kept.
    if !acceptable_instance_id(instance_id) {
        return Err(bad(
            "invalid_instance_id",
            "instance_id must be a UUID, a lowercase hex digest or a short identifier that is not secret or personal data; use a random UUID, as the client library does",
        ));
    }
    if !protocol::valid_nonce(nonce) {
        return Err(bad("invalid_nonce", "nonce must be unpadded base64url of 16 to 128 random bytes"));
    }
    Ok(())
}

fn check_request(request: &CheckInRequest<'_>) -> Result<(), BadRequest> {
    check_instance_and_nonce(&request.instance_id, &request.nonce)?;
    if let Some(install) = &request.install {
        if !protocol::valid_install_id(&install.id)
            || install.machine.as_deref().is_some_and(|m| !protocol::valid_install_id(m))
        {
            return Err(bad(
                "invalid_install",
                "install.id and install.machine must be 64 lowercase hex digits (SHA-256, as the client library sends)",
            ));
        }
    }
    check_version(&request.software_version)
}

fn check_version(version: &str) -> Result<(), BadRequest> {
    if version.is_empty()
        || version.len() > protocol::MAX_VERSION_LEN
        || version.chars().any(char::is_control)
    {
        return Err(bad("invalid_software_version", "software_version must be 1 to 64 characters"));
    }
    Ok(())
}

/// Where a check-in stands among its license's places when it is decided.
pub(crate) struct Place {
    /// The exemption it declared, if any.
    pub exemption: Option<protocol::TelemetryExemption>,
    /// It already holds a place of its kind (a seat, or a loopback place).
    pub holds: bool,
    /// Places of its kind held by the license's other instances.
    pub held_by_others: i64,
}

/// A license's terms in force: its own, else the server's rules.
pub struct Terms {
    pub private_exemption: bool,
    pub max_loopback: i64,
    pub max_processes: usize,
    /// `None`: no limit.
    pub max_machines: Option<usize>,
    /// The end of the license's soft overage: `None` before it went over its seats.
    pub overage_until: Option<DateTime<Utc>>,
    pub overage_days: u32,
}

impl Terms {
    pub fn of(rules: &SeatRules, tier: Tier, own: Option<&store::LicenseTerms>) -> Terms {
        let days = Duration::days(i64::from(rules.overage_days));
        Terms {
            private_exemption: own
                .and_then(|t| t.private_exemption)
                .unwrap_or_else(|| rules.private_exemption.contains(&tier)),
            max_loopback: own.and_then(|t| t.max_loopback).map_or(i64::from(rules.max_loopback), i64::from),
            max_processes: own
                .and_then(|t| t.max_processes)
                .map_or(rules.max_processes as usize, |n| usize::try_from(n).unwrap_or(1))
                .max(1),
            max_machines: own
                .and_then(|t| t.max_machines)
                .map(|n| usize::try_from(n).unwrap_or(1).max(1))
                .or(rules.max_machines.map(|n| (n as usize).max(1))),
            overage_until: own.and_then(|t| t.overage_started_at).map(|at| store::utc(at) + days),
            overage_days: rules.overage_days,
        }
    }
}

/// What the writer decided for a trusted license's check-in.
pub(crate) struct Ruling {
    pub status: CheckInStatus,
    pub message: String,
    /// Said to the deployment in the signed lease although the status is `valid`.
    pub notice: Option<String>,
    /// This check-in starts the license's soft overage.
    pub starts_overage: bool,
}

/// The status of a trusted license's check-in, and the sentence that explains it.
pub(crate) fn decide(
    license: &LicensePayload,
    row: &store::LicenseRow,
    terms: &Terms,
    place: &Place,
    has_telemetry: bool,
    now: DateTime<Utc>,
) -> Ruling {
    let verdict = |status, message: String| Ruling { status, message, notice: None, starts_overage: false };
    if row.revoked_at.is_some() {
        let reason = row.revoked_reason.as_deref().map(|r| format!(" ({r})")).unwrap_or_default();
        return verdict(
            CheckInStatus::Revoked,
            format!("This license has been revoked by its vendor{reason}."),
        );
    }
    match token::check_window(license, now) {
        Err(TokenError::NotYetValid { not_before }) => {
            let at = crate::time::format(&not_before);
            return verdict(CheckInStatus::NotYetValid, format!("This license is not valid before {at}."));
        }
        Err(TokenError::Expired { expires_at }) => {
            let at = crate::time::format(&expires_at);
            return verdict(CheckInStatus::Expired, format!("This license expired at {at}."));
        }
        _ => {}
    }
    use protocol::TelemetryExemption as Exempt;
    if license.tier.telemetry_required() && !has_telemetry {
        match place.exemption {
            None => {
                return verdict(
                    CheckInStatus::TelemetryRequired,
                    format!(
                        "Telemetry is required on the {} tier; only Enterprise licenses may disable it.",
                        license.tier
                    ),
                )
            }
            // A developer's machine is always exempt: it holds no seat and is bounded apart.
            Some(Exempt::Loopback) => {}
            Some(exemption) if !terms.private_exemption => {
                return verdict(
                    CheckInStatus::TelemetryRequired,
                    format!(
                        "This license requires telemetry from deployments on private networks too (declared: \
                         {exemption}); set LICENSOR_INSTANCE_URL to the deployment's public URL, or ask the vendor."
                    ),
                )
            }
            Some(_) => {}
        }
    }
    if place.exemption == Some(Exempt::Loopback) {
        if !place.holds && place.held_by_others >= terms.max_loopback {
            return verdict(
                CheckInStatus::SeatLimitExceeded,
                format!(
                    "All {} places for developers' machines (loopback instances, which hold no seat) of this license \
                     are in use; one frees itself a day after its machine stops checking in.",
                    terms.max_loopback
                ),
            );
        }
        return verdict(
            CheckInStatus::Valid,
            format!("The {} license is valid on this developer's machine (no seat held).", license.tier),
        );
    }
    if !place.holds && place.held_by_others >= i64::from(license.seats) {
        let in_overage = match terms.overage_until {
            Some(until) => now < until,
            None => terms.overage_days > 0,
        };
        if !in_overage {
            return verdict(
                CheckInStatus::SeatLimitExceeded,
                format!(
                    "All {} seat(s) of this license are in use; a seat frees itself when an instance stops checking in.",
                    license.seats
                ),
            );
        }
        let until = terms.overage_until.unwrap_or(now + Duration::days(i64::from(terms.overage_days)));
        let notice = format!(
            "This license is over its seats ({} in use, {} licensed): a soft-overage period lets every deployment run \
             until {}; then new deployments beyond the seats are refused. Release unused installs or ask the vendor \
             for more seats.",
            place.held_by_others + 1,
            license.seats,
            crate::time::format(&until)
        );
        return Ruling {
            status: CheckInStatus::Valid,
            message: format!("The {} license is valid. {notice}", license.tier),
            notice: Some(notice),
            starts_overage: terms.overage_until.is_none(),
        };
    }
    verdict(CheckInStatus::Valid, format!("The {} license is valid.", license.tier))
}

struct Times {
    next_check_in_at: DateTime<Utc>,
    valid_until: DateTime<Utc>,
}

/// When to come back and how long the lease lasts, per status of a trusted license (the writer
/// answers keys it cannot read or trust itself). `held` is the end of the seat the instance
/// holds now, if any.
fn times_for(
    license: &LicensePayload,
    status: CheckInStatus,
    held: Option<DateTime<Utc>>,
    loopback: bool,
    now: DateTime<Utc>,
) -> Times {
    let interval = license.check_in_interval();
    let soon = interval.min(Duration::seconds(RETRY_SOON));
    match status {
        CheckInStatus::Valid if loopback => {
            let mut valid_until = now + Duration::seconds(LOOPBACK_LEASE);
            if let Some(expires_at) = license.expires_at {
                valid_until = valid_until.min(expires_at);
            }
            Times { next_check_in_at: now + interval.min(Duration::seconds(LOOPBACK_CHECK_IN)), valid_until }
        }
        CheckInStatus::Valid => {
            let mut valid_until = now + interval + license.tier.grace();
            if let Some(expires_at) = license.expires_at {
                valid_until = valid_until.min(expires_at);
            }
            Times { next_check_in_at: now + interval, valid_until }
        }
        // Not extended: what the instance already held, if anything.
        CheckInStatus::TelemetryRequired | CheckInStatus::SeatLimitExceeded => {
            Times { next_check_in_at: now + soon, valid_until: held.unwrap_or(now) }
        }
        CheckInStatus::NotYetValid => {
            Times { next_check_in_at: (now + interval).min(license.not_before), valid_until: now }
        }
        _ => Times { next_check_in_at: now + interval, valid_until: now },
    }
}
