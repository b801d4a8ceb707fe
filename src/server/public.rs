//! The public insights (`GET /insights`, `GET /v1/insights`): no authentication, off unless the
//! operator turns them on. The store makes the figures safe to publish and keeps each month's
//! publication as it was (`Store::public_insights`); here the page is rendered at most once per
//! [`store::REFRESH`] and served from memory, so it can face the internet: a request costs a
//! lock and a clone.

use actix_web::http::header;
use actix_web::{web, HttpResponse};
use askama::Template;
use std::sync::{Arc, RwLock};

use super::error::ApiError;
use super::{blocking, AppState};
use crate::html::charts;
use crate::store::{self, PublicInsights};

/// The page and its JSON, as computed at one moment.
struct Rendered {
    at: chrono::DateTime<chrono::Utc>,
    json: web::Bytes,
    html: web::Bytes,
}

/// The public insights of a server that publishes them.
pub struct Public {
    /// k: the fewest distinct licenses behind a figure.
    min_licenses: u32,
    /// The names the `public_names` setting publishes (beside those marked in the dashboard).
    names: store::PublicNames,
    current: RwLock<Option<Arc<Rendered>>>,
    /// One computation at a time; requests meanwhile get the page before.
    computing: tokio::sync::Mutex<()>,
}

impl Public {
    pub fn new(min_licenses: u32, names: store::PublicNames) -> Public {
        Public { min_licenses, names, current: RwLock::new(None), computing: tokio::sync::Mutex::new(()) }
    }

    /// The names the `public_names` setting publishes.
    pub fn configured(&self) -> &store::PublicNames {
        &self.names
    }

    fn fresh(&self, now: chrono::DateTime<chrono::Utc>) -> Option<Arc<Rendered>> {
        let current = self.current.read().unwrap_or_else(|p| p.into_inner()).clone();
        current.filter(|r| now - r.at < store::REFRESH && r.at <= now)
    }
}

#[derive(Template)]
#[template(path = "public.html", config = "src/server/dashboard/askama.toml")]
struct PublicPage {
    view: PublicInsights,
    charts: Vec<(&'static str, String)>,
}

impl PublicPage {
    /// Each list with its title, for the tables under the charts.
    fn tables(&self) -> Vec<(&'static str, &[store::PublicFigure])> {
        let v = &self.view;
        vec![
            ("Popular API calls", &v.api_calls),
            ("Common commands", &v.commands),
            ("Feature adoption", &v.features),
            ("Module adoption", &v.modules),
            ("Organisation size", &v.organisation_sizes),
            ("Versions in use", &v.versions),
        ]
    }
}

/// Renders a publication read at `at` (it stays in memory for [`store::REFRESH`] from then).
fn render(view: PublicInsights, at: chrono::DateTime<chrono::Utc>) -> Result<Rendered, ApiError> {
    let json = serde_json::to_vec(&view).map_err(|e| ApiError::Internal(Box::new(e)))?;
    let bars = |list: &[store::PublicFigure], share: bool| -> Vec<(String, f64)> {
        list.iter().map(|f| (f.name.clone(), if share { f.share as f64 } else { f.count as f64 })).collect()
    };
    let charts = vec![
        ("Popular API calls (count)", charts::bars("Popular API calls", &bars(&view.api_calls, false))),
        ("Common commands (count)", charts::bars("Common commands", &bars(&view.commands, false))),
        (
            "Feature adoption (% of active customers)",
            charts::bars("Feature adoption", &bars(&view.features, true)),
        ),
        ("Module adoption (% of installs)", charts::bars("Module adoption", &bars(&view.modules, true))),
        (
            "Organisation size (% of installs)",
            charts::bars("Organisation size", &bars(&view.organisation_sizes, true)),
        ),
        ("Versions in use (% of installs)", charts::bars("Versions in use", &bars(&view.versions, true))),
    ];
    let html = PublicPage { view, charts }.render().map_err(|e| ApiError::Internal(Box::new(e)))?;
    Ok(Rendered { at, json: json.into(), html: html.into() })
}

/// The current figures: from memory while fresh, else computed (once, whoever asks).
async fn current(state: &AppState) -> Result<Arc<Rendered>, ApiError> {
    let public = state.public.as_ref().ok_or_else(|| ApiError::NotFound("no such route".into()))?;
    let now = (state.clock)();
    if let Some(r) = public.fresh(now) {
        return Ok(r);
    }
    let _one = public.computing.lock().await;
    if let Some(r) = public.fresh(now) {
        return Ok(r);
    }
    let (store, k, names) = (state.store.clone(), public.min_licenses, public.names.clone());
    let view = blocking(move || Ok(store.public_insights(now, k, &names)?)).await?;
    let rendered = Arc::new(render(view, now)?);
    *public.current.write().unwrap_or_else(|p| p.into_inner()) = Some(rendered.clone());
    Ok(rendered)
}

/// The public, k-anonymous fleet figures (only when the operator publishes them).
#[utoipa::path(get, path = "/v1/insights", tag = "public", responses(
    (status = 200, body = crate::store::PublicInsights),
    (status = 404, description = "The operator does not publish insights", body = crate::protocol::ErrorBody),
    (status = 503, body = crate::protocol::ErrorBody),
))]
pub async fn json(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let r = current(&state).await?;
    Ok(HttpResponse::Ok()
        .content_type("application/json")
        .insert_header((header::CACHE_CONTROL, "public, max-age=300"))
        .body(r.json.clone()))
}

/// The public insights as a page.
#[utoipa::path(get, path = "/insights", tag = "public", responses(
    (status = 200, description = "The page", content_type = "text/html; charset=utf-8", body = String),
    (status = 404, description = "The operator does not publish insights", body = crate::protocol::ErrorBody),
    (status = 503, body = crate::protocol::ErrorBody),
))]
pub async fn page(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let r = current(&state).await?;
    Ok(HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "public, max-age=300"))
        .insert_header(("content-security-policy", super::dashboard::CONTENT_SECURITY_POLICY))
        .body(r.html.clone()))
}
