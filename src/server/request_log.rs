//! One log line per request, and a request id on every line a request causes.
//!
//! Each request runs inside a `request` span that carries its id, so every event logged while
//! it is handled (on the async worker, and on the blocking pool through
//! [`blocking`](super::blocking)) names it; the id is echoed in the `X-Request-Id` answer
//! header so that a client's report can be matched to the server's lines. The line logs the
//! route's pattern (`/v1/admin/licenses/{license_id}`), never the query string or a body, so no
//! license key, token or telemetry text can reach the log through it.

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::HttpMessage as _;
use tracing::Instrument as _;

/// A request's id, in its extensions (for the audit log).
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// The header that carries a request's id, both ways.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The id a proxy in front gave the request when it is a plain token (so that one id follows
/// a request through both), or a new one.
fn request_id(req: &ServiceRequest) -> String {
    req.headers()
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            (1..=64).contains(&v.len())
                && v.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        })
        .map_or_else(|| uuid::Uuid::new_v4().simple().to_string(), str::to_owned)
}

/// The middleware: wraps every request in its span and logs it when answered (health probes,
/// which orchestrators send every few seconds, are not logged).
pub async fn middleware(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let id = request_id(&req);
    req.extensions_mut().insert(RequestId(id.clone()));
    let metrics = req.app_data::<actix_web::web::Data<super::AppState>>().map(|s| s.service.metrics.clone());
    let span = tracing::info_span!("request", request_id = %id);
    let method = req.method().clone();
    let quiet = matches!(req.path(), "/healthz" | "/readyz");
    let started = std::time::Instant::now();
    async move {
        let route = req.match_pattern().unwrap_or_else(|| "(no route)".to_owned());
        let mut res = next.call(req).await?;
        if let Ok(value) = HeaderValue::from_str(&id) {
            res.headers_mut().insert(REQUEST_ID, value);
        }
        if let Some(metrics) = metrics {
            metrics.answered(method.as_str(), &route, res.status().as_u16());
        }
        if !quiet {
            tracing::info!(
                method = %method,
                route = %route,
                status = res.status().as_u16(),
                ms = (started.elapsed().as_secs_f64() * 1e4).round() / 10.0,
                "answered"
            );
        }
        Ok(res)
    }
    .instrument(span)
    .await
}
