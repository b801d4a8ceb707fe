//! The API's one error type: every non-200 answer is `{"error":{"code","message"}}` with an
//! explicit status per code. Internal failures keep their cause, are logged with its whole
//! chain and answered with a generic message, so a 500 never leaks internals.

use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};
use std::fmt;

use crate::checkin::{BadRequest, CheckInError};
use crate::error_chain::Chain;
use crate::protocol::{ErrorBody, ErrorDetail};
use crate::store::StoreError;

#[derive(Debug)]
pub enum ApiError {
    /// 400: the request is malformed; the code says how.
    BadRequest { code: &'static str, message: String },
    /// 401: no or wrong admin token.
    Unauthorized,
    /// 403: the admin token is valid but its scope does not allow this.
    Forbidden(String),
    /// 404: no such route or resource.
    NotFound(String),
    /// 405: the route exists, the method does not.
    MethodNotAllowed,
    /// 409: the request conflicts with the server's state or configuration.
    Conflict { code: &'static str, message: String },
    /// 413: the body is larger than the configured limit.
    TooLarge { limit: usize },
    /// 415: the body is not JSON.
    UnsupportedMediaType,
    /// 415: the body's `Content-Encoding` is neither gzip nor none.
    UnsupportedEncoding,
    /// 413: a compressed body expands beyond `cap` bytes (the body limit, and `ratio` times its
    /// compressed size).
    ExpandsTooFar { cap: usize, ratio: usize },
    /// 408: the body did not arrive in time.
    RequestTimeout,
    /// 429: too many requests; retry after this many seconds.
    TooManyRequests { retry_after: u64 },
    /// 503: the database is unreachable or overloaded; retry later. The cause is logged,
    /// never sent.
    Unavailable(Cause),
    /// 500: anything else. The cause is logged, never sent.
    Internal(Cause),
}

/// Why a request failed inside the server: an error with its sources, or a sentence
/// (`"application state missing".into()`).
pub type Cause = Box<dyn std::error::Error + Send + Sync>;

impl ApiError {
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::BadRequest { code, message: message.into() }
    }

    /// What caused a 500 or 503, for the log.
    pub fn cause(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ApiError::Internal(cause) | ApiError::Unavailable(cause) => Some(cause.as_ref()),
            _ => None,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            ApiError::BadRequest { code, .. } | ApiError::Conflict { code, .. } => code,
            ApiError::Unauthorized => "unauthorized",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::NotFound(_) => "not_found",
            ApiError::MethodNotAllowed => "method_not_allowed",
            ApiError::TooLarge { .. } => "body_too_large",
            ApiError::UnsupportedMediaType => "unsupported_media_type",
            ApiError::UnsupportedEncoding => "unsupported_encoding",
            ApiError::ExpandsTooFar { .. } => "body_too_large",
            ApiError::RequestTimeout => "request_timeout",
            ApiError::TooManyRequests { .. } => "too_many_requests",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::Internal(_) => "internal",
        }
    }

    fn message(&self) -> String {
        match self {
            ApiError::BadRequest { message, .. } | ApiError::Conflict { message, .. } => message.clone(),
            ApiError::Unauthorized => "a valid admin token is required: Authorization: Bearer <token>".into(),
            ApiError::NotFound(what) | ApiError::Forbidden(what) => what.clone(),
            ApiError::MethodNotAllowed => "this method is not allowed on this route".into(),
            ApiError::TooLarge { limit } => format!("the request body is larger than {limit} bytes"),
            ApiError::UnsupportedMediaType => {
                "the request body must be JSON (Content-Type: application/json)".into()
            }
            ApiError::UnsupportedEncoding => {
                "the request body must be sent as is or gzipped (Content-Encoding: gzip)".into()
            }
            ApiError::ExpandsTooFar { cap, ratio } => format!(
                "the request body expands beyond {cap} bytes (the body limit, and {ratio} times its compressed size)"
            ),
            ApiError::RequestTimeout => "the request body did not arrive in time".into(),
            ApiError::TooManyRequests { retry_after } => {
                format!("too many requests; retry after {retry_after} s")
            }
            ApiError::Unavailable(_) => "the service is temporarily unavailable; retry later".into(),
            ApiError::Internal(_) => "internal server error".into(),
        }
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code(), self.message())
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Conflict { .. } => StatusCode::CONFLICT,
            ApiError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType | ApiError::UnsupportedEncoding => {
                StatusCode::UNSUPPORTED_MEDIA_TYPE
            }
            ApiError::ExpandsTooFar { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            ApiError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        match self {
            ApiError::Internal(cause) => tracing::error!(error = %Chain(cause.as_ref()), "internal error"),
            ApiError::Unavailable(cause) => {
                tracing::warn!(error = %Chain(cause.as_ref()), "service unavailable")
            }
            _ => {}
        }
        let body = ErrorBody { error: ErrorDetail { code: self.code().to_owned(), message: self.message() } };
        let mut response = HttpResponse::build(self.status_code());
        match self {
            ApiError::TooManyRequests { retry_after } => {
                response.insert_header((header::RETRY_AFTER, retry_after.to_string()));
            }
            ApiError::Unavailable(_) => {
                response.insert_header((header::RETRY_AFTER, "5"));
            }
            ApiError::Unauthorized => {
                response.insert_header((header::WWW_AUTHENTICATE, "Bearer"));
            }
            // What the server does take (RFC 7694), so a client can send it that way instead.
            ApiError::UnsupportedEncoding => {
                response.insert_header((header::ACCEPT_ENCODING, "gzip"));
            }
            _ => {}
        }
        response.json(body)
    }
}

impl From<BadRequest> for ApiError {
    fn from(e: BadRequest) -> Self {
        ApiError::BadRequest { code: e.code, message: e.message }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        if e.is_unavailable() {
            ApiError::Unavailable(Box::new(e))
        } else {
            ApiError::Internal(Box::new(e))
        }
    }
}

impl From<CheckInError> for ApiError {
    fn from(e: CheckInError) -> Self {
        match e {
            CheckInError::BadRequest(b) => b.into(),
            CheckInError::TooMany { retry_after } => ApiError::TooManyRequests { retry_after },
            CheckInError::Store(s) => s.into(),
            e @ (CheckInError::Unavailable(_) | CheckInError::WriterStopped) => {
                ApiError::Unavailable(Box::new(e))
            }
            e @ (CheckInError::Refused(_) | CheckInError::Panicked | CheckInError::Invariant(_)) => {
                ApiError::Internal(Box::new(e))
            }
        }
    }
}

impl From<actix_web::error::BlockingError> for ApiError {
    fn from(e: actix_web::error::BlockingError) -> Self {
        ApiError::Internal(Box::new(e))
    }
}

/// The answers every admin route that changes something may give besides its own.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)] // A description for the API document, never built.
pub(super) enum WriteErrors {
    /// The request is not valid.
    #[response(status = 400)]
    BadRequest(#[to_schema] crate::protocol::ErrorBody),
    /// No valid admin token.
    #[response(status = 401)]
    Unauthorized(crate::protocol::ErrorBody),
    /// The admin token is read-only.
    #[response(status = 403)]
    Forbidden(crate::protocol::ErrorBody),
    /// The database is out of reach; retry.
    #[response(status = 503)]
    Unavailable(crate::protocol::ErrorBody),
}

/// The answers every admin route may give besides its own.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)] // A description for the API document, never built.
pub(super) enum AdminErrors {
    /// The request is not valid.
    #[response(status = 400)]
    BadRequest(#[to_schema] crate::protocol::ErrorBody),
    /// No valid admin token.
    #[response(status = 401)]
    Unauthorized(crate::protocol::ErrorBody),
    /// The database is out of reach; retry.
    #[response(status = 503)]
    Unavailable(crate::protocol::ErrorBody),
}
