//! Webhooks: the events the server emits, the worker that delivers the outbox, and the admin
//! routes that register endpoints and list and redeliver deliveries.
//!
//! A delivery is a `POST` of the event's JSON to the endpoint with
//! `Licensor-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>" keyed by the
//! endpoint's secret>` and `Licensor-Event-Id`; a 2xx answer delivers it, anything else (or none
//! within 10 s) is retried with backoff. Endpoints are sent to side by side, and one that keeps
//! failing is paused for a while (see `circuit`). Delivery is at least once: a receiver deduplicates by the
//! event id. Invariant: events are enqueued in the transaction of what caused them (see
//! `store::webhooks`); the worker only sends what it claimed.

use crate::error_chain::Chain;
use actix_web::{web, HttpResponse};
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac as _};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::Sha256;
use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

use super::audit::Trail;
use super::auth::{Admin, FullAdmin};
use super::circuit::{self, Circuits, Transition};
use super::error::ApiError;
use super::{blocking, AppState};
use crate::license::LicensePayload;
use crate::store::{self, NewEvent, Store};
use crate::time::Clock;

/// `license.issued` or `license.renewed`: the license as its new key says.
pub fn license_keyed(event_type: &'static str, payload: &LicensePayload, now: DateTime<Utc>) -> NewEvent {
    NewEvent::new(
        event_type,
        json!({
            "license_id": payload.license_id,
            "licensee": payload.licensee,
            "tier": payload.tier,
            "seats": payload.seats,
            "features": payload.features,
            "expires_at": payload.expires_at.as_ref().map(crate::time::format),
        }),
        now,
        None,
    )
}

/// `license.revoked` (with its reason) or `license.reinstated`.
pub fn license_revocation(license_id: &str, revoked: Option<Option<&str>>, now: DateTime<Utc>) -> NewEvent {
    match revoked {
        Some(reason) => {
            NewEvent::new("license.revoked", json!({ "license_id": license_id, "reason": reason }), now, None)
        }
        None => NewEvent::new("license.reinstated", json!({ "license_id": license_id }), now, None),
    }
}

/// `instance.released`: by the vendor (`admin`) or by the deployment itself (`self`).
pub fn instance_released(license_id: &str, instance_id: &str, by: &str, now: DateTime<Utc>) -> NewEvent {
    NewEvent::new(
        "instance.released",
        json!({ "license_id": license_id, "instance_id": instance_id, "by": by }),
        now,
        None,
    )
}

/// How often the worker looks for due deliveries.
const TICK: std::time::Duration = std::time::Duration::from_millis(250);
/// How often, by the server's clock, it looks for leases that lapsed (`checkin.overdue`).
const OVERDUE_EVERY: chrono::Duration = chrono::Duration::seconds(60);

/// The delivery worker: claims due deliveries and sends them, and notices lapsed leases, until
/// the returned task is aborted. Deliveries are sent side by side, at most
/// [`circuit::IN_FLIGHT`] at once and [`circuit::PER_ENDPOINT`] to one endpoint, and an
/// endpoint that keeps failing is paused (see [`circuit`]): one slow receiver delays no other.
pub fn start_worker(
    store: Store,
    clock: Clock,
    metrics: Arc<crate::metrics::Metrics>,
) -> actix_web::rt::task::JoinHandle<()> {
    actix_web::rt::spawn(async move {
        let client = match reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("licensor-webhooks/", env!("CARGO_PKG_VERSION")))
            .build()
        {
            Ok(client) => client,
            Err(e) => {
                tracing::error!(error = %Chain(&e), "webhooks: no HTTP client; nothing will be delivered");
                return;
            }
        };
        // The sends run as tasks on this worker's thread, so they share the circuits without a
        // lock.
        let circuits = Rc::new(RefCell::new(Circuits::default()));
        let mut tick = actix_web::rt::time::interval(TICK);
        let mut last_overdue_scan: Option<DateTime<Utc>> = None;
        loop {
            tick.tick().await;
            let now = clock();
            if last_overdue_scan.is_none_or(|t| now - t >= OVERDUE_EVERY) {
                last_overdue_scan = Some(now);
                let store = store.clone();
                match actix_web::rt::task::spawn_blocking(move || scan_overdue(&store, now)).await {
                    Ok(Err(e)) => tracing::warn!(error = %Chain(&e), "webhooks: the overdue scan failed"),
                    Err(e) => tracing::warn!(error = %Chain(&e), "webhooks: the overdue scan stopped"),
                    Ok(Ok(_)) => {
                        metrics.webhook_scans.inc();
                    }
                }
            }
            let (free, limits) = {
                let c = circuits.borrow();
                (c.free(), c.limits(now))
            };
            if free == 0 {
                continue;
            }
            let claiming = store.clone();
            let claimed = match actix_web::rt::task::spawn_blocking(move || {
                claiming
                    .claim_deliveries(now, free, |e| limits.get(e).copied().unwrap_or(circuit::PER_ENDPOINT))
            })
            .await
            {
                Ok(Ok(claimed)) => claimed,
                Ok(Err(e)) => {
                    tracing::warn!(error = %Chain(&e), "webhooks: claiming deliveries failed");
                    continue;
                }
                Err(_) => continue,
            };
            for delivery in claimed {
                circuits.borrow_mut().sent(&delivery.endpoint_id);
                let (client, store, clock, metrics, circuits) =
                    (client.clone(), store.clone(), clock.clone(), metrics.clone(), circuits.clone());
                actix_web::rt::spawn(async move {
                    deliver(&client, delivery, &store, &clock, &metrics, &circuits).await;
                });
            }
        }
    })
}

/// Sends one claimed delivery, records the attempt, and tells the endpoint's circuit.
async fn deliver(
    client: &reqwest::Client,
    delivery: store::Claimed,
    store: &Store,
    clock: &Clock,
    metrics: &crate::metrics::Metrics,
    circuits: &RefCell<Circuits>,
) {
    let outcome = send(client, &delivery, clock()).await;
    let label = if outcome.is_ok() { "delivered" } else { "failed" };
    metrics.webhook_deliveries.get_or_create(&[("outcome", label)]).inc();
    if let Err((_, error)) = &outcome {
        tracing::info!(event_id = %delivery.event_id, endpoint = %delivery.endpoint_id, attempt = delivery.attempts + 1, error = %error, "webhook delivery failed; will retry");
    }
    // The circuit learns the outcome before the attempt is recorded, so that whoever reads the
    // record sees the circuit as it left it.
    let now = clock();
    match circuits.borrow_mut().finished(&delivery.endpoint_id, outcome.is_ok(), now) {
        Some(Transition::Opened(until)) => {
            metrics.webhook_circuits_opened.inc();
            tracing::warn!(endpoint = %delivery.endpoint_id, until = %crate::time::format(&until), "webhook endpoint paused: its deliveries keep failing");
        }
        Some(Transition::Closed) => {
            tracing::info!(endpoint = %delivery.endpoint_id, "webhook endpoint resumed")
        }
        None => {}
    }
    let recording = store.clone();
    let recorded =
        actix_web::rt::task::spawn_blocking(move || recording.record_attempt(&delivery, outcome, now)).await;
    if let Ok(Err(e)) = recorded {
        tracing::warn!(error = %Chain(&e), "webhooks: recording a delivery attempt failed");
    }
}

/// `t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">`.
pub fn signature(secret: &str, timestamp: i64, body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes a key of any length");
    mac.update(format!("{timestamp}.{body}").as_bytes());
    format!("t={timestamp},v1={}", hex::encode(mac.finalize().into_bytes()))
}

async fn send(
    client: &reqwest::Client,
    d: &store::Claimed,
    now: DateTime<Utc>,
) -> Result<u16, (Option<u16>, String)> {
    let response = client
        .post(&d.url)
        .header("content-type", "application/json")
        .header("licensor-event-id", &d.event_id)
        .header("licensor-signature", signature(&d.secret, now.timestamp(), &d.payload))
        .body(d.payload.clone())
        .send()
        .await
        .map_err(|e| (None, format!("no answer: {e}")))?;
    let status = response.status().as_u16();
    if response.status().is_success() {
        Ok(status)
    } else {
        Err((Some(status), format!("answered {status}")))
    }
}

/// Enqueues what the clock alone reveals: `checkin.overdue` for each instance whose lease
/// lapsed within the last day, once per lapse; `install.seat_freed` for each install whose
/// seat so ended (none of its processes holds one), once per lapse; and `license.never_checked_in` for each license
/// issued or registered here that no deployment checked in for within one check-in interval,
/// once per license (the event ids are derived from what they report).
fn scan_overdue(store: &Store, now: DateTime<Utc>) -> Result<usize, store::StoreError> {
    let mut enqueued = 0;
    if store.anyone_subscribes("license.never_checked_in")? {
        let events: Vec<NewEvent> = store
            .silent_licenses(now)?
            .into_iter()
            .map(|l| {
                NewEvent::new(
                    "license.never_checked_in",
                    json!({
                        "license_id": l.license_id,
                        "licensee": l.licensee,
                        "tier": l.tier,
                        "known_since": crate::time::format(&l.known_since),
                        "first_check_in_due_at": crate::time::format(&l.due_at),
                    }),
                    now,
                    Some(format!("evt_silent_{}", l.license_id)),
                )
            })
            .collect();
        enqueued += store.enqueue_events(&events)?;
    }
    if store.anyone_subscribes("install.seat_freed")? {
        let events: Vec<NewEvent> = store
            .lapsed_installs(now)?
            .into_iter()
            .map(|l| {
                let key = format!("{}/{}/{}", l.license_id, l.install_id, l.seat_until.and_utc().timestamp());
                let id = format!(
                    "evt_freed_{}",
                    &hex::encode(<Sha256 as sha2::Digest>::digest(key.as_bytes()))[..32]
                );
                NewEvent::new(
                    "install.seat_freed",
                    json!({
                        "license_id": l.license_id,
                        "install_id": l.install_id,
                        "seat_freed_at": crate::time::format(&l.seat_until.and_utc()),
                        "last_check_in_at": crate::time::format(&l.last_check_in_at.and_utc()),
                        "processes": l.processes,
                    }),
                    now,
                    Some(id),
                )
            })
            .collect();
        enqueued += store.enqueue_events(&events)?;
    }
    if !store.anyone_subscribes("checkin.overdue")? {
        return Ok(enqueued);
    }
    let events: Vec<NewEvent> = store
        .lapsed_instances(now)?
        .into_iter()
        .map(|(license_id, instance_id, until, last)| {
            let key = format!("{license_id}/{instance_id}/{}", until.and_utc().timestamp());
            let id = format!(
                "evt_overdue_{}",
                &hex::encode(<Sha256 as sha2::Digest>::digest(key.as_bytes()))[..32]
            );
            NewEvent::new(
                "checkin.overdue",
                json!({
                    "license_id": license_id,
                    "instance_id": instance_id,
                    "lease_ended_at": crate::time::format(&until.and_utc()),
                    "last_check_in_at": crate::time::format(&last.and_utc()),
                }),
                now,
                Some(id),
            )
        })
        .collect();
    Ok(enqueued + store.enqueue_events(&events)?)
}

/// The body of `POST /v1/admin/webhooks`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct NewEndpoint {
    /// `https://...` (or `http://`), where the events are POSTed.
    url: String,
    /// The event types to receive: license.issued, license.renewed, license.revoked,
    /// license.reinstated, instance.activated, instance.released, seat_limit.reached,
    /// seat_overage.started, checkin.overdue, install.seat_freed, license.never_checked_in.
    events: Vec<String>,
}

/// A registered endpoint, with its secret (shown this once).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct CreatedEndpoint {
    #[serde(flatten)]
    endpoint: store::Endpoint,
    /// Signs every delivery; keep it, it is never shown again.
    secret: String,
}

/// Registers an endpoint for some event types.
#[utoipa::path(post, path = "/v1/admin/webhooks", tag = "webhooks", security(("admin_token" = [])),
    request_body(content = NewEndpoint, content_type = "application/json"),
    responses(
        (status = 201, body = CreatedEndpoint),
        (status = 413, body = crate::protocol::ErrorBody),
        (status = 415, body = crate::protocol::ErrorBody),
        super::error::WriteErrors,
    ))]
pub(super) async fn create(
    _admin: FullAdmin,
    trail: Trail,
    state: web::Data<AppState>,
    super::extract::Json(body): super::extract::Json<NewEndpoint>,
) -> Result<HttpResponse, ApiError> {
    let url = reqwest::Url::parse(&body.url)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some_and(|h| !h.is_empty()))
        .ok_or_else(|| {
            ApiError::bad_request("invalid_request", format!("url: {:?} is not an http(s) URL", body.url))
        })?;
    if body.events.is_empty() {
        return Err(ApiError::bad_request("invalid_request", "events: name at least one event type"));
    }
    if let Some(unknown) = body.events.iter().find(|e| !store::EVENT_TYPES.contains(&e.as_str())) {
        return Err(ApiError::bad_request(
            "invalid_request",
            format!("events: {unknown:?} is not an event type ({})", store::EVENT_TYPES.join(", ")),
        ));
    }
    let mut events = body.events.clone();
    events.sort();
    events.dedup();
    use base64::Engine as _;
    let secret = format!(
        "whsec_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>())
    );
    let row = store::EndpointRow {
        id: format!("we_{}", uuid::Uuid::new_v4().simple()),
        url: url.to_string(),
        events: events.join(","),
        secret: secret.clone(),
        created_at: store::naive((state.clock)()),
    };
    let (store, audit) = (state.store.clone(), trail.audit(actix_web::http::StatusCode::CREATED));
    let created = row.clone();
    blocking(move || Ok(store.create_endpoint(&created, Some(&audit))?)).await?;
    tracing::info!(endpoint = %row.id, "webhook endpoint registered");
    Ok(HttpResponse::Created().json(CreatedEndpoint { endpoint: row.into(), secret }))
}

/// The registered endpoints.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct EndpointList {
    endpoints: Vec<store::Endpoint>,
}

/// The registered endpoints (without their secrets). A read-only token sees each URL's
/// user-info and query values masked: receivers often take their credentials there.
#[utoipa::path(get, path = "/v1/admin/webhooks", tag = "webhooks", security(("admin_token" = [])),
    responses((status = 200, body = EndpointList), super::error::AdminErrors))]
pub(super) async fn list(admin: Admin, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let store = state.store.clone();
    let mut endpoints = blocking(move || Ok(store.endpoints()?)).await?;
    if admin.0.scope != super::auth::Scope::Full {
        for endpoint in &mut endpoints {
            endpoint.url = masked_url(&endpoint.url);
        }
    }
    Ok(HttpResponse::Ok().json(EndpointList { endpoints }))
}

/// A URL with its user-info and every query value replaced by `***`, for those who may read
/// the endpoints but not hold their credentials.
fn masked_url(url: &str) -> String {
    let Ok(mut parsed) = reqwest::Url::parse(url) else { return "***".to_owned() };
    if !parsed.username().is_empty() {
        let _ = parsed.set_username("***");
    }
    if parsed.password().is_some() {
        let _ = parsed.set_password(Some("***"));
    }
    if parsed.query().is_some() {
        let names: Vec<String> = parsed.query_pairs().map(|(name, _)| name.into_owned()).collect();
        parsed.query_pairs_mut().clear().extend_pairs(names.iter().map(|n| (n.as_str(), "***")));
    }
    if parsed.fragment().is_some() {
        parsed.set_fragment(Some("***"));
    }
    parsed.to_string()
}

/// Removes an endpoint and its pending deliveries.
#[utoipa::path(delete, path = "/v1/admin/webhooks/{endpoint_id}", tag = "webhooks", security(("admin_token" = [])),
    params(("endpoint_id" = String, Path)),
    responses(
        (status = 204, description = "Removed"),
        (status = 404, description = "No such endpoint", body = crate::protocol::ErrorBody),
        super::error::WriteErrors,
    ))]
pub(super) async fn delete(
    _admin: FullAdmin,
    trail: Trail,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = path.into_inner();
    let (store, audit) = (state.store.clone(), trail.audit(actix_web::http::StatusCode::NO_CONTENT));
    let lookup = id.clone();
    if !blocking(move || Ok(store.delete_endpoint(&lookup, Some(&audit))?)).await? {
        return Err(ApiError::NotFound(format!("no webhook endpoint {id:?}")));
    }
    Ok(HttpResponse::NoContent().finish())
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct DeliveriesQuery {
    /// 1 to 1000 (default 100).
    #[serde(default)]
    limit: Option<usize>,
}

/// An endpoint's deliveries.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct DeliveryList {
    deliveries: Vec<store::Delivery>,
}

/// An endpoint's deliveries, newest first: attempts, outcome, and the body sent.
#[utoipa::path(get, path = "/v1/admin/webhooks/{endpoint_id}/deliveries", tag = "webhooks", security(("admin_token" = [])),
    params(("endpoint_id" = String, Path), DeliveriesQuery),
    responses((status = 200, body = DeliveryList), super::error::AdminErrors))]
pub(super) async fn deliveries(
    _admin: Admin,
    state: web::Data<AppState>,
    path: web::Path<String>,
    web::Query(query): web::Query<DeliveriesQuery>,
) -> Result<HttpResponse, ApiError> {
    let limit = super::extract::page_size(query.limit)?;
    let (store, id) = (state.store.clone(), path.into_inner());
    let deliveries = blocking(move || Ok(store.deliveries(&id, limit)?)).await?;
    Ok(HttpResponse::Ok().json(DeliveryList { deliveries }))
}

/// Sends a delivery again now (delivered, given up or pending alike), with its event id.
#[utoipa::path(post, path = "/v1/admin/webhooks/{endpoint_id}/deliveries/{event_id}/redeliver", tag = "webhooks",
    security(("admin_token" = [])),
    params(("endpoint_id" = String, Path), ("event_id" = String, Path)),
    responses(
        (status = 202, description = "Due now; the worker sends it within a second"),
        (status = 404, description = "No such delivery", body = crate::protocol::ErrorBody),
        super::error::WriteErrors,
    ))]
pub(super) async fn redeliver(
    _admin: FullAdmin,
    trail: Trail,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (endpoint, event) = path.into_inner();
    let (store, now) = (state.store.clone(), (state.clock)());
    let (e, v) = (endpoint.clone(), event.clone());
    let audit = trail.audit(actix_web::http::StatusCode::ACCEPTED);
    if !blocking(move || Ok(store.redeliver(&e, &v, now, Some(&audit))?)).await? {
        return Err(ApiError::NotFound(format!("no delivery of {event:?} to {endpoint:?}")));
    }
    Ok(HttpResponse::Accepted().finish())
}
