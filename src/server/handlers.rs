//! One handler per route. Handlers read and check the request, hand the work to the blocking
//! pool, and shape the answer; the decisions live in `checkin` and `store`.

use actix_web::{web, HttpRequest, HttpResponse};
use chrono::Duration;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use super::audit::Trail;
use super::auth::{Admin, FullAdmin};
use super::error::{AdminErrors, ApiError, WriteErrors};
use super::extract::{self, page_size, AddressAdmitted, Json, JsonBytes, OptionalJsonBytes};
use super::{blocking, AppState};
use crate::license::{self, Expiry, LicensePayload, LicenseRequest, Tier};
use crate::store;

/// The answer of the health probes.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct Probe {
    /// `ok` (the process serves) or `ready` (a check-in could be recorded now).
    status: &'static str,
}

/// Whether the process serves.
#[utoipa::path(get, path = "/healthz", tag = "health", responses((status = 200, body = Probe)))]
pub(super) async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(Probe { status: "ok" })
}

/// Whether a check-in could be recorded now: the database answers, its schema is there, and a
/// rolled-back write goes through.
#[utoipa::path(get, path = "/readyz", tag = "health", responses(
    (status = 200, body = Probe),
    (status = 503, description = "The database cannot record a check-in now", body = crate::protocol::ErrorBody),
))]
pub(super) async fn readyz(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let store = state.store.clone();
    // Ready means a check-in could be recorded now, not merely that a connection opens.
    blocking(move || store.ready().map_err(|e| ApiError::Unavailable(Box::new(e)))).await?;
    Ok(HttpResponse::Ok().json(Probe { status: "ready" }))
}

/// `GET /metrics` on the main address: the server's metrics, for an admin token.
#[utoipa::path(get, path = "/metrics", tag = "health", security(("admin_token" = [])), responses(
    (status = 200, description = "The server's metrics", content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8", body = String),
    (status = 401, description = "No valid admin token", body = crate::protocol::ErrorBody),
))]
pub(super) async fn metrics(_admin: Admin, state: web::Data<AppState>) -> HttpResponse {
    metrics_text(&state)
}

/// `GET /metrics` on the metrics address (`LICENSOR_METRICS_BIND`), which only a private
/// network should reach: no token.
pub(super) async fn metrics_open(state: web::Data<AppState>) -> HttpResponse {
    metrics_text(&state)
}

fn metrics_text(state: &AppState) -> HttpResponse {
    HttpResponse::Ok().content_type(crate::metrics::CONTENT_TYPE).body(state.service.metrics.render())
}

pub(super) async fn not_found(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    Err(ApiError::NotFound(format!("no route {} {}", req.method(), req.path())))
}

pub(super) async fn method_not_allowed() -> Result<HttpResponse, ApiError> {
    Err(ApiError::MethodNotAllowed)
}

/// A deployment checks in: its license is judged, its telemetry batch recorded once, and the
/// answer carries a lease signed by the server and bound to the request's nonce.
#[utoipa::path(post, path = "/v1/check-ins", tag = "check-ins",
    request_body(content = crate::protocol::CheckInRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "Judged and recorded; `status` says how", body = crate::protocol::CheckInResponse),
        (status = 400, description = "The request or its batch is not valid", body = crate::protocol::ErrorBody),
        (status = 408, description = "The body did not arrive in time", body = crate::protocol::ErrorBody),
        (status = 413, description = "The body is too large", body = crate::protocol::ErrorBody),
        (status = 415, description = "The body is not declared as JSON", body = crate::protocol::ErrorBody),
        (status = 429, description = "Over a rate limit; see Retry-After", body = crate::protocol::ErrorBody),
        (status = 503, description = "The check-in could not be recorded now; retry", body = crate::protocol::ErrorBody),
    ))]
pub(super) async fn check_in(
    _admitted: AddressAdmitted,
    state: web::Data<AppState>,
    JsonBytes(body): JsonBytes,
) -> Result<HttpResponse, ApiError> {
    // Parsing, checking, verifying and scrubbing take a few hundred microseconds of CPU and no
    // I/O: done here, on the worker. The writer thread does the database work.
    let started = std::time::Instant::now();
    let prepared = state.service.prepare(&body, (state.clock)())?;
    let (prepared, outcome) = state.service.record(prepared).await?;
    let decision = match outcome {
        crate::checkin::Outcome::Decided(decision) => decision,
        // Only an imported report can be refused so; a check-in never is.
        crate::checkin::Outcome::Refused(refusal) => {
            return Err(ApiError::Conflict { code: refusal.code, message: refusal.message })
        }
    };
    let answer = state.service.respond(&prepared, &decision);
    let metrics = &state.service.metrics;
    metrics.check_ins.get_or_create(&[("status", decision.status.as_str())]).inc();
    if let (Some(ack), Some(bytes)) = (&answer.telemetry, prepared.stored_bytes()) {
        if ack.accepted && !ack.duplicate {
            metrics.telemetry_stored_bytes.inc_by(bytes as u64);
        }
    }
    metrics.check_in_seconds.observe(started.elapsed().as_secs_f64());
    Ok(HttpResponse::Ok().json(answer))
}

/// An instance releases its own seat (a deployment being decommissioned), proven by its
/// license key and the last lease the server signed for it; answered with a signed receipt.
#[utoipa::path(post, path = "/v1/deactivations", tag = "check-ins",
    request_body(content = crate::protocol::DeactivationRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "A receipt signed by the server", body = crate::protocol::DeactivationResponse),
        (status = 400, description = "The request, key or lease is not valid", body = crate::protocol::ErrorBody),
        (status = 408, body = crate::protocol::ErrorBody),
        (status = 413, body = crate::protocol::ErrorBody),
        (status = 415, body = crate::protocol::ErrorBody),
        (status = 429, body = crate::protocol::ErrorBody),
        (status = 503, body = crate::protocol::ErrorBody),
    ))]
pub(super) async fn deactivate(
    _admitted: AddressAdmitted,
    state: web::Data<AppState>,
    JsonBytes(body): JsonBytes,
) -> Result<HttpResponse, ApiError> {
    let deactivation = state.service.prepare_deactivation(&body, (state.clock)())?;
    let store = state.store.clone();
    let (license, instance, now) =
        (deactivation.license_id.to_string(), deactivation.instance_id.clone(), deactivation.now);
    let event = super::webhooks::instance_released(&license, &instance, "self", now);
    let released = blocking(move || {
        store.release_instance(&license, &instance, now, &[event], None).map_err(ApiError::from)
    })
    .await?
    .is_some();
    tracing::info!(license_id = %deactivation.license_id, instance_id = %deactivation.instance_id, "instance deactivated itself");
    Ok(HttpResponse::Ok().json(crate::protocol::DeactivationResponse {
        receipt: state.service.receipt(&deactivation),
        released,
    }))
}

/// An air-gapped Enterprise install's usage report, carried by hand (`licensor admin
/// import-usage`): verified under the install's pinned key and its chain, recorded like a
/// check-in's batch (marked imported; the same report twice counts once), and answered with
/// the usage receipt file the deployment imports, which carries a renewed lease and any renewed
/// license key.
#[utoipa::path(post, path = "/v1/admin/usage-imports", tag = "check-ins", security(("admin_token" = [])),
    request_body(content = Object, content_type = "application/json",
        description = "The usage report file exactly as `licensor telemetry export --signed` wrote it (its signature covers the report's bytes)"),
    responses(
        (status = 200, description = "The usage receipt file: a receipt bound to the report's digest and a lease bound to its nonce", content_type = "application/json", body = Object),
        (status = 400, description = "Not a report, a bad signature, an untrusted license or one that may not run air-gapped, an invalid batch", body = crate::protocol::ErrorBody),
        (status = 409, description = "Signed by another key than the install's, replayed, out of order, or another report of the same number", body = crate::protocol::ErrorBody),
        (status = 413, body = crate::protocol::ErrorBody),
        (status = 415, body = crate::protocol::ErrorBody),
        WriteErrors,
    ))]
pub(super) async fn import_usage(
    _admin: FullAdmin,
    trail: Trail,
    state: web::Data<AppState>,
    JsonBytes(body): JsonBytes,
) -> Result<HttpResponse, ApiError> {
    let mut prepared = state.service.prepare_import(&body, (state.clock)())?;
    prepared.audit = Some(trail.audit(actix_web::http::StatusCode::OK));
    let (prepared, outcome) = state.service.record(prepared).await?;
    let decision = match outcome {
        crate::checkin::Outcome::Decided(decision) => decision,
        crate::checkin::Outcome::Refused(refusal) => {
            return Err(ApiError::Conflict { code: refusal.code, message: refusal.message })
        }
    };
    let answer = state.service.respond(&prepared, &decision);
    state.service.metrics.check_ins.get_or_create(&[("status", decision.status.as_str())]).inc();
    let (Some(receipt), Some(lease)) = (state.service.import_receipt(&prepared), answer.lease) else {
        return Err(ApiError::Internal("an imported report of a trusted license got no lease".into()));
    };
    tracing::info!(instance_id = %prepared.instance_id, status = %decision.status, duplicate = decision.duplicate, "usage report imported");
    Ok(HttpResponse::Ok()
        .content_type("application/json")
        .body(crate::usage_report::write_receipt(receipt, lease)))
}

/// The body of an admin `POST /v1/admin/licenses`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct IssueBody {
    tier: Tier,
    licensee: String,
    /// RFC 3339; required unless `perpetual` is true.
    #[serde(default)]
    expires_at: Option<String>,
    #[serde(default)]
    perpetual: bool,
    #[serde(default)]
    not_before: Option<String>,
    #[serde(default = "one")]
    #[schema(default = 1)]
    seats: u32,
    #[serde(default)]
    features: Vec<String>,
    #[serde(default)]
    check_in_interval_s: Option<u64>,
}

fn one() -> u32 {
    1
}

fn instant(field: &'static str, value: &str) -> Result<chrono::DateTime<chrono::Utc>, ApiError> {
    crate::time::parse(value).map_err(|_| {
        ApiError::bad_request("invalid_request", format!("{field}: {value:?} is not an RFC 3339 time"))
    })
}

/// The server's issuing key, or the 409 that says why `what` cannot be done without one.
fn issuer(state: &AppState, what: &str) -> Result<std::sync::Arc<crate::keys::Signer>, ApiError> {
    state.issuer.clone().ok_or_else(|| ApiError::Conflict {
        code: "issuing_disabled",
        message: format!("this server holds no issuing key; configure LICENSOR_ISSUING_KEY to {what}"),
    })
}

/// A license key and what it says.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct IssuedLicense {
    /// The `LIC1` key to hand to the customer.
    license_key: String,
    payload: LicensePayload,
}

/// Issues a license with the server's issuing key.
#[utoipa::path(post, path = "/v1/admin/licenses", tag = "licenses", security(("admin_token" = [])),
    request_body(content = IssueBody, content_type = "application/json"),
    responses(
        (status = 201, description = "Issued", body = IssuedLicense),
        (status = 409, description = "The server holds no issuing key", body = crate::protocol::ErrorBody),
        (status = 413, body = crate::protocol::ErrorBody),
        (status = 415, body = crate::protocol::ErrorBody),
        WriteErrors,
    ))]
pub(super) async fn issue_license(
    _admin: FullAdmin,
    trail: Trail,
    state: web::Data<AppState>,
    Json(body): Json<IssueBody>,
) -> Result<HttpResponse, ApiError> {
    let issuer = issuer(&state, "issue licenses")?;
    let expiry = match (&body.expires_at, body.perpetual) {
        (Some(t), false) => Expiry::At(instant("expires_at", t)?),
        (None, true) => Expiry::Perpetual,
        _ => {
            return Err(ApiError::bad_request(
                "invalid_request",
                "give exactly one of expires_at and perpetual: true",
            ))
        }
    };
    let request = LicenseRequest {
        licensee: body.licensee,
        tier: body.tier,
        expiry,
        not_before: body.not_before.as_deref().map(|t| instant("not_before", t)).transpose()?,
        seats: body.seats,
        features: body.features,
        check_in_interval: body.check_in_interval_s.map(std::time::Duration::from_secs),
    };
    let now = (state.clock)();
    let issued = license::issue(&issuer, request, now)
        .map_err(|e| ApiError::bad_request("invalid_license", e.to_string()))?;
    let store = state.store.clone();
    let mut row = store::LicenseRow::new(&issued.payload, Some(&issued.key), now);
    row.issued_here = true;
    let event = super::webhooks::license_keyed("license.issued", &issued.payload, now);
    let audit = trail.audit(actix_web::http::StatusCode::CREATED);
    blocking(move || store.insert_issued_license(&row, &[event], Some(&audit)).map_err(ApiError::from))
        .await?;
    tracing::info!(license_id = %issued.payload.license_id, tier = %issued.payload.tier, "license issued");
    Ok(HttpResponse::Created().json(IssuedLicense { license_key: issued.key, payload: issued.payload }))
}

/// What `PATCH /v1/admin/licenses/{license_id}` changes; at least one field.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct UpdateBody {
    /// RFC 3339: the new expiry.
    #[serde(default)]
    expires_at: Option<String>,
    /// True: the license no longer expires.
    #[serde(default)]
    perpetual: bool,
    #[serde(default)]
    seats: Option<u32>,
    /// The whole new list of entitlements.
    #[serde(default)]
    features: Option<Vec<String>>,
    /// A new tier: its schedule, grace and telemetry rule apply once the key is delivered.
    #[serde(default)]
    tier: Option<Tier>,
}

/// Renews or changes a license: a new key for the same license id, signed with the issuing
/// key, which the next check-in of each of its instances delivers (see `checkin`).
#[utoipa::path(patch, path = "/v1/admin/licenses/{license_id}", tag = "licenses", security(("admin_token" = [])),
    params(("license_id" = String, Path, description = "The license's id (a UUID)")),
    request_body(content = UpdateBody, content_type = "application/json"),
    responses(
        (status = 200, description = "The successor key, delivered by the next check-ins", body = IssuedLicense),
        (status = 404, description = "No such license", body = crate::protocol::ErrorBody),
        (status = 409, description = "No issuing key, the license not seen yet, or changed meanwhile", body = crate::protocol::ErrorBody),
        (status = 413, body = crate::protocol::ErrorBody),
        (status = 415, body = crate::protocol::ErrorBody),
        WriteErrors,
    ))]
pub(super) async fn update_license(
    _admin: FullAdmin,
    trail: Trail,
    state: web::Data<AppState>,
    path: web::Path<String>,
    Json(body): Json<UpdateBody>,
) -> Result<HttpResponse, ApiError> {
    let issuer = issuer(&state, "renew licenses")?;
    let expiry = match (&body.expires_at, body.perpetual) {
        (Some(_), true) => {
            return Err(ApiError::bad_request(
                "invalid_request",
                "give at most one of expires_at and perpetual: true",
            ))
        }
        (Some(t), false) => Some(Expiry::At(instant("expires_at", t)?)),
        (None, true) => Some(Expiry::Perpetual),
        (None, false) => None,
    };
    let changes = license::Changes { expiry, seats: body.seats, features: body.features, tier: body.tier };
    if changes.is_empty() {
        return Err(ApiError::bad_request(
            "invalid_request",
            "give what to change: expires_at or perpetual, seats, features, tier",
        ));
    }
    let license_id = path.into_inner();
    let (store, now) = (state.store.clone(), (state.clock)());
    let audit = trail.audit(actix_web::http::StatusCode::OK);
    let renewed = blocking(move || renew(&store, &issuer, &license_id, changes, now, Some(&audit))).await?;
    tracing::info!(license_id = %renewed.payload.license_id, "license renewed");
    Ok(HttpResponse::Ok().json(IssuedLicense { license_key: renewed.key, payload: renewed.payload }))
}

/// Issues the successor of a license's newest key with `changes` and makes it the license's
/// key (the admin API's `PATCH` and the dashboard's renew form). Blocking.
/// A license's stored key that no longer decodes (damage, or a bug that wrote it).
#[derive(Debug, thiserror::Error)]
#[error("the stored key of license {license_id} does not read")]
struct StoredKeyUnreadable {
    license_id: String,
    source: crate::token::TokenError,
}

pub(crate) fn renew(
    store: &store::Store,
    issuer: &crate::keys::Signer,
    license_id: &str,
    changes: license::Changes,
    now: chrono::DateTime<chrono::Utc>,
    audit: Option<&store::Audit>,
) -> Result<license::Issued, ApiError> {
    let unknown = || ApiError::NotFound(format!("no license {license_id:?} is known to this server"));
    let row = store.license(license_id)?.ok_or_else(unknown)?;
    // The row holds the license's newest key: this server's, or the newest a check-in
    // presented. A license only revoked by id, never seen, has none to build on.
    let Some(current_key) = row.license_key.as_deref() else {
        return Err(ApiError::Conflict {
            code: "license_not_seen",
            message:
                "this server has not seen this license's key yet; it can renew it after its first check-in"
                    .into(),
        });
    };
    let current = crate::token::decode::<LicensePayload>(current_key)
        .map_err(|e| {
            ApiError::Internal(Box::new(StoredKeyUnreadable { license_id: license_id.to_owned(), source: e }))
        })?
        .claims;
    let issued = license::renew(issuer, &current, changes, now)
        .map_err(|e| ApiError::bad_request("invalid_license", e.to_string()))?;
    let mut new_row = store::LicenseRow::new(&issued.payload, Some(&issued.key), now);
    new_row.id = row.id.clone();
    let event = super::webhooks::license_keyed("license.renewed", &issued.payload, now);
    if !store.replace_license_key(&new_row, row.issued_at, &[event], audit)? {
        return Err(ApiError::Conflict {
            code: "license_changed",
            message: "the license changed while it was being renewed; try again".into(),
        });
    }
    Ok(issued)
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct LicenseListQuery {
    #[serde(default)]
    limit: Option<usize>,
    #[serde(default)]
    cursor: Option<String>,
    #[serde(default)]
    tier: Option<Tier>,
    #[serde(default)]
    revoked: Option<bool>,
    /// Text in the licensee's name, or the start of the license id.
    #[serde(default)]
    search: Option<String>,
    /// `false`: licenses no deployment ever checked in for (issued or registered, then silent).
    #[serde(default)]
    checked_in: Option<bool>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct InstanceListQuery {
    #[serde(default)]
    limit: Option<usize>,
    #[serde(default)]
    cursor: Option<String>,
    #[serde(default)]
    license_id: Option<String>,
    #[serde(default)]
    status: Option<crate::protocol::CheckInStatus>,
}

/// Checks a page size and a cursor.
fn page(limit: Option<usize>, cursor: Option<&str>) -> Result<(usize, Option<store::Cursor>), ApiError> {
    let limit = page_size(limit)?;
    let cursor = cursor
        .map(|c| {
            store::Cursor::decode(c).ok_or_else(|| {
                ApiError::bad_request("invalid_cursor", "the cursor is not one this listing handed out")
            })
        })
        .transpose()?;
    Ok((limit, cursor))
}

/// A page of licenses.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct LicensePage {
    licenses: Vec<store::LicenseRecord>,
    /// Where the next page starts (`cursor=`); absent on the last page.
    next_cursor: Option<String>,
}

/// The licenses this server knows, newest first.
#[utoipa::path(get, path = "/v1/admin/licenses", tag = "licenses", security(("admin_token" = [])),
    params(LicenseListQuery),
    responses((status = 200, body = LicensePage), AdminErrors))]
pub(super) async fn list_licenses(
    _admin: Admin,
    state: web::Data<AppState>,
    web::Query(query): web::Query<LicenseListQuery>,
) -> Result<HttpResponse, ApiError> {
    let (limit, cursor) = page(query.limit, query.cursor.as_deref())?;
    let filter = store::LicenseFilter {
        tier: query.tier.map(|t| t.as_str().to_owned()),
        revoked: query.revoked,
        id: None,
        search: query.search,
        checked_in: query.checked_in,
    };
    let (store, now) = (state.store.clone(), (state.clock)());
    let page =
        blocking(move || store.list_licenses(now, &filter, limit, cursor.as_ref()).map_err(ApiError::from))
            .await?;
    let next_cursor = page.next.as_ref().map(store::Cursor::encode);
    Ok(HttpResponse::Ok().json(LicensePage { licenses: page.items, next_cursor }))
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RevokeBody {
    #[serde(default)]
    reason: Option<String>,
}

/// A license's revocation as it now stands.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct Revocation {
    license_id: String,
    revoked: bool,
}

/// Revokes a license (one not seen yet too): its instances' next check-ins answer `revoked`.
#[utoipa::path(post, path = "/v1/admin/licenses/{license_id}/revoke", tag = "licenses", security(("admin_token" = [])),
    params(("license_id" = String, Path, description = "The license's id (a UUID)")),
    request_body(content = Option<RevokeBody>, content_type = "application/json", description = "Optional: the reason"),
    responses(
        (status = 200, body = Revocation),
        (status = 413, body = crate::protocol::ErrorBody),
        (status = 415, body = crate::protocol::ErrorBody),
        WriteErrors,
    ))]
pub(super) async fn revoke_license(
    _admin: FullAdmin,
    trail: Trail,
    state: web::Data<AppState>,
    path: web::Path<String>,
    OptionalJsonBytes(body): OptionalJsonBytes,
) -> Result<HttpResponse, ApiError> {
    let license_id = path.into_inner();
    // The body is optional: a bare POST revokes without a reason.
    let reason = match body {
        None => None,
        Some(body) => extract::parse::<RevokeBody>(&body)?
            .reason
            .map(|r| crate::privacy::scrub(r.chars().take(500).collect::<String>().as_str()).0),
    };
    set_revocation(state, trail, license_id, Some(reason)).await
}

/// Lifts a license's revocation.
#[utoipa::path(post, path = "/v1/admin/licenses/{license_id}/reinstate", tag = "licenses", security(("admin_token" = [])),
    params(("license_id" = String, Path, description = "The license's id")),
    responses(
        (status = 200, body = Revocation),
        (status = 404, description = "No such license", body = crate::protocol::ErrorBody),
        WriteErrors,
    ))]
pub(super) async fn reinstate_license(
    _admin: FullAdmin,
    trail: Trail,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    set_revocation(state, trail, path.into_inner(), None).await
}

async fn set_revocation(
    state: web::Data<AppState>,
    trail: Trail,
    license_id: String,
    revocation: Option<Option<String>>,
) -> Result<HttpResponse, ApiError> {
    let (store, now) = (state.store.clone(), (state.clock)());
    let audit = trail.audit(actix_web::http::StatusCode::OK);
    let revoked = revocation.is_some();
    let id = license_id.clone();
    let found = blocking(move || {
        match revocation {
            // A license id is a UUID; one this server has not seen yet can be revoked too.
            Some(reason) => {
                let uuid = uuid::Uuid::parse_str(&id).map_err(|_| {
                    ApiError::bad_request(
                        "invalid_license_id",
                        format!("{id:?} is not a license id (a UUID)"),
                    )
                })?;
                let event = super::webhooks::license_revocation(&id, Some(reason.as_deref()), now);
                store.revoke_by_id(uuid, reason, now, &[event], Some(&audit))?;
                Ok(true)
            }
            None => {
                let event = super::webhooks::license_revocation(&id, None, now);
                Ok(store.set_revocation(&id, None, &[event], Some(&audit))?)
            }
        }
    })
    .await?;
    if !found {
        return Err(ApiError::NotFound(format!("no license {license_id:?} is known to this server")));
    }
    tracing::info!(license_id = %license_id, revoked, "license revocation changed");
    Ok(HttpResponse::Ok().json(Revocation { license_id, revoked }))
}

/// A page of instances.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct InstancePage {
    instances: Vec<store::InstanceRecord>,
    /// Where the next page starts (`cursor=`); absent on the last page.
    next_cursor: Option<String>,
}

/// The instances that checked in, most recent first.
#[utoipa::path(get, path = "/v1/admin/instances", tag = "instances", security(("admin_token" = [])),
    params(InstanceListQuery),
    responses((status = 200, body = InstancePage), AdminErrors))]
pub(super) async fn list_instances(
    _admin: Admin,
    state: web::Data<AppState>,
    web::Query(query): web::Query<InstanceListQuery>,
) -> Result<HttpResponse, ApiError> {
    let (limit, cursor) = page(query.limit, query.cursor.as_deref())?;
    let filter = store::InstanceFilter {
        license_id: query.license_id,
        status: query.status.map(|s| s.as_str().to_owned()),
    };
    let store = state.store.clone();
    let page =
        blocking(move || store.list_instances(&filter, limit, cursor.as_ref()).map_err(ApiError::from))
            .await?;
    let next_cursor = page.next.as_ref().map(store::Cursor::encode);
    Ok(HttpResponse::Ok().json(InstancePage { instances: page.items, next_cursor }))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct SummaryQuery {
    instance_id: String,
    /// Needed only when instances of this id exist under several licenses.
    #[serde(default)]
    license_id: Option<String>,
    /// The window, in hours up to now (1 to 2160).
    #[serde(default = "day")]
    #[param(default = 24)]
    hours: u32,
}

fn day() -> u32 {
    24
}

/// The longest window of an instance's telemetry summary: the raw tables' default retention.
const MAX_INSTANCE_SUMMARY_HOURS: u32 = 90 * 24;

/// One instance's telemetry over the last hours: usage, routes with merged percentiles,
/// error groups, sessions.
#[utoipa::path(get, path = "/v1/admin/telemetry/summary", tag = "instances", security(("admin_token" = [])),
    params(SummaryQuery),
    responses(
        (status = 200, body = store::TelemetrySummary),
        (status = 404, description = "No such instance", body = crate::protocol::ErrorBody),
        (status = 409, description = "Several licenses have an instance of that id", body = crate::protocol::ErrorBody),
        AdminErrors,
    ))]
pub(super) async fn telemetry_summary(
    _admin: Admin,
    state: web::Data<AppState>,
    web::Query(query): web::Query<SummaryQuery>,
) -> Result<HttpResponse, ApiError> {
    if !(1..=MAX_INSTANCE_SUMMARY_HOURS).contains(&query.hours) {
        return Err(ApiError::bad_request(
            "invalid_query",
            format!("hours must be from 1 to {MAX_INSTANCE_SUMMARY_HOURS}"),
        ));
    }
    let (store, now) = (state.store.clone(), (state.clock)());
    let summary = blocking(move || {
        let license_id = one_license_of(&store, &query.instance_id, query.license_id.as_deref())?;
        let since = now - Duration::hours(i64::from(query.hours));
        Ok(store.telemetry_summary(&license_id, &query.instance_id, since, now)?)
    })
    .await?;
    Ok(HttpResponse::Ok().json(summary))
}

/// The license whose instance `instance_id` a request means: the one named, or the only one
/// that has an instance of that id. Instance ids are scoped to their license, so two licenses
/// may each have one, and then the request must say which.
fn one_license_of(store: &store::Store, instance_id: &str, named: Option<&str>) -> Result<String, ApiError> {
    let licenses = store.licenses_of_instance(instance_id)?;
    let unknown = || ApiError::NotFound(format!("no instance {instance_id:?} is known to this server"));
    match named {
        Some(license) if licenses.iter().any(|l| l == license) => Ok(license.to_owned()),
        Some(_) => Err(unknown()),
        None => match licenses.as_slice() {
            [] => Err(unknown()),
            [only] => Ok(only.clone()),
            several => Err(ApiError::Conflict {
                code: "ambiguous_instance",
                message: format!(
                    "instance {instance_id:?} exists under {} licenses ({}): add license_id=...",
                    several.len(),
                    several.join(", ")
                ),
            }),
        },
    }
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct EraseQuery {
    /// Only that license's instance of this id; by default, every license's.
    #[serde(default)]
    license_id: Option<String>,
}

/// What an erasure removed.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct Erased {
    instance_id: String,
    /// Rows removed, by table.
    removed: BTreeMap<&'static str, usize>,
}

/// Erases an instance's telemetry (a data subject's request, a customer leaving).
#[utoipa::path(delete, path = "/v1/admin/instances/{instance_id}/telemetry", tag = "instances", security(("admin_token" = [])),
    params(("instance_id" = String, Path), EraseQuery),
    responses((status = 200, body = Erased), WriteErrors))]
pub(super) async fn erase_telemetry(
    _admin: FullAdmin,
    trail: Trail,
    state: web::Data<AppState>,
    path: web::Path<String>,
    web::Query(query): web::Query<EraseQuery>,
) -> Result<HttpResponse, ApiError> {
    let instance_id = path.into_inner();
    let store = state.store.clone();
    let (id, license) = (instance_id.clone(), query.license_id.clone());
    let audit = trail.audit(actix_web::http::StatusCode::OK);
    let removed = blocking(move || {
        store.erase_telemetry(&id, license.as_deref(), Some(&audit)).map_err(ApiError::from)
    })
    .await?;
    tracing::info!(instance_id = %instance_id, "instance telemetry erased");
    Ok(HttpResponse::Ok().json(Erased { instance_id, removed }))
}

/// A released instance.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct Released {
    license_id: String,
    instance_id: String,
    released: bool,
    /// Whether it held a seat until now.
    held_seat: bool,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct SessionsEnded {
    /// How many dashboard sessions there were.
    ended: usize,
}

/// Ends every dashboard session (sign out everywhere): every browser must sign in again.
#[utoipa::path(delete, path = "/v1/admin/sessions", tag = "dashboard", security(("admin_token" = [])),
    responses((status = 200, body = SessionsEnded), WriteErrors))]
pub(super) async fn end_sessions(
    _admin: FullAdmin,
    trail: Trail,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let (store, audit) = (state.store.clone(), trail.audit(actix_web::http::StatusCode::OK));
    let ended = blocking(move || store.end_all_sessions(Some(&audit)).map_err(ApiError::from)).await?;
    tracing::info!(ended, "every dashboard session ended");
    Ok(HttpResponse::Ok().json(SessionsEnded { ended }))
}

/// Frees an instance's seat at once: its row goes, so its next check-in is answered as a new
/// instance's. Its telemetry and check-in history stay.
#[utoipa::path(delete, path = "/v1/admin/licenses/{license_id}/instances/{instance_id}", tag = "instances",
    security(("admin_token" = [])),
    params(("license_id" = String, Path), ("instance_id" = String, Path)),
    responses(
        (status = 200, body = Released),
        (status = 404, description = "The license has no such instance", body = crate::protocol::ErrorBody),
        WriteErrors,
    ))]
pub(super) async fn release_instance(
    _admin: FullAdmin,
    trail: Trail,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (license_id, instance_id) = path.into_inner();
    let (store, now) = (state.store.clone(), (state.clock)());
    let (license, id) = (license_id.clone(), instance_id.clone());
    let event = super::webhooks::instance_released(&license, &id, "admin", now);
    let audit = trail.audit(actix_web::http::StatusCode::OK);
    let released = blocking(move || {
        store.release_instance(&license, &id, now, &[event], Some(&audit)).map_err(ApiError::from)
    })
    .await?;
    let Some(held_seat) = released else {
        return Err(ApiError::NotFound(format!("license {license_id:?} has no instance {instance_id:?}")));
    };
    tracing::info!(license_id = %license_id, instance_id = %instance_id, "instance released");
    Ok(HttpResponse::Ok().json(Released { license_id, instance_id, released: true, held_seat }))
}
