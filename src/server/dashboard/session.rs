//! Dashboard sessions: sign-in with the admin token sets a cookie holding a random token
//! (HttpOnly, SameSite=Strict, Path=/admin, Secure when the request came over TLS); the
//! database keeps only its SHA-256, with the session's form token and its end. [`Session`] is
//! the extractor every page and action takes; [`Form`] checks the form token (CSRF) and the
//! request's origin before a state-changing form is believed.

use actix_web::cookie::{Cookie, SameSite};
use actix_web::{dev::Payload, http::header, web, FromRequest, HttpMessage as _, HttpRequest};
use base64::Engine as _;
use futures_util::future::LocalBoxFuture;
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

use super::DashboardError;
use crate::server::auth::{Identity, Scope};
use crate::server::AppState;

/// The session cookie's name.
pub const COOKIE: &str = "licensor_session";
/// How long a session lasts after sign-in.
pub const LIFETIME: chrono::Duration = chrono::Duration::hours(8);

/// A signed-in vendor: the session's form token, for the forms a page shows.
#[derive(Debug, Clone)]
pub struct Session {
    pub(super) token_hash: String,
    pub csrf: String,
    /// The admin token that signed in: its name (for the audit log) and scope.
    pub identity: Identity,
}

impl Session {
    /// The session's token may change things (full scope), else the 403 that says it may not.
    pub fn may_change(&self) -> Result<(), DashboardError> {
        match self.identity.scope {
            Scope::Full => Ok(()),
            Scope::Read => Err(DashboardError::Forbidden(format!(
                "you signed in with the read-only token {:?}; sign in with a token of full scope to change anything",
                &*self.identity.name
            ))),
        }
    }
}

/// A fresh random token: 32 bytes, base64url.
pub fn random_token() -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>())
}

pub fn hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// The scheme and host the browser used, believing forwarded headers only from a trusted proxy.
fn scheme_and_host(req: &HttpRequest) -> (String, String) {
    let proxies =
        req.app_data::<web::Data<AppState>>().map(|s| s.trusted_proxies.clone()).unwrap_or_default();
    crate::server::client_address::scheme_and_host(req, &proxies)
}

/// Whether the browser reached the server over TLS (the cookie is then `Secure`).
fn over_tls(req: &HttpRequest) -> bool {
    scheme_and_host(req).0 == "https"
}

/// The cookie that carries a new session's token.
pub fn cookie(req: &HttpRequest, token: String) -> Cookie<'static> {
    Cookie::build(COOKIE, token)
        .path("/admin")
        .http_only(true)
        .same_site(SameSite::Strict)
        .secure(over_tls(req))
        .max_age(actix_web::cookie::time::Duration::seconds(LIFETIME.num_seconds()))
        .finish()
}

/// The cookie that clears the session's at sign-out.
pub fn removal(req: &HttpRequest) -> Cookie<'static> {
    let mut c = cookie(req, String::new());
    c.make_removal();
    c
}

impl FromRequest for Session {
    type Error = DashboardError;
    type Future = LocalBoxFuture<'static, Result<Session, DashboardError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let state = req.app_data::<web::Data<AppState>>().cloned();
        let token = req.cookie(COOKIE).map(|c| c.value().to_owned());
        let req = req.clone();
        Box::pin(async move {
            let state = state.ok_or_else(|| DashboardError::Internal("application state missing".into()))?;
            let token = token.filter(|t| !t.is_empty()).ok_or(DashboardError::SignIn)?;
            let token_hash = hash(&token);
            let (store, now) = (state.store.clone(), (state.clock)());
            let lookup = token_hash.clone();
            let found = web::block(move || store.session(&lookup, now))
                .await
                .map_err(|e| DashboardError::Internal(Box::new(e)))??;
            let row = found.ok_or(DashboardError::SignIn)?;
            // The token that signed in must still be configured, unchanged: a removed or
            // rotated token ends its sessions here, and a narrowed scope narrows them.
            let Some(identity) =
                state.admin_tokens.session_identity(&row.token_name, &token_hash, &row.token_proof)
            else {
                let (store, ended) = (state.store.clone(), token_hash.clone());
                web::block(move || store.end_session(&ended, None))
                    .await
                    .map_err(|e| DashboardError::Internal(Box::new(e)))??;
                tracing::info!(token = %row.token_name, "a dashboard session ended: its admin token was removed or changed");
                return Err(DashboardError::SignIn);
            };
            req.extensions_mut().insert(identity.clone());
            Ok(Session { token_hash, csrf: row.csrf, identity })
        })
    }
}

/// A state-changing form of a signed-in vendor, believed only when it carries the session's
/// form token and, when the browser names the page's origin, comes from this server's.
pub struct Form<T> {
    pub session: Session,
    pub data: T,
}

/// What every form carries.
#[derive(Debug, serde::Deserialize)]
pub struct Token {
    pub csrf: String,
}

impl<T: serde::de::DeserializeOwned + 'static> FromRequest for Form<T> {
    type Error = DashboardError;
    type Future = LocalBoxFuture<'static, Result<Form<T>, DashboardError>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let session = Session::from_request(req, payload);
        let body = web::Form::<Vec<(String, String)>>::from_request(req, payload);
        let origin_ok = same_origin(req);
        Box::pin(async move {
            let session = session.await?;
            if !origin_ok {
                return Err(DashboardError::Forbidden("the form was sent from another site".into()));
            }
            let fields =
                body.await.map_err(|e| DashboardError::BadRequest(format!("the form does not read: {e}")))?;
            let presented = fields.iter().find(|(k, _)| k == "csrf").map(|(_, v)| v.as_str()).unwrap_or("");
            if !bool::from(presented.as_bytes().ct_eq(session.csrf.as_bytes())) {
                return Err(DashboardError::Forbidden(
                    "the form's token is missing or stale; reload the page and try again".into(),
                ));
            }
            let encoded = serde_urlencoded::to_string(&fields).unwrap_or_default();
            let data = serde_urlencoded::from_str::<T>(&encoded)
                .map_err(|e| DashboardError::BadRequest(format!("the form does not read: {e}")))?;
            Ok(Form { session, data })
        })
    }
}

/// False when the browser says the request comes from a page of another origin: through
/// `Sec-Fetch-Site` (anything but `same-origin`), or else through an `Origin` that names
/// another. Requests that say neither (older clients, or an `Origin: null` that a privacy
/// setting sent) rest on the form token alone.
fn same_origin(req: &HttpRequest) -> bool {
    if let Some(site) = req.headers().get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        return site == "same-origin";
    }
    match req.headers().get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
        None | Some("null") => true,
        Some(origin) => {
            let (scheme, host) = scheme_and_host(req);
            origin == format!("{scheme}://{host}")
        }
    }
}
