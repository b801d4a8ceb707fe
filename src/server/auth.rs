//! Admin authentication as an extractor: a handler that takes [`Admin`] runs only for a
//! request bearing the admin token. The comparison is constant-time over SHA-256 digests, so
//! neither the token's content nor its length leaks through timing.

use actix_web::{dev::Payload, http::header, web, FromRequest, HttpRequest};
use sha2::{Digest as _, Sha256};
use std::future::{ready, Ready};
use subtle::ConstantTimeEq as _;

use super::error::ApiError;
use super::AppState;

/// Proof that the request carried the admin token.
#[derive(Debug, Clone, Copy)]
pub struct Admin;

/// The admin token, kept only as its digest.
#[derive(Clone)]
pub struct AdminToken([u8; 32]);

impl AdminToken {
    pub fn new(token: &str) -> AdminToken {
        AdminToken(Sha256::digest(token.as_bytes()).into())
    }

    /// Whether `candidate` is the token, in constant time.
    pub fn matches(&self, candidate: &str) -> bool {
        let digest: [u8; 32] = Sha256::digest(candidate.as_bytes()).into();
        bool::from(self.0.ct_eq(&digest))
    }
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(..)")
    }
}

impl FromRequest for Admin {
    type Error = ApiError;
    type Future = Ready<Result<Admin, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let Some(state) = req.app_data::<web::Data<AppState>>() else {
            return ready(Err(ApiError::Internal("application state missing".into())));
        };
        let presented = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
            .map(str::trim);
        ready(match presented {
            Some(token) if state.admin_token.matches(token) => Ok(Admin),
            _ => Err(ApiError::Unauthorized),
        })
    }
}
