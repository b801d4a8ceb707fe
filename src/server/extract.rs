//! Request extractors that answer with the API's errors: JSON bodies read within the size and
//! time limits, and the error handler that gives actix's `web::Query` the `{"error": ...}` body.
//! Handlers declare what they need in their signature; none reads a header or a body by hand.

use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::{web, FromRequest, HttpRequest};
use futures_util::future::LocalBoxFuture;
use futures_util::StreamExt as _;
use serde::de::DeserializeOwned;

use super::error::ApiError;
use super::AppState;

/// Proof that the request's client address is within its rate limit, counted before any
/// parsing or signature work: a flood of garbage costs a map look-up per request and never
/// reaches the database. Taken first in a handler's arguments, it is decided before the body is
/// read.
pub struct AddressAdmitted;

impl FromRequest for AddressAdmitted {
    type Error = ApiError;
    type Future = std::future::Ready<Result<AddressAdmitted, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let Some(state) = req.app_data::<web::Data<AppState>>() else {
            return std::future::ready(Err(ApiError::Internal("application state missing".into())));
        };
        let admitted = match super::client_address::client_address(req, &state.trusted_proxies) {
            Some(address) => state.service.limiter.admit_address(address).map_err(
                |crate::checkin::RetryAfter(retry_after)| {
                    state.service.metrics.refused("address");
                    ApiError::TooManyRequests { retry_after }
                },
            ),
            None => Ok(()),
        };
        std::future::ready(admitted.map(|()| AddressAdmitted))
    }
}

/// A body declared as JSON (`application/json` or `application/*+json`, else 415), at most
/// `max_body_bytes` (else 413, without reading the rest) and arriving within `body_timeout`
/// (else 408: a client that trickles a body would hold a connection and a worker's attention),
/// sent as is or gzipped (see [`MAX_EXPANSION`]). The bytes themselves, inflated: a check-in's
/// digest is over its telemetry exactly as sent, before compression.
pub struct JsonBytes(pub web::Bytes);

/// [`JsonBytes`] where the body may also be empty (no content type needed then): a bare POST.
pub struct OptionalJsonBytes(pub Option<web::Bytes>);

/// A JSON body parsed into `T`; one that does not parse is 400 `invalid_request`, naming the
/// field and the fault.
pub struct Json<T>(pub T);

impl FromRequest for JsonBytes {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<JsonBytes, ApiError>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let (req, payload) = (req.clone(), payload.take());
        Box::pin(async move {
            require_json(&req)?;
            Ok(JsonBytes(read_body(&req, payload).await?))
        })
    }
}

impl FromRequest for OptionalJsonBytes {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<OptionalJsonBytes, ApiError>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let (req, payload) = (req.clone(), payload.take());
        Box::pin(async move {
            let body = read_body(&req, payload).await?;
            if body.is_empty() {
                return Ok(OptionalJsonBytes(None));
            }
            require_json(&req)?;
            Ok(OptionalJsonBytes(Some(body)))
        })
    }
}

impl<T: DeserializeOwned + 'static> FromRequest for Json<T> {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Json<T>, ApiError>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let bytes = JsonBytes::from_request(req, payload);
        Box::pin(async move { parse(&bytes.await?.0).map(Json) })
    }
}

/// Parses a JSON body, with the API's error.
pub fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request("invalid_request", format!("invalid body: {e}")))
}

/// The `web::Query` error handler: 400 `invalid_query` with serde's account of the fault.
pub fn query_error(e: actix_web::error::QueryPayloadError, _: &HttpRequest) -> actix_web::Error {
    ApiError::bad_request("invalid_query", e.to_string()).into()
}

/// Refuses a body that is not declared as JSON.
fn require_json(req: &HttpRequest) -> Result<(), ApiError> {
    let content_type = req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let essence = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    if essence == "application/json" || (essence.starts_with("application/") && essence.ends_with("+json")) {
        Ok(())
    } else {
        Err(ApiError::UnsupportedMediaType)
    }
}

/// How many times its compressed size a gzipped body may expand to (and never beyond
/// `max_body_bytes`): telemetry JSON compresses 4 to 10 times, so a body that expands further is
/// a bomb, and the server stops inflating it there. Inflating therefore costs at most what
/// reading an uncompressed body of the limit's size does.
pub const MAX_EXPANSION: usize = 100;

/// Undoes the body's `Content-Encoding`: none (or `identity`) or `gzip`; anything else is 415
/// with `Accept-Encoding: gzip`. A gzipped body that is damaged is 400 `invalid_body`; one that
/// expands beyond its bounds is 413.
fn decode_body(req: &HttpRequest, body: web::Bytes, limit: usize) -> Result<web::Bytes, ApiError> {
    use std::io::Read as _;
    let mut encodings = req.headers().get_all(header::CONTENT_ENCODING);
    let encoding = match (encodings.next(), encodings.next()) {
        (None, _) => return Ok(body),
        (Some(one), None) => one.to_str().unwrap_or("").trim().to_ascii_lowercase(),
        (Some(_), Some(_)) => return Err(ApiError::UnsupportedEncoding),
    };
    match encoding.as_str() {
        "" | "identity" => Ok(body),
        "gzip" | "x-gzip" => {
            let cap = limit.min(body.len().saturating_mul(MAX_EXPANSION));
            let mut inflated = Vec::with_capacity(cap.min(body.len().saturating_mul(8)));
            flate2::read::MultiGzDecoder::new(&body[..])
                .take(cap as u64 + 1)
                .read_to_end(&mut inflated)
                .map_err(|e| {
                    ApiError::bad_request("invalid_body", format!("the gzipped body does not inflate: {e}"))
                })?;
            if inflated.len() > cap {
                return Err(ApiError::ExpandsTooFar { cap, ratio: MAX_EXPANSION });
            }
            Ok(inflated.into())
        }
        _ => Err(ApiError::UnsupportedEncoding),
    }
}

/// Reads a body of at most `max_body_bytes` within `body_timeout`, and undoes its
/// `Content-Encoding`.
async fn read_body(req: &HttpRequest, mut payload: Payload) -> Result<web::Bytes, ApiError> {
    let state = req
        .app_data::<web::Data<AppState>>()
        .ok_or_else(|| ApiError::Internal("application state missing".into()))?;
    let (limit, timeout) = (state.max_body_bytes, state.body_timeout);
    if let Some(length) =
        req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<usize>().ok())
    {
        if length > limit {
            return Err(ApiError::TooLarge { limit });
        }
    }
    let read = async move {
        let mut body = web::BytesMut::new();
        while let Some(chunk) = payload.next().await {
            let chunk =
                chunk.map_err(|e| ApiError::bad_request("invalid_body", format!("reading the body: {e}")))?;
            if body.len() + chunk.len() > limit {
                return Err(ApiError::TooLarge { limit });
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body.freeze())
    };
    let body = actix_web::rt::time::timeout(timeout, read).await.map_err(|_| ApiError::RequestTimeout)??;
    decode_body(req, body, limit)
}

/// The default and the largest page of an admin listing.
const DEFAULT_PAGE: usize = 100;
const MAX_PAGE: usize = 1_000;

/// A listing's page size: the one asked for (1 to 1,000), else 100.
pub(super) fn page_size(limit: Option<usize>) -> Result<usize, ApiError> {
    let limit = limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::bad_request("invalid_query", format!("limit must be from 1 to {MAX_PAGE}")));
    }
    Ok(limit)
}
