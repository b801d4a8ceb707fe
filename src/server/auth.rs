//! Admin authentication as extractors: a handler that takes [`Admin`] runs only for a request
//! bearing an admin token, one that takes [`FullAdmin`] only for a token of full scope (a
//! read-only token gets 403). Tokens are named, so the audit log can say whose action it was. The
//! comparison is constant-time over SHA-256 digests, so neither a token's content nor its length
//! leaks through timing.

use actix_web::{dev::Payload, http::header, web, FromRequest, HttpMessage as _, HttpRequest};
use sha2::{Digest as _, Sha256};
use std::future::{ready, Ready};
use std::sync::Arc;
use subtle::ConstantTimeEq as _;

use super::error::ApiError;
use super::AppState;

/// What an admin token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Read licenses, instances, insights, the audit log and metrics; change nothing.
    Read,
    /// Everything, including issuing, renewing, revoking and releasing.
    Full,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Full => "full",
        }
    }

    pub fn parse(text: &str) -> Option<Scope> {
        match text {
            "read" => Some(Scope::Read),
            "full" => Some(Scope::Full),
            _ => None,
        }
    }
}

/// Who a request is: the admin token's name and scope. Put in the request's extensions by the
/// extractors (and the dashboard's session), where the audit log finds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub name: Arc<str>,
    pub scope: Scope,
}

/// Proof that the request carried an admin token (of any scope): for reading.
#[derive(Debug, Clone)]
pub struct Admin(pub Identity);

/// Proof that the request carried an admin token of full scope: for changing anything.
#[derive(Debug, Clone)]
pub struct FullAdmin(pub Identity);

/// The admin tokens, kept only as their digests, with their names and scopes.
#[derive(Clone)]
pub struct AdminTokens(Vec<([u8; 32], Identity)>);

impl AdminTokens {
    /// `tokens` as (name, scope, token).
    pub fn new<'a>(tokens: impl IntoIterator<Item = (&'a str, Scope, &'a str)>) -> AdminTokens {
        AdminTokens(
            tokens
                .into_iter()
                .map(|(name, scope, token)| {
                    (Sha256::digest(token.as_bytes()).into(), Identity { name: Arc::from(name), scope })
                })
                .collect(),
        )
    }

    /// A proof that the token of `identity` signed in the session whose token hashes to
    /// `session`: SHA-256 over both, hex. It names neither token, differs per session, and
    /// changes when the admin token does.
    pub fn proof(&self, identity: &Identity, session: &str) -> Option<String> {
        let (digest, _) = self.0.iter().find(|(_, known)| known.name == identity.name)?;
        Some(hex::encode(Sha256::new().chain_update(session.as_bytes()).chain_update(digest).finalize()))
    }

    /// Who a dashboard session is now: the token named `name` as configured now, if `proof`
    /// (from [`AdminTokens::proof`] at sign-in) still matches it, with the scope it has now. A
    /// removed or rotated token gives `None`: its sessions end.
    pub fn session_identity(&self, name: &str, session: &str, proof: &str) -> Option<Identity> {
        let (_, identity) = self.0.iter().find(|(_, known)| &*known.name == name)?;
        let expected = self.proof(identity, session)?;
        bool::from(expected.as_bytes().ct_eq(proof.as_bytes())).then(|| identity.clone())
    }

    /// Whose token `candidate` is. Every token's digest is compared, each in constant time, so
    /// neither a token's content nor its length leaks through timing.
    pub fn identify(&self, candidate: &str) -> Option<Identity> {
        let digest: [u8; 32] = Sha256::digest(candidate.as_bytes()).into();
        let mut found = None;
        for (known, identity) in &self.0 {
            if bool::from(known.ct_eq(&digest)) {
                found = Some(identity.clone());
            }
        }
        found
    }
}

impl std::fmt::Debug for AdminTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.0.iter().map(|(_, identity)| identity)).finish()
    }
}

/// The identity of a request's bearer token, recorded in its extensions.
fn bearer(req: &HttpRequest) -> Result<Identity, ApiError> {
    let Some(state) = req.app_data::<web::Data<AppState>>() else {
        return Err(ApiError::Internal("application state missing".into()));
    };
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim);
    let identity =
        presented.and_then(|token| state.admin_tokens.identify(token)).ok_or(ApiError::Unauthorized)?;
    req.extensions_mut().insert(identity.clone());
    Ok(identity)
}

impl FromRequest for Admin {
    type Error = ApiError;
    type Future = Ready<Result<Admin, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(bearer(req).map(Admin))
    }
}

impl FromRequest for FullAdmin {
    type Error = ApiError;
    type Future = Ready<Result<FullAdmin, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(bearer(req).and_then(|identity| match identity.scope {
            Scope::Full => Ok(FullAdmin(identity)),
            Scope::Read => Err(ApiError::Forbidden(format!(
                "the admin token {:?} is read-only; this needs a token of full scope",
                &*identity.name
            ))),
        }))
    }
}
