//! The OpenAPI 3.1 document of every route, generated from the handlers' own types (utoipa) and
//! served at `/openapi.json`. `docs/openapi.json` is this document committed, and a test keeps
//! the two equal, so a change to the API shows in review as a change to the contract.

use actix_web::HttpResponse;
use std::sync::OnceLock;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{dashboard, handlers, insights, installs, licenses, public};

/// The document's description of the API.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "licensor",
        description = "The license server's HTTP API: check-ins of licensed deployments, the vendor's \
            admin API and dashboard, the public insights, and health. Every error is \
            `{\"error\":{\"code\":...,\"message\":...}}` (HTML pages for the dashboard). \
            The wire contract of check-ins is docs/protocol-v1.md.",
        license(name = "MIT OR Apache-2.0"),
    ),
    paths(
        handlers::healthz,
        handlers::readyz,
        handlers::metrics,
        handlers::check_in,
        handlers::deactivate,
        installs::list,
        installs::release,
        handlers::import_usage,
        handlers::issue_license,
        handlers::list_licenses,
        handlers::update_license,
        licenses::set_license_terms,
        licenses::register_licenses,
        licenses::install_keys,
        licenses::reset_install_key,
        handlers::revoke_license,
        handlers::reinstate_license,
        handlers::list_instances,
        handlers::telemetry_summary,
        handlers::erase_telemetry,
        handlers::release_instance,
        handlers::end_sessions,
        insights::overview,
        insights::usage,
        insights::performance,
        insights::errors,
        insights::environment,
        insights::licenses,
        insights::license_detail,
        insights::run_rollup,
        public::json,
        public::page,
        dashboard::handlers::stylesheet,
        dashboard::handlers::index,
        dashboard::handlers::sign_in_form,
        dashboard::handlers::sign_in,
        dashboard::handlers::sign_out,
        dashboard::handlers::sign_out_everywhere,
        dashboard::handlers::overview,
        dashboard::handlers::usage,
        dashboard::handlers::performance,
        dashboard::handlers::errors,
        dashboard::handlers::environment,
        dashboard::handlers::licenses,
        dashboard::handlers::license,
        dashboard::handlers::revoke,
        dashboard::handlers::reinstate,
        dashboard::handlers::renew,
        dashboard::handlers::release,
        dashboard::public_names::public_name,
        dashboard::handlers::instances,
        dashboard::handlers::export,
        openapi_json,
        super::audit::list,
        super::webhooks::create,
        super::webhooks::list,
        super::webhooks::delete,
        super::webhooks::deliveries,
        super::webhooks::redeliver,
    ),
    modifiers(&Security),
    tags(
        (name = "check-ins", description = "What a licensed deployment calls"),
        (name = "licenses", description = "The vendor's licenses (admin token)"),
        (name = "instances", description = "The deployments that checked in (admin token)"),
        (name = "insights", description = "Fleet insights from the daily roll-ups (admin token)"),
        (name = "jobs", description = "Scheduled jobs run on request (admin token)"),
        (name = "audit", description = "The log of admin actions (admin token)"),
        (name = "webhooks", description = "Signed event deliveries to the vendor's endpoints (admin token)"),
        (name = "public", description = "The k-anonymous public insights, when published"),
        (name = "dashboard", description = "The vendor's web dashboard (session cookie)"),
        (name = "health", description = "Probes, metrics and this document"),
    ),
)]
pub struct ApiDoc;

/// The two ways in: the admin API's bearer token and the dashboard's session cookie.
struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "admin_token",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        components.add_security_scheme(
            "dashboard_session",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::new(dashboard::session::COOKIE))),
        );
    }
}

/// The document as pretty JSON, built once.
pub fn document() -> &'static str {
    static DOCUMENT: OnceLock<String> = OnceLock::new();
    DOCUMENT.get_or_init(|| {
        let mut text = ApiDoc::openapi().to_pretty_json().expect("the API document serialises");
        text.push('\n');
        text
    })
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "health", responses(
    (status = 200, description = "The OpenAPI 3.1 document of this API", content_type = "application/json", body = Object),
))]
pub(super) async fn openapi_json() -> HttpResponse {
    HttpResponse::Ok().content_type("application/json").body(document())
}
