//! The license holder's own view of its seats (`licensor installs`): the license's installs
//! and their processes, and the release of one, proven by the license key and a current lease
//! (see `checkin::holder`). A release is answered with a signed receipt and recorded in the
//! vendor's audit log, in the same transaction, as the license's holder's action.

use actix_web::{web, HttpMessage as _, HttpRequest, HttpResponse};
use chrono::{DateTime, Utc};
use std::collections::HashMap;

use super::error::ApiError;
use super::extract::{AddressAdmitted, JsonBytes};
use super::request_log::RequestId;
use super::{blocking, AppState};
use crate::protocol::{InstallListing, InstallReleaseResponse, InstallsResponse, ProcessListing};
use crate::store::{self, InstanceRow};

/// The license's installs, each with its processes, as its holder sees them.
#[utoipa::path(post, path = "/v1/installs/list", tag = "check-ins",
    request_body(content = crate::protocol::InstallsRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "The license's installs and their processes", body = InstallsResponse),
        (status = 400, description = "The request, key or lease is not valid, or the lease is not current", body = crate::protocol::ErrorBody),
        (status = 408, body = crate::protocol::ErrorBody),
        (status = 413, body = crate::protocol::ErrorBody),
        (status = 415, body = crate::protocol::ErrorBody),
        (status = 429, body = crate::protocol::ErrorBody),
        (status = 503, body = crate::protocol::ErrorBody),
    ))]
pub(super) async fn list(
    _admitted: AddressAdmitted,
    state: web::Data<AppState>,
    JsonBytes(body): JsonBytes,
) -> Result<HttpResponse, ApiError> {
    let request = state.service.prepare_holder_request(&body, (state.clock)(), false)?;
    let store = state.store.clone();
    let license_id = request.license.license_id.to_string();
    let filter = store::InstanceFilter { license_id: Some(license_id), status: None };
    let processes = blocking(move || {
        Ok(store.list_instances(&filter, MAX_PROCESSES, None).map_err(ApiError::from)?.items)
    })
    .await?;
    let installs = listing(&processes, &request.instance_id, request.now);
    let seats_in_use = installs.iter().filter(|i| i.holds_place && !i.loopback).count();
    Ok(HttpResponse::Ok().json(InstallsResponse {
        license_id: request.license.license_id,
        seats: request.license.seats,
        seats_in_use: u32::try_from(seats_in_use).unwrap_or(u32::MAX),
        installs,
        server_time: request.now,
    }))
}

/// Releases one of the license's installs (every process of it), or one process, at once: its
/// seat is free until one of them checks in again. Answered with a signed receipt, also for an
/// id the server does not know (a retry after a lost answer), so that a retry is harmless.
#[utoipa::path(post, path = "/v1/installs/release", tag = "check-ins",
    request_body(content = crate::protocol::InstallsRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "A receipt signed by the server", body = InstallReleaseResponse),
        (status = 400, description = "The request, key or lease is not valid, or the lease is not current", body = crate::protocol::ErrorBody),
        (status = 408, body = crate::protocol::ErrorBody),
        (status = 413, body = crate::protocol::ErrorBody),
        (status = 415, body = crate::protocol::ErrorBody),
        (status = 429, body = crate::protocol::ErrorBody),
        (status = 503, body = crate::protocol::ErrorBody),
    ))]
pub(super) async fn release(
    _admitted: AddressAdmitted,
    req: HttpRequest,
    state: web::Data<AppState>,
    JsonBytes(body): JsonBytes,
) -> Result<HttpResponse, ApiError> {
    let request = state.service.prepare_holder_request(&body, (state.clock)(), true)?;
    let target = request.release.clone().unwrap_or_default();
    let license_id = request.license.license_id.to_string();
    // The holder is named by its license, never by anything it sent: the record is the vendor's.
    let audit = store::NewAuditEntry {
        at: store::naive(request.now),
        actor: format!("license holder {license_id}"),
        action: "POST /v1/installs/release".to_owned(),
        target: format!("license_id={license_id}&release={target}"),
        status: 200,
        request_id: req.extensions().get::<RequestId>().map(|r| r.0.clone()).unwrap_or_default(),
    };
    let store = state.store.clone();
    let now = request.now;
    let released = blocking(move || {
        let events = |processes: &[InstanceRow]| {
            processes
                .iter()
                .map(|p| {
                    store::NewEvent::new(
                        "instance.released",
                        serde_json::json!({
                            "license_id": p.license_id, "instance_id": p.id, "install_id": p.install(),
                            "by": "license_holder",
                        }),
                        now,
                        None,
                    )
                })
                .collect()
        };
        store.release_install(&license_id, &target, now, events, &audit).map_err(ApiError::from)
    })
    .await?;
    tracing::info!(
        license_id = %request.license.license_id,
        processes = released.processes.len(),
        seat_freed = released.seat_freed,
        "the license's holder released an install"
    );
    Ok(HttpResponse::Ok().json(InstallReleaseResponse {
        receipt: state.service.release_receipt(&request),
        processes: u32::try_from(released.processes.len()).unwrap_or(u32::MAX),
        seat_freed: released.seat_freed,
    }))
}

/// The most processes a listing shows, as the vendor's license detail does.
const MAX_PROCESSES: usize = 1_000;

/// A license's processes (the most recently seen first) under their installs, as the vendor's
/// views group them: installs holding a place first, then by their newest check-in.
fn listing(processes: &[store::InstanceRecord], asking: &str, now: DateTime<Utc>) -> Vec<InstallListing> {
    let by_id: HashMap<&str, &store::InstanceRecord> =
        processes.iter().map(|p| (p.instance_id.as_str(), p)).collect();
    let mut installs: Vec<InstallListing> = store::group_installs(processes)
        .into_iter()
        .map(|g| InstallListing {
            holds_place: g.seat_until.is_some_and(|u| u > now),
            place_until: g.seat_until,
            machines: u32::try_from(g.machines).unwrap_or(u32::MAX),
            loopback: g.loopback,
            source: g.install_source,
            processes: g
                .processes
                .iter()
                .map(|id| {
                    let r = by_id[id.as_str()];
                    ProcessListing {
                        instance_id: r.instance_id.clone(),
                        software_version: r.software_version.clone(),
                        first_seen_at: r.first_seen_at,
                        last_check_in_at: r.last_check_in_at,
                        last_status: r.last_status.clone(),
                        asking: r.instance_id == asking,
                    }
                })
                .collect(),
            install_id: g.install_id,
        })
        .collect();
    // Stable: within each kind, the newest check-in first, as grouped.
    installs.sort_by_key(|i| !i.holds_place);
    installs
}
