//! The audit log's recorder and reader: every admin request that may change something (any
//! method but GET, HEAD and OPTIONS, under `/v1/admin` and the dashboard's `/admin`) made with
//! a valid admin token (or a dashboard session) is recorded: whose token, what, on what, and
//! how it ended. A change records itself in its own transaction (its handler takes a
//! [`Trail`]); refusals (a read-only token's 403) and failures are recorded once answered. Requests without a valid
//! token are not recorded: anyone can send them, and the log is kept forever, so recording them
//! would let anyone fill it; the request log has them.
//!
//! Invariant: nothing a request carries is recorded but its route's parameters (capped in
//! length): never a token, a body, a query string or a client address.

use std::future::{ready, Ready};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use actix_web::body::MessageBody;
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::http::{Method, StatusCode};
use actix_web::middleware::Next;
use actix_web::{web, FromRequest, HttpMessage as _, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};

use super::auth::{Admin, Identity};
use super::error::ApiError;
use super::request_log::RequestId;
use super::{blocking, AppState};
use crate::error_chain::Chain;
use crate::store;

/// The longest route parameter value kept in `target`.
const MAX_PARAMETER: usize = 200;

/// Set, in a request's extensions, once its change has written its own audit entry.
#[derive(Clone)]
struct Written(Arc<AtomicBool>);

/// The audit entry of the change a request makes, for the store call that makes it (an
/// extractor): the store writes it in the change's own transaction (see [`store::Audit`]), so
/// a client that goes away once the change is under way cannot leave it unrecorded.
pub struct Trail {
    request: HttpRequest,
    written: Arc<AtomicBool>,
}

impl Trail {
    /// The entry to write when the change is made, recording the answer `status` the request
    /// gets when it is (the middleware records any other answer itself).
    pub fn audit(&self, status: StatusCode) -> store::Audit {
        // The handler's authentication extractor has run by now and named the identity; an
        // entry without one would be a bug, recorded visibly rather than dropped.
        let identity = self.request.extensions().get::<Identity>().cloned();
        let actor = identity.map_or_else(|| "(unidentified)".to_owned(), |i| i.name.to_string());
        store::Audit::new(entry(&self.request, actor, status), self.written.clone())
    }
}

impl FromRequest for Trail {
    type Error = ApiError;
    type Future = Ready<Result<Trail, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let written = Arc::new(AtomicBool::new(false));
        req.extensions_mut().insert(Written(written.clone()));
        ready(Ok(Trail { request: req.clone(), written }))
    }
}

/// The entry recording `request`, made by `actor`, answered `status`.
fn entry(request: &HttpRequest, actor: String, status: StatusCode) -> store::NewAuditEntry {
    store::NewAuditEntry {
        at: store::naive(
            request.app_data::<web::Data<AppState>>().map_or_else(chrono::Utc::now, |s| (s.clock)()),
        ),
        actor,
        action: format!(
            "{} {}",
            request.method(),
            request.match_pattern().unwrap_or_else(|| "(no route)".to_owned())
        ),
        target: request
            .match_info()
            .iter()
            .map(|(name, value)| format!("{name}={}", value.chars().take(MAX_PARAMETER).collect::<String>()))
            .collect::<Vec<_>>()
            .join("&"),
        status: i32::from(status.as_u16()),
        request_id: request.extensions().get::<RequestId>().map(|r| r.0.clone()).unwrap_or_default(),
    }
}

/// Records an admin request that may change something and did not write its own entry with its
/// change: a refusal or a failure, once answered. A change that succeeded was recorded in its
/// own transaction; a failure after such a change is recorded as well.
pub async fn middleware(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let changes = !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    let res = next.call(req).await?;
    let request = res.request();
    let identity = request.extensions().get::<Identity>().cloned();
    let written = request.extensions().get::<Written>().is_some_and(|w| w.0.load(Ordering::Acquire));
    let answered = res.status();
    let done = answered.is_success() || answered.is_redirection();
    if let (true, Some(identity), false) = (changes, identity, written && done) {
        let entry = entry(request, identity.name.to_string(), answered);
        if let Some(state) = request.app_data::<web::Data<AppState>>() {
            let store = state.store.clone();
            // What was refused or failed changed nothing; a record that cannot be written is
            // logged loudly rather than turned into a failure of the answer already given.
            match web::block(move || store.record_audit(&entry)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::error!(error = %Chain(&e), "the audit log could not record an admin action")
                }
                Err(e) => {
                    tracing::error!(error = %Chain(&e), "the audit log could not record an admin action")
                }
            }
        }
    }
    Ok(res)
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct AuditQuery {
    /// Entries per page, 1 to 1000 (default 100).
    #[serde(default)]
    limit: Option<usize>,
    /// The `next_cursor` of the page before.
    #[serde(default)]
    cursor: Option<i64>,
    /// Only this token's actions.
    #[serde(default)]
    actor: Option<String>,
}

/// A page of the audit log, newest first.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct AuditPage {
    entries: Vec<store::AuditEntry>,
    /// Where the next page starts (`cursor=`); absent on the last page.
    next_cursor: Option<i64>,
}

/// The admin actions recorded, newest first (kept past the telemetry's retention).
#[utoipa::path(get, path = "/v1/admin/audit", tag = "audit", security(("admin_token" = [])),
    params(AuditQuery),
    responses((status = 200, body = AuditPage), super::error::AdminErrors))]
pub(super) async fn list(
    _admin: Admin,
    state: web::Data<AppState>,
    web::Query(query): web::Query<AuditQuery>,
) -> Result<HttpResponse, ApiError> {
    let limit = super::extract::page_size(query.limit)?;
    let store = state.store.clone();
    let entries = blocking(move || {
        // One more than asked, to know whether a next page exists.
        Ok(store.audit(limit + 1, query.cursor, query.actor.as_deref())?)
    })
    .await?;
    let more = entries.len() > limit;
    let entries: Vec<_> = entries.into_iter().take(limit).collect();
    let next_cursor = if more { entries.last().map(|e| e.id) } else { None };
    Ok(HttpResponse::Ok().json(AuditPage { entries, next_cursor }))
}
