//! The license holder's own view of its seats (`licensor installs`): the license's installs
//! and their processes, and the release of one, proven by the license key and a current lease
//! (see `checkin::holder`). A release is answered with a signed receipt and recorded in the
//! vendor's audit log, in the same transaction, as the license's holder's action.

use actix_web::{web, HttpMessage as _, HttpRequest, HttpResponse};
use std::collections::{BTreeMap, BTreeSet};

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
    let processes = blocking(move || store.license_processes(&license_id).map_err(ApiError::from)).await?;
    let installs = group(processes, &request.instance_id, store::naive(request.now));
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

/// Groups a license's processes by install: installs holding a place first, then by their
/// newest check-in.
fn group(processes: Vec<InstanceRow>, asking: &str, now: chrono::NaiveDateTime) -> Vec<InstallListing> {
    let mut by_install: BTreeMap<String, Vec<InstanceRow>> = BTreeMap::new();
    for p in processes {
        by_install.entry(p.install().to_owned()).or_default().push(p);
    }
    let mut installs: Vec<(chrono::NaiveDateTime, InstallListing)> = by_install
        .into_iter()
        .map(|(install_id, mut rows)| {
            rows.sort_by(|a, b| (b.last_check_in_at, &b.id).cmp(&(a.last_check_in_at, &a.id)));
            let until = rows.iter().filter_map(|r| r.seat_until).max();
            let machines: BTreeSet<&str> = rows.iter().filter_map(|r| r.machine.as_deref()).collect();
            let listing = InstallListing {
                install_id,
                source: rows[0].install_source.clone(),
                loopback: rows[0].is_loopback(),
                holds_place: until.is_some_and(|u| u > now),
                place_until: until.map(store::utc),
                machines: u32::try_from(machines.len()).unwrap_or(u32::MAX),
                processes: rows
                    .iter()
                    .map(|r| ProcessListing {
                        instance_id: r.id.clone(),
                        software_version: r.software_version.clone(),
                        first_seen_at: store::utc(r.first_seen_at),
                        last_check_in_at: store::utc(r.last_check_in_at),
                        last_status: r.last_status.clone(),
                        asking: r.id == asking,
                    })
                    .collect(),
            };
            (rows[0].last_check_in_at, listing)
        })
        .collect();
    installs.sort_by(|(a_at, a), (b_at, b)| {
        (b.holds_place, b_at, &b.install_id).cmp(&(a.holds_place, a_at, &a.install_id))
    });
    installs.into_iter().map(|(_, listing)| listing).collect()
}
