//! The vendor's dashboard at `/admin/`: server-rendered pages (askama templates checked at
//! compile time, embedded in the binary with the one stylesheet), SVG charts drawn here, and
//! forms for the actions; no script, no font and no request to any other origin, so it works
//! air-gapped (the Content-Security-Policy says so to the browser too).
//!
//! Invariants: every page and action takes a [`session::Session`] (or its [`session::Form`],
//! which also checks the form token and the origin); the figures come from the same store
//! views as the admin API, and every chart has its table and a CSV link; nothing here
//! decides what the API would not.

pub mod handlers;
pub mod public_names;
pub mod session;

use crate::error_chain::Chain;
use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};

use super::error::ApiError;

/// The one stylesheet, embedded.
pub const STYLESHEET: &str = include_str!("assets/dashboard.css");

/// What the browser may load for a dashboard page: this origin only, no script at all.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; style-src 'self'; img-src 'self' data:; \
     form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Why a dashboard request got no page.
#[derive(Debug, thiserror::Error)]
pub enum DashboardError {
    /// No session, or it ended: answered with a redirect to the sign-in page.
    #[error("sign in first")]
    SignIn,
    /// A form without the session's token, or from another site.
    #[error("{0}")]
    Forbidden(String),
    /// A query or form that does not read.
    #[error("{0}")]
    BadRequest(String),
    /// What the admin API would have answered (not found, conflict, invalid...).
    #[error("{0}")]
    Api(ApiError),
    /// A failure of the server itself; logged with its causes, never shown.
    #[error("{0}")]
    Internal(crate::server::error::Cause),
}

impl From<ApiError> for DashboardError {
    fn from(e: ApiError) -> Self {
        DashboardError::Api(e)
    }
}

impl From<crate::store::StoreError> for DashboardError {
    fn from(e: crate::store::StoreError) -> Self {
        DashboardError::Api(e.into())
    }
}

impl From<actix_web::error::BlockingError> for DashboardError {
    fn from(e: actix_web::error::BlockingError) -> Self {
        DashboardError::Internal(Box::new(e))
    }
}

impl From<askama::Error> for DashboardError {
    fn from(e: askama::Error) -> Self {
        DashboardError::Internal(Box::new(e))
    }
}

impl ResponseError for DashboardError {
    fn status_code(&self) -> StatusCode {
        match self {
            DashboardError::SignIn => StatusCode::SEE_OTHER,
            DashboardError::Forbidden(_) => StatusCode::FORBIDDEN,
            DashboardError::BadRequest(_) => StatusCode::BAD_REQUEST,
            DashboardError::Api(e) => e.status_code(),
            DashboardError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        if let DashboardError::SignIn = self {
            return HttpResponse::SeeOther().insert_header((header::LOCATION, "/admin/sign-in")).finish();
        }
        let message = match self {
            DashboardError::Internal(cause) => {
                tracing::error!(error = %Chain(cause.as_ref()), "dashboard request failed");
                "Something went wrong on the server; the details are in its log.".to_owned()
            }
            DashboardError::Api(e) if e.status_code().is_server_error() => {
                match e.cause() {
                    Some(cause) => tracing::error!(error = %Chain(cause), "dashboard request failed"),
                    None => tracing::error!(error = %e, "dashboard request failed"),
                }
                "The server cannot answer now; try again in a moment.".to_owned()
            }
            other => other.to_string(),
        };
        let page = handlers::ErrorPage { status: self.status_code().as_u16(), message };
        let body = askama::Template::render(&page).unwrap_or_else(|_| "error".into());
        HttpResponse::build(self.status_code()).content_type("text/html; charset=utf-8").body(body)
    }
}

/// What a page or a form of the dashboard answers.
pub(super) type Page = Result<HttpResponse, DashboardError>;

/// A redirection after a form (303), to `location`.
pub(super) fn see_other(location: &str) -> HttpResponse {
    HttpResponse::SeeOther().insert_header((header::LOCATION, location.to_owned())).finish()
}

/// What a dashboard page answers.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)] // A description for the API document, never built.
pub enum PageResponses {
    /// The page.
    #[response(status = 200, content_type = "text/html; charset=utf-8")]
    Page(String),
    /// No session: to `/admin/sign-in`.
    #[response(status = 303)]
    SignIn,
    /// The query is not valid (a page saying why).
    #[response(status = 400, content_type = "text/html; charset=utf-8")]
    BadRequest(String),
    /// Nothing of that name (a page saying so).
    #[response(status = 404, content_type = "text/html; charset=utf-8")]
    NotFound(String),
    /// The database is out of reach (a page saying so).
    #[response(status = 503, content_type = "text/html; charset=utf-8")]
    Unavailable(String),
}

/// What a dashboard form answers.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)] // A description for the API document, never built.
pub enum FormResponses {
    /// Done: to the page it changed; or no session: to `/admin/sign-in`.
    #[response(status = 303)]
    Done,
    /// The form is not valid (a page saying why).
    #[response(status = 400, content_type = "text/html; charset=utf-8")]
    BadRequest(String),
    /// The form's token (`csrf`) is missing or stale, or it came from another site.
    #[response(status = 403, content_type = "text/html; charset=utf-8")]
    Forbidden(String),
    /// Nothing of that name.
    #[response(status = 404, content_type = "text/html; charset=utf-8")]
    NotFound(String),
    /// The database is out of reach.
    #[response(status = 503, content_type = "text/html; charset=utf-8")]
    Unavailable(String),
}
