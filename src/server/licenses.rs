//! The vendor's handling of licenses beside their signed keys: registering keys issued offline
//! before any deployment runs them, and the terms the server keeps per license (the
//! private-network exemption, developers' machines, processes per install), and the keys its
//! air-gapped installs' usage reports are pinned to.

use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};

use super::audit::Trail;
use super::auth::{Admin, FullAdmin};
use super::error::ApiError;
use super::error::{AdminErrors, WriteErrors};
use super::extract::Json;
use super::{blocking, AppState};
use crate::license::{LicensePayload, Tier};
use crate::store;

/// `POST /v1/admin/licenses/register`: keys issued offline (`licensor issue`).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RegisterBody {
    /// 1 to 1,000 `LIC1.` keys.
    license_keys: Vec<String>,
}

/// What registering one key did.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct RegisteredLicense {
    license_id: uuid::Uuid,
    licensee: String,
    tier: Tier,
    outcome: store::Registration,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct RegisteredLicenses {
    /// In the order of the keys given.
    licenses: Vec<RegisteredLicense>,
}

/// The most keys one registration takes.
const MAX_REGISTER: usize = 1_000;

/// Makes license keys issued offline known before any deployment checks in with them, so that
/// they can be listed, revoked, renewed and watched (`license.never_checked_in`) from the
/// start. Every key must verify under the server's ring; if one does not, none is registered.
#[utoipa::path(post, path = "/v1/admin/licenses/register", tag = "licenses", security(("admin_token" = [])),
    request_body(content = RegisterBody, content_type = "application/json"),
    responses(
        (status = 200, description = "Each key's outcome, in order", body = RegisteredLicenses),
        (status = 400, description = "A key that does not read or verify (named by its place), or no keys, or too many", body = crate::protocol::ErrorBody),
        (status = 413, body = crate::protocol::ErrorBody),
        (status = 415, body = crate::protocol::ErrorBody),
        WriteErrors,
    ))]
pub(super) async fn register_licenses(
    _admin: FullAdmin,
    trail: Trail,
    state: web::Data<AppState>,
    Json(body): Json<RegisterBody>,
) -> Result<HttpResponse, ApiError> {
    if body.license_keys.is_empty() || body.license_keys.len() > MAX_REGISTER {
        return Err(ApiError::bad_request(
            "invalid_request",
            format!("license_keys must hold 1 to {MAX_REGISTER} keys"),
        ));
    }
    let now = (state.clock)();
    let mut rows = Vec::with_capacity(body.license_keys.len());
    let mut payloads = Vec::with_capacity(body.license_keys.len());
    for (i, key) in body.license_keys.iter().enumerate() {
        let key = key.trim();
        let payload = crate::token::decode::<LicensePayload>(key)
            .and_then(|d| d.verify_signature(&state.service.ring).map(|()| d.claims))
            .map_err(|e| {
                ApiError::bad_request(
                    "invalid_license",
                    format!("license_keys[{i}] is not a license key this server trusts: {e}; nothing was registered"),
                )
            })?;
        rows.push(store::LicenseRow::new(&payload, Some(key), now));
        payloads.push(payload);
    }
    let (store, audit) = (state.store.clone(), trail.audit(actix_web::http::StatusCode::OK));
    let outcomes = blocking(move || Ok(store.register_licenses(&rows, Some(&audit))?)).await?;
    let licenses = payloads
        .into_iter()
        .zip(outcomes)
        .map(|(p, outcome)| RegisteredLicense {
            license_id: p.license_id,
            licensee: p.licensee,
            tier: p.tier,
            outcome,
        })
        .collect();
    Ok(HttpResponse::Ok().json(RegisteredLicenses { licenses }))
}

/// What `PATCH /v1/admin/licenses/{license_id}/terms` sets; at least one field. A term given
/// as `null` returns to the server's default.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct TermsBody {
    /// Whether this license's deployments on private networks (private and link-local
    /// addresses, `*.local` names) may check in without telemetry.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<bool>)]
    private_exemption: Option<Option<bool>>,
    /// How many loopback instances (developers' machines, holding no seat) may hold a place at
    /// once: 0 to 1,000.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<u32>)]
    max_loopback: Option<Option<u32>>,
    /// How many processes of one install may share its seat at once: 1 to 10,000; past it the
    /// newest wins and the least recently seen is released (`replaced`).
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<u32>)]
    max_processes: Option<Option<u32>>,
    /// How many distinct machines the processes of one install may run on at once: 1 to
    /// 10,000 (no limit by default). A process on a further machine is refused
    /// (`seat_limit_exceeded`): one install id shared by a whole fleet is not one install.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<u32>)]
    max_machines: Option<Option<u32>>,
}

/// A field that is present (its value, `null` included) as `Some`, so that an absent term is
/// left alone and a `null` one reset; serde has no such mode built in.
fn present<'de, T: Deserialize<'de>, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// A license's terms: as set (`null`: the server's default) and in force.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct LicenseTermsView {
    license_id: String,
    private_exemption: Option<bool>,
    max_loopback: Option<i32>,
    max_processes: Option<i32>,
    max_machines: Option<i32>,
    /// What applies now, defaults included.
    effective_private_exemption: bool,
    effective_max_loopback: i64,
    effective_max_processes: usize,
    /// `null`: no limit.
    effective_max_machines: Option<usize>,
    /// When the license first went over its seats (its soft overage's start), if it did.
    #[schema(value_type = Option<String>)]
    overage_started_at: Option<String>,
}

/// Sets what the vendor decides for one license beside its signed key: whether its
/// private-network deployments may leave telemetry out, and how many developers' machines it
/// may run at once. Takes effect at each instance's next check-in.
#[utoipa::path(patch, path = "/v1/admin/licenses/{license_id}/terms", tag = "licenses", security(("admin_token" = [])),
    params(("license_id" = String, Path, description = "The license's id (a UUID)")),
    request_body(content = TermsBody, content_type = "application/json"),
    responses(
        (status = 200, description = "The terms as set and in force", body = LicenseTermsView),
        (status = 404, description = "No such license", body = crate::protocol::ErrorBody),
        (status = 413, body = crate::protocol::ErrorBody),
        (status = 415, body = crate::protocol::ErrorBody),
        WriteErrors,
    ))]
pub(super) async fn set_license_terms(
    _admin: FullAdmin,
    trail: Trail,
    state: web::Data<AppState>,
    path: web::Path<String>,
    Json(body): Json<TermsBody>,
) -> Result<HttpResponse, ApiError> {
    if body.private_exemption.is_none()
        && body.max_loopback.is_none()
        && body.max_processes.is_none()
        && body.max_machines.is_none()
    {
        return Err(ApiError::bad_request(
            "invalid_request",
            "give what to set: private_exemption, max_loopback, max_processes, max_machines",
        ));
    }
    for (name, value) in [("max_processes", body.max_processes), ("max_machines", body.max_machines)] {
        if let Some(Some(n)) = value {
            if !(1..=10_000).contains(&n) {
                return Err(ApiError::bad_request(
                    "invalid_request",
                    format!("{name} must be from 1 to 10000"),
                ));
            }
        }
    }
    if let Some(Some(n)) = body.max_loopback {
        if n > 1_000 {
            return Err(ApiError::bad_request("invalid_request", "max_loopback must be from 0 to 1000"));
        }
    }
    let license_id = path.into_inner();
    let (store, rules) = (state.store.clone(), state.service.rules.clone());
    let id = license_id.clone();
    // Each bound was checked above, so it fits an i32.
    let as_i32 = |v: Option<Option<u32>>| v.map(|n| n.map(|n| n as i32));
    let change = store::TermsChange {
        private_exemption: body.private_exemption,
        max_loopback: as_i32(body.max_loopback),
        max_processes: as_i32(body.max_processes),
        max_machines: as_i32(body.max_machines),
    };
    let audit = trail.audit(actix_web::http::StatusCode::OK);
    let (row, terms) = blocking(move || Ok(store.set_license_terms(&id, &change, Some(&audit))?))
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no license {license_id:?} is known to this server")))?;
    // A license only revoked by id has no tier yet: the Community default stands until it is seen.
    let tier = row.tier.parse::<Tier>().unwrap_or(Tier::Community);
    let effective = crate::checkin::Terms::of(&rules, tier, Some(&terms));
    Ok(HttpResponse::Ok().json(LicenseTermsView {
        license_id: row.id,
        private_exemption: terms.private_exemption,
        max_loopback: terms.max_loopback,
        max_processes: terms.max_processes,
        max_machines: terms.max_machines,
        effective_private_exemption: effective.private_exemption,
        effective_max_loopback: effective.max_loopback,
        effective_max_processes: effective.max_processes,
        effective_max_machines: effective.max_machines,
        overage_started_at: terms.overage_started_at.map(|t| crate::time::format(&store::utc(t))),
    }))
}

/// A license's pinned install keys.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct InstallKeys {
    /// By instance id.
    install_keys: Vec<store::InstallKeyRecord>,
}

/// The keys that the usage reports of a license's air-gapped installs must be signed with
/// (each pinned by the install's first report imported), and where each chain stands.
#[utoipa::path(get, path = "/v1/admin/licenses/{license_id}/install-keys", tag = "licenses", security(("admin_token" = [])),
    params(("license_id" = String, Path, description = "The license's id (a UUID)")),
    responses((status = 200, body = InstallKeys), AdminErrors))]
pub(super) async fn install_keys(
    _admin: Admin,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let (store, license_id) = (state.store.clone(), path.into_inner());
    let install_keys = blocking(move || Ok(store.install_keys_of(&license_id)?)).await?;
    Ok(HttpResponse::Ok().json(InstallKeys { install_keys }))
}

/// Resets an install's pinned key: for a pin a forged first report took, or an install that
/// lost its key. Its next report is taken at its own sequence and pins its key again; the
/// reports imported so far stay counted.
#[utoipa::path(post, path = "/v1/admin/licenses/{license_id}/install-keys/{instance_id}/reset", tag = "licenses",
    security(("admin_token" = [])),
    params(("license_id" = String, Path), ("instance_id" = String, Path)),
    responses(
        (status = 200, description = "The pin, reset", body = store::InstallKeyRecord),
        (status = 404, description = "The install has no pinned key", body = crate::protocol::ErrorBody),
        WriteErrors,
    ))]
pub(super) async fn reset_install_key(
    _admin: FullAdmin,
    trail: Trail,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (license_id, instance_id) = path.into_inner();
    let (store, now, audit) =
        (state.store.clone(), (state.clock)(), trail.audit(actix_web::http::StatusCode::OK));
    let (l, i) = (license_id.clone(), instance_id.clone());
    let reset = blocking(move || Ok(store.reset_install_key(&l, &i, now, Some(&audit))?)).await?;
    let Some(reset) = reset else {
        return Err(ApiError::NotFound(format!(
            "install {instance_id:?} of license {license_id:?} has no pinned key (no usage report of it was imported)"
        )));
    };
    tracing::info!(license_id = %license_id, instance_id = %instance_id, "install key pin reset");
    Ok(HttpResponse::Ok().json(reset))
}
