//! The audit log's recorder and reader: every admin request that may change something (any
//! method but GET, HEAD and OPTIONS, under `/v1/admin` and the dashboard's `/admin`) made with
//! a valid admin token (or a dashboard session) is recorded once answered: whose token, what, on
//! what, and how it ended, refusals included (a read-only token's 403). Requests without a valid
//! token are not recorded: anyone can send them, and the log is kept forever, so recording them
//! would let anyone fill it; the request log has them.
//!
//! Invariant: nothing a request carries is recorded but its route's parameters (capped in
//! length): never a token, a body, a query string or a client address.

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::middleware::Next;
use actix_web::{web, HttpMessage as _, HttpResponse};
use serde::{Deserialize, Serialize};

use super::auth::{Admin, Identity};
use super::error::ApiError;
use super::request_log::RequestId;
use super::{blocking, AppState};
use crate::error_chain::Chain;
use crate::store;

/// The longest route parameter value kept in `target`.
const MAX_PARAMETER: usize = 200;

/// Records an admin request that may change something, once it is answered.
pub async fn middleware(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let changes = !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    let res = next.call(req).await?;
    let identity = res.request().extensions().get::<Identity>().cloned();
    if let (true, Some(identity)) = (changes, identity) {
        let request = res.request();
        let entry = store::NewAuditEntry {
            at: store::naive(
                request.app_data::<web::Data<AppState>>().map_or_else(chrono::Utc::now, |s| (s.clock)()),
            ),
            actor: identity.name.to_string(),
            action: format!(
                "{} {}",
                request.method(),
                request.match_pattern().unwrap_or_else(|| "(no route)".to_owned())
            ),
            target: request
                .match_info()
                .iter()
                .map(|(name, value)| {
                    format!("{name}={}", value.chars().take(MAX_PARAMETER).collect::<String>())
                })
                .collect::<Vec<_>>()
                .join("&"),
            status: i32::from(res.status().as_u16()),
            request_id: request.extensions().get::<RequestId>().map(|r| r.0.clone()).unwrap_or_default(),
        };
        if let Some(state) = request.app_data::<web::Data<AppState>>() {
            let store = state.store.clone();
            // The action is done and answered; a record that cannot be written is logged loudly
            // rather than turned into a failure of what already happened.
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
    responses((status = 200, body = AuditPage), super::handlers::AdminErrors))]
pub(super) async fn list(
    _admin: Admin,
    state: web::Data<AppState>,
    web::Query(query): web::Query<AuditQuery>,
) -> Result<HttpResponse, ApiError> {
    let limit = super::handlers::page_size(query.limit)?;
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
