//! The dashboard's pages and actions, one handler per function, each with its template.

use actix_web::http::header;
use actix_web::{web, HttpMessage as _, HttpRequest, HttpResponse};
use askama::Template;
use serde::Deserialize;
use std::collections::BTreeMap;

use super::public_names::{public_toggles, PublicToggle};
use super::session::{self, Form, Session};
use super::{see_other, DashboardError, FormResponses, Page, PageResponses};
use crate::html::charts;
use crate::server::audit::Trail;
use crate::server::extract::AddressAdmitted;
use crate::server::insights::{tables, usage_kind, Table, DEFAULT_DAYS, MAX_DAYS};
use crate::server::{blocking, AppState};
use crate::store::{self, Period};

/// What every signed-in page shares: its title, the active menu entry and the form token.
pub struct Layout {
    pub title: String,
    pub nav: &'static str,
    pub csrf: String,
    /// A sentence about the last action, shown once.
    pub notice: Option<String>,
}

impl Layout {
    /// The menu's entries.
    pub fn menu(&self) -> &'static [(&'static str, &'static str, &'static str)] {
        &MENU
    }

    /// Whether `entry` is this page's menu entry.
    pub fn is_current(&self, entry: &str) -> bool {
        self.nav == entry
    }

    fn new(title: impl Into<String>, nav: &'static str, session: &Session) -> Layout {
        Layout { title: title.into(), nav, csrf: session.csrf.clone(), notice: None }
    }
}

/// The menu: (path, entry, label).
pub const MENU: [(&str, &str, &str); 7] = [
    ("/admin/overview", "overview", "Overview"),
    ("/admin/usage", "usage", "Usage"),
    ("/admin/performance", "performance", "Performance"),
    ("/admin/errors", "errors", "Errors"),
    ("/admin/environment", "environment", "Environment"),
    ("/admin/licenses", "licenses", "Licenses"),
    ("/admin/instances", "instances", "Instances"),
];

fn html(page: &impl Template) -> Page {
    Ok(HttpResponse::Ok().content_type("text/html; charset=utf-8").body(page.render()?))
}

fn period(state: &AppState, days: Option<u32>) -> Result<Period, DashboardError> {
    let days = days.unwrap_or(DEFAULT_DAYS);
    if !(1..=MAX_DAYS).contains(&days) {
        return Err(DashboardError::BadRequest(format!("days must be from 1 to {MAX_DAYS}")));
    }
    Ok(Period::ending((state.clock)(), days))
}

use crate::protocol::percent_encode as encode;

/// A listing's page link, checked: one the listing did not hand out is a 400.
fn cursor(text: Option<&str>) -> Result<Option<store::Cursor>, DashboardError> {
    text.filter(|c| !c.is_empty())
        .map(|c| {
            store::Cursor::decode(c)
                .ok_or_else(|| DashboardError::BadRequest("that page link is not one this list gave".into()))
        })
        .transpose()
}

/// The page shown for an error.
#[derive(Template)]
#[template(path = "error.html", config = "src/server/dashboard/askama.toml")]
pub struct ErrorPage {
    pub status: u16,
    pub message: String,
}

/// The dashboard's stylesheet (the only asset; no other origin is ever asked for anything).
#[utoipa::path(get, path = "/admin/assets/dashboard.css", tag = "dashboard", responses(
    (status = 200, content_type = "text/css; charset=utf-8", body = String),
))]
pub async fn stylesheet() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/css; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "public, max-age=3600"))
        .body(super::STYLESHEET)
}

/// The dashboard: to the overview (or, without a session, to sign in).
#[utoipa::path(get, path = "/admin/", tag = "dashboard", security(("dashboard_session" = [])), responses(
    (status = 303, description = "To /admin/overview, or without a session to /admin/sign-in"),
))]
pub async fn index(_session: Session) -> HttpResponse {
    see_other("/admin/overview")
}

#[derive(Template)]
#[template(path = "sign_in.html", config = "src/server/dashboard/askama.toml")]
pub struct SignInPage {
    pub error: Option<String>,
}

/// The sign-in page.
#[utoipa::path(get, path = "/admin/sign-in", tag = "dashboard", responses(
    (status = 200, content_type = "text/html; charset=utf-8", body = String),
))]
pub async fn sign_in_form() -> Page {
    html(&SignInPage { error: None })
}

#[derive(Deserialize, utoipa::ToSchema)]
pub struct SignInBody {
    token: String,
}

/// Signs in with the admin token: a new session, its cookie, and the overview. Counted against
/// the client address's rate limit first, like a check-in, so the token cannot be guessed at
/// speed.
/// Signs in with the admin token: a session cookie, then the overview.
#[utoipa::path(post, path = "/admin/sign-in", tag = "dashboard",
    request_body(content = SignInBody, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 303, description = "Signed in: a session cookie, and to the overview"),
        (status = 400, description = "The form does not read", content_type = "text/html; charset=utf-8", body = String),
        (status = 401, description = "Not the admin token: the sign-in page again", content_type = "text/html; charset=utf-8", body = String),
        (status = 429, description = "Over the address's rate limit", body = crate::protocol::ErrorBody),
        (status = 503, content_type = "text/html; charset=utf-8", body = String),
    ))]
pub async fn sign_in(
    _admitted: AddressAdmitted,
    req: HttpRequest,
    trail: Trail,
    state: web::Data<AppState>,
    body: web::Form<SignInBody>,
) -> Page {
    let Some(identity) = state.admin_tokens.identify(body.token.trim()) else {
        tracing::warn!("dashboard sign-in with a wrong token");
        let page = SignInPage { error: Some("That is not the admin token.".into()) };
        return Ok(HttpResponse::Unauthorized()
            .content_type("text/html; charset=utf-8")
            .body(page.render()?));
    };
    req.extensions_mut().insert(identity.clone());
    let token = session::random_token();
    let now = (state.clock)();
    let token_hash = session::hash(&token);
    let token_proof = state.admin_tokens.proof(&identity, &token_hash).unwrap_or_default();
    let row = store::DashboardSession {
        token_hash,
        csrf: session::random_token(),
        created_at: store::naive(now),
        expires_at: store::naive(now + session::LIFETIME),
        token_name: identity.name.to_string(),
        scope: identity.scope.as_str().to_owned(),
        token_proof,
    };
    let (store, audit) = (state.store.clone(), trail.audit(actix_web::http::StatusCode::SEE_OTHER));
    blocking(move || Ok(store.create_session(&row, now, Some(&audit))?)).await?;
    tracing::info!(token = %identity.name, "dashboard sign-in");
    let mut response = see_other("/admin/overview");
    response.add_cookie(&session::cookie(&req, token)).map_err(|e| DashboardError::Internal(Box::new(e)))?;
    Ok(response)
}

/// Ends the session.
#[utoipa::path(post, path = "/admin/sign-out", tag = "dashboard", security(("dashboard_session" = [])),
    request_body(content_type = "application/x-www-form-urlencoded", description = "The form token: `csrf`"),
    responses(FormResponses))]
pub async fn sign_out(
    req: HttpRequest,
    trail: Trail,
    state: web::Data<AppState>,
    form: Form<session::Token>,
) -> Page {
    let (store, audit) = (state.store.clone(), trail.audit(actix_web::http::StatusCode::SEE_OTHER));
    let hash = form.session.token_hash.clone();
    blocking(move || Ok(store.end_session(&hash, Some(&audit))?)).await?;
    let mut response = see_other("/admin/sign-in");
    response.add_cookie(&session::removal(&req)).map_err(|e| DashboardError::Internal(Box::new(e)))?;
    Ok(response)
}

/// Ends every dashboard session, this one too (audited): for a browser left signed in
/// elsewhere, or a token that may have leaked. It changes what others may do: full scope only.
#[utoipa::path(post, path = "/admin/sign-out-everywhere", tag = "dashboard", security(("dashboard_session" = [])),
    request_body(content_type = "application/x-www-form-urlencoded", description = "The form token: `csrf`"),
    responses(FormResponses))]
pub async fn sign_out_everywhere(
    req: HttpRequest,
    trail: Trail,
    state: web::Data<AppState>,
    form: Form<session::Token>,
) -> Page {
    form.session.may_change()?;
    let (store, audit) = (state.store.clone(), trail.audit(actix_web::http::StatusCode::SEE_OTHER));
    let ended = blocking(move || Ok(store.end_all_sessions(Some(&audit))?)).await?;
    tracing::info!(ended, token = %form.session.identity.name, "every dashboard session ended");
    let mut response = see_other("/admin/sign-in");
    response.add_cookie(&session::removal(&req)).map_err(|e| DashboardError::Internal(Box::new(e)))?;
    Ok(response)
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct DaysQuery {
    #[serde(default)]
    days: Option<u32>,
}

#[derive(Template)]
#[template(path = "overview.html", config = "src/server/dashboard/askama.toml")]
pub struct OverviewPage {
    pub layout: Layout,
    pub period: Period,
    pub active_chart: String,
    pub versions_chart: String,
    pub outcomes_chart: String,
    pub view: store::Overview,
    pub statuses: Vec<String>,
}

/// Active instances, adoption and outcomes, as charts and tables.
#[utoipa::path(get, path = "/admin/overview", tag = "dashboard", security(("dashboard_session" = [])),
    params(DaysQuery), responses(PageResponses))]
pub async fn overview(session: Session, state: web::Data<AppState>, q: web::Query<DaysQuery>) -> Page {
    let period = period(&state, q.days)?;
    let store = state.store.clone();
    let view = blocking(move || Ok(store.insights_overview(period)?)).await?;
    let labels: Vec<String> = view.days.iter().map(|d| d.day.format("%m-%d").to_string()).collect();
    let series = |key: &dyn Fn(&store::OverviewDay) -> f64| view.days.iter().map(key).collect::<Vec<f64>>();
    let mut tiers: Vec<String> = view.days.iter().flat_map(|d| d.by_tier.keys().cloned()).collect();
    tiers.sort();
    tiers.dedup();
    let mut lines = vec![("all".to_owned(), series(&|d| d.active as f64))];
    for tier in &tiers {
        lines.push((tier.clone(), series(&|d| d.by_tier.get(tier).copied().unwrap_or(0) as f64)));
    }
    let mut versions: Vec<String> = view.days.iter().flat_map(|d| d.by_version.keys().cloned()).collect();
    versions.sort();
    versions.dedup();
    let areas: Vec<(String, Vec<f64>)> = versions
        .iter()
        .map(|v| (v.clone(), series(&|d| d.by_version.get(v).copied().unwrap_or(0) as f64)))
        .collect();
    let mut outcomes: BTreeMap<String, i64> = BTreeMap::new();
    for d in &view.days {
        for (status, n) in &d.check_ins {
            *outcomes.entry(status.clone()).or_default() += n;
        }
    }
    let statuses: Vec<String> = outcomes.keys().cloned().collect();
    let bars: Vec<(String, f64)> = outcomes.into_iter().map(|(s, n)| (s, n as f64)).collect();
    html(&OverviewPage {
        layout: Layout::new("Overview", "overview", &session),
        period,
        active_chart: charts::line("Active installs per day, all and by tier", &labels, &lines),
        versions_chart: charts::stacked_area("Active installs per day by software version", &labels, &areas),
        outcomes_chart: charts::bars("Check-ins by outcome over the period", &bars),
        view,
        statuses,
    })
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct UsageQuery {
    #[serde(default)]
    days: Option<u32>,
    #[serde(default)]
    kind: Option<String>,
}

#[derive(Template)]
#[template(path = "usage.html", config = "src/server/dashboard/askama.toml")]
pub struct UsagePage {
    pub layout: Layout,
    pub period: Period,
    pub kind: &'static str,
    pub kinds: [(&'static str, &'static str); 4],
    pub chart: String,
    pub view: store::Usage,
    /// Per name of `view.names`: the public page's toggle, where this kind is published there.
    pub toggles: Vec<Option<PublicToggle>>,
    /// Whether the public insights are served at all.
    pub publishing: bool,
}

/// Usage per name of one kind.
#[utoipa::path(get, path = "/admin/usage", tag = "dashboard", security(("dashboard_session" = [])),
    params(UsageQuery), responses(PageResponses))]
pub async fn usage(session: Session, state: web::Data<AppState>, q: web::Query<UsageQuery>) -> Page {
    let period = period(&state, q.days)?;
    let kind = usage_kind(q.kind.as_deref().unwrap_or("feature"))?;
    let store = state.store.clone();
    let (view, marked) =
        blocking(move || Ok((store.insights_usage(period, kind)?, store.public_names()?))).await?;
    let toggles = public_toggles(&state, kind, view.names.iter().map(|n| n.name.as_str()), &marked);
    let top: Vec<(String, f64)> =
        view.names.iter().take(15).map(|n| (n.name.clone(), n.count as f64)).collect();
    html(&UsagePage {
        layout: Layout::new("Usage", "usage", &session),
        period,
        kind,
        kinds: [
            ("feature", "Features"),
            ("api", "API calls"),
            ("command", "Commands"),
            ("ui_action", "UI actions"),
        ],
        chart: charts::bars("Most used names over the period", &top),
        view,
        toggles,
        publishing: state.public.is_some(),
    })
}

#[derive(Template)]
#[template(path = "performance.html", config = "src/server/dashboard/askama.toml")]
pub struct PerformancePage {
    pub layout: Layout,
    pub period: Period,
    pub chart: String,
    pub view: store::Performance,
}

/// Routes: requests, errors, percentiles.
#[utoipa::path(get, path = "/admin/performance", tag = "dashboard", security(("dashboard_session" = [])),
    params(DaysQuery), responses(PageResponses))]
pub async fn performance(session: Session, state: web::Data<AppState>, q: web::Query<DaysQuery>) -> Page {
    let period = period(&state, q.days)?;
    let store = state.store.clone();
    let view = blocking(move || Ok(store.insights_performance(period)?)).await?;
    let mut slowest: Vec<(String, f64)> = view
        .routes
        .iter()
        .map(|r| (format!("{} {}", r.overall.method, r.overall.route), r.overall.p95_ms))
        .collect();
    slowest.sort_by(|a, b| b.1.total_cmp(&a.1));
    slowest.truncate(15);
    html(&PerformancePage {
        layout: Layout::new("Performance", "performance", &session),
        period,
        chart: charts::bars("Slowest routes by p95 latency (ms)", &slowest),
        view,
    })
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ErrorsQuery {
    #[serde(default)]
    days: Option<u32>,
    #[serde(default)]
    since_version: Option<String>,
}

#[derive(Template)]
#[template(path = "errors.html", config = "src/server/dashboard/askama.toml")]
pub struct ErrorsPage {
    pub layout: Layout,
    pub period: Period,
    pub since_version: String,
    pub view: store::Errors,
}

/// Error groups across installs.
#[utoipa::path(get, path = "/admin/errors", tag = "dashboard", security(("dashboard_session" = [])),
    params(ErrorsQuery), responses(PageResponses))]
pub async fn errors(session: Session, state: web::Data<AppState>, q: web::Query<ErrorsQuery>) -> Page {
    let period = period(&state, q.days)?;
    let since = q.since_version.clone().filter(|v| !v.trim().is_empty());
    let store = state.store.clone();
    let lookup = since.clone();
    let view = blocking(move || Ok(store.insights_errors(period, lookup.as_deref())?)).await?;
    html(&ErrorsPage {
        layout: Layout::new("Errors", "errors", &session),
        period,
        since_version: since.unwrap_or_default(),
        view,
    })
}

#[derive(Template)]
#[template(path = "environment.html", config = "src/server/dashboard/askama.toml")]
pub struct EnvironmentPage {
    pub layout: Layout,
    pub period: Period,
    pub sections: Vec<EnvironmentSection>,
    pub view: store::EnvironmentView,
}

/// One dimension of the environment view.
pub struct EnvironmentSection {
    pub heading: &'static str,
    pub chart: String,
    pub figures: Vec<store::Share>,
    /// Per figure, the public page's toggle, for a dimension the public page lists.
    pub toggles: Option<Vec<Option<PublicToggle>>>,
}

/// Organisation sizes, modules, platforms, health.
#[utoipa::path(get, path = "/admin/environment", tag = "dashboard", security(("dashboard_session" = [])),
    params(DaysQuery), responses(PageResponses))]
pub async fn environment(session: Session, state: web::Data<AppState>, q: web::Query<DaysQuery>) -> Page {
    let period = period(&state, q.days)?;
    let store = state.store.clone();
    let (view, marked) =
        blocking(move || Ok((store.insights_environment(period)?, store.public_names()?))).await?;
    let section = |heading: &'static str, list: &Vec<store::Share>, public: Option<&str>| {
        let items: Vec<(String, f64)> = list.iter().map(|s| (s.name.clone(), s.installs as f64)).collect();
        let toggles =
            public.map(|kind| public_toggles(&state, kind, list.iter().map(|s| s.name.as_str()), &marked));
        EnvironmentSection { heading, chart: charts::bars(heading, &items), figures: list.clone(), toggles }
    };
    let sections = vec![
        section("Organisation size (users)", &view.user_count_ranges, None),
        section("Modules enabled", &view.modules, Some("module")),
        section("Operating systems", &view.os, None),
        section("Architectures", &view.arch, None),
        section("Health checks", &view.health, None),
    ];
    html(&EnvironmentPage {
        layout: Layout::new("Environment", "environment", &session),
        period,
        sections,
        view,
    })
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct LicensesQuery {
    #[serde(default)]
    search: Option<String>,
    #[serde(default)]
    tier: Option<String>,
    /// `active` or `revoked`.
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    cursor: Option<String>,
}

#[derive(Template)]
#[template(path = "licenses.html", config = "src/server/dashboard/askama.toml")]
pub struct LicensesPage {
    pub layout: Layout,
    pub search: String,
    pub tier: String,
    pub status: String,
    pub licenses: Vec<store::LicenseRecord>,
    pub next: Option<String>,
    pub risks: store::LicensesView,
    pub heat_map: String,
}

/// Licenses: search, filters, pages, and at-risk lists.
#[utoipa::path(get, path = "/admin/licenses", tag = "dashboard", security(("dashboard_session" = [])),
    params(LicensesQuery), responses(PageResponses))]
pub async fn licenses(session: Session, state: web::Data<AppState>, q: web::Query<LicensesQuery>) -> Page {
    let q = q.into_inner();
    let tier = q.tier.filter(|t| !t.is_empty());
    if let Some(t) = &tier {
        t.parse::<crate::license::Tier>().map_err(|e| DashboardError::BadRequest(e.to_string()))?;
    }
    let revoked = match q.status.as_deref().unwrap_or("") {
        "" => None,
        "active" => Some(false),
        "revoked" => Some(true),
        other => {
            return Err(DashboardError::BadRequest(format!(
                "status must be active or revoked, not {other:?}"
            )))
        }
    };
    let cursor = cursor(q.cursor.as_deref())?;
    let filter = store::LicenseFilter {
        tier: tier.clone(),
        revoked,
        id: None,
        search: q.search.clone(),
        checked_in: None,
    };
    let (store, now) = (state.store.clone(), (state.clock)());
    let period = Period::ending(now, DEFAULT_DAYS);
    let (page, risks) = blocking(move || {
        Ok((
            store.list_licenses(now, &filter, 50, cursor.as_ref())?,
            store.insights_licenses(period, now, 1)?,
        ))
    })
    .await?;
    let columns: Vec<String> =
        risks.expirations_per_week.iter().map(|w| w.week_start.format("%m-%d").to_string()).collect();
    let rows: Vec<(String, Vec<f64>)> = crate::license::Tier::ALL
        .iter()
        .map(|t| {
            let counts = risks
                .expirations_per_week
                .iter()
                .map(|w| w.by_tier.get(t.as_str()).copied().unwrap_or(0) as f64)
                .collect();
            (t.as_str().to_owned(), counts)
        })
        .collect();
    let next = page.next.as_ref().map(|c| {
        let mut query = vec![format!("cursor={}", encode(&c.encode()))];
        query.extend(q.search.as_deref().map(|s| format!("search={}", encode(s))));
        query.extend(tier.as_deref().map(|t| format!("tier={}", encode(t))));
        query.extend(q.status.as_deref().map(|s| format!("status={}", encode(s))));
        format!("/admin/licenses?{}", query.join("&"))
    });
    html(&LicensesPage {
        layout: Layout::new("Licenses", "licenses", &session),
        search: q.search.unwrap_or_default(),
        tier: tier.unwrap_or_default(),
        status: q.status.unwrap_or_default(),
        licenses: page.items,
        next,
        risks,
        heat_map: charts::heat_map("Licenses expiring per week, by tier", &columns, &rows),
    })
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct LicenseQuery {
    #[serde(default)]
    days: Option<u32>,
    /// The action just done, to say so.
    #[serde(default)]
    done: Option<String>,
}

#[derive(Template)]
#[template(path = "license.html", config = "src/server/dashboard/askama.toml")]
pub struct LicensePage {
    pub layout: Layout,
    pub detail: store::LicenseDetail,
    pub can_renew: bool,
}

/// One license: instances, history, telemetry, and its actions.
#[utoipa::path(get, path = "/admin/licenses/{license_id}", tag = "dashboard", security(("dashboard_session" = [])),
    params(("license_id" = String, Path), LicenseQuery), responses(PageResponses))]
pub async fn license(
    session: Session,
    state: web::Data<AppState>,
    path: web::Path<String>,
    q: web::Query<LicenseQuery>,
) -> Page {
    let period = period(&state, q.days)?;
    let id = path.into_inner();
    let (store, now) = (state.store.clone(), (state.clock)());
    let lookup = id.clone();
    let detail =
        blocking(move || Ok(store.license_detail(&lookup, now, period)?)).await?.ok_or_else(|| {
            crate::server::error::ApiError::NotFound(format!("no license {id:?} is known to this server"))
        })?;
    let mut layout = Layout::new(format!("License {}", detail.license.licensee), "licenses", &session);
    layout.notice = q.done.as_deref().map(|done| match done {
        "revoked" => "The license is revoked: each instance's next check-in answers revoked.".to_owned(),
        "reinstated" => "The license is reinstated.".to_owned(),
        "renewed" => "A new key was issued: each instance receives it with its next check-in.".to_owned(),
        "released" => "The seat was released.".to_owned(),
        _ => "Done.".to_owned(),
    });
    html(&LicensePage { layout, can_renew: state.issuer.is_some(), detail })
}

#[derive(Deserialize, utoipa::ToSchema)]
pub struct RevokeForm {
    #[serde(default)]
    reason: String,
}

fn license_path(id: &str, done: &str) -> String {
    format!("/admin/licenses/{}?done={done}", encode(id))
}

/// Revokes the license.
#[utoipa::path(post, path = "/admin/licenses/{license_id}/revoke", tag = "dashboard", security(("dashboard_session" = [])),
    params(("license_id" = String, Path)),
    request_body(content = RevokeForm, content_type = "application/x-www-form-urlencoded", description = "With the form token, `csrf`"),
    responses(FormResponses))]
pub async fn revoke(
    trail: Trail,
    state: web::Data<AppState>,
    path: web::Path<String>,
    form: Form<RevokeForm>,
) -> Page {
    form.session.may_change()?;
    let id = path.into_inner();
    let uuid = uuid::Uuid::parse_str(&id)
        .map_err(|_| DashboardError::BadRequest(format!("{id:?} is not a license id")))?;
    let reason = Some(form.data.reason.trim().chars().take(500).collect::<String>())
        .filter(|r| !r.is_empty())
        .map(|r| crate::privacy::scrub(&r).0);
    let (store, now) = (state.store.clone(), (state.clock)());
    let event = crate::server::webhooks::license_revocation(&id, Some(reason.as_deref()), now);
    let audit = trail.audit(actix_web::http::StatusCode::SEE_OTHER);
    blocking(move || Ok(store.revoke_by_id(uuid, reason, now, &[event], Some(&audit))?)).await?;
    tracing::info!(license_id = %id, "license revoked from the dashboard");
    Ok(see_other(&license_path(&id, "revoked")))
}

/// Lifts the license's revocation.
#[utoipa::path(post, path = "/admin/licenses/{license_id}/reinstate", tag = "dashboard", security(("dashboard_session" = [])),
    params(("license_id" = String, Path)),
    request_body( content_type = "application/x-www-form-urlencoded", description = "With the form token, `csrf`"),
    responses(FormResponses))]
pub async fn reinstate(
    trail: Trail,
    state: web::Data<AppState>,
    path: web::Path<String>,
    form: Form<session::Token>,
) -> Page {
    form.session.may_change()?;
    let id = path.into_inner();
    let (store, now) = (state.store.clone(), (state.clock)());
    let lookup = id.clone();
    let event = crate::server::webhooks::license_revocation(&id, None, now);
    let audit = trail.audit(actix_web::http::StatusCode::SEE_OTHER);
    if !blocking(move || Ok(store.set_revocation(&lookup, None, &[event], Some(&audit))?)).await? {
        return Err(crate::server::error::ApiError::NotFound(format!(
            "no license {id:?} is known to this server"
        ))
        .into());
    }
    tracing::info!(license_id = %id, "license reinstated from the dashboard");
    Ok(see_other(&license_path(&id, "reinstated")))
}

#[derive(Deserialize, utoipa::ToSchema)]
pub struct RenewForm {
    /// `YYYY-MM-DD` (00:00 UTC), or empty to keep the expiry.
    #[serde(default)]
    expires: String,
    #[serde(default)]
    perpetual: Option<String>,
    /// Empty to keep the seats.
    #[serde(default)]
    seats: String,
    /// Comma- or space-separated; empty keeps the features unless `clear_features` is set.
    #[serde(default)]
    features: String,
    #[serde(default)]
    clear_features: Option<String>,
}

/// Renews or changes the license (a new key the next check-ins deliver).
#[utoipa::path(post, path = "/admin/licenses/{license_id}/renew", tag = "dashboard", security(("dashboard_session" = [])),
    params(("license_id" = String, Path)),
    request_body(content = RenewForm, content_type = "application/x-www-form-urlencoded", description = "With the form token, `csrf`"),
    responses(FormResponses))]
pub async fn renew(
    trail: Trail,
    state: web::Data<AppState>,
    path: web::Path<String>,
    form: Form<RenewForm>,
) -> Page {
    form.session.may_change()?;
    let id = path.into_inner();
    let issuer = state.issuer.clone().ok_or_else(|| {
        DashboardError::BadRequest(
            "this server holds no issuing key; configure LICENSOR_ISSUING_KEY to renew".into(),
        )
    })?;
    let f = form.data;
    let expiry = if f.perpetual.is_some() {
        Some(crate::license::Expiry::Perpetual)
    } else if f.expires.trim().is_empty() {
        None
    } else {
        let day = chrono::NaiveDate::parse_from_str(f.expires.trim(), "%Y-%m-%d")
            .map_err(|_| DashboardError::BadRequest(format!("{:?} is not a date (YYYY-MM-DD)", f.expires)))?;
        Some(crate::license::Expiry::At(day.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc()))
    };
    let seats = match f.seats.trim() {
        "" => None,
        s => Some(
            s.parse::<u32>()
                .map_err(|_| DashboardError::BadRequest(format!("{s:?} is not a number of seats")))?,
        ),
    };
    let features = if f.clear_features.is_some() {
        Some(Vec::new())
    } else {
        let list: Vec<String> = f
            .features
            .split([',', ' '])
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        (!list.is_empty()).then_some(list)
    };
    let changes = crate::license::Changes { expiry, seats, features, tier: None };
    if changes.is_empty() {
        return Err(DashboardError::BadRequest("give a new expiry, seats or features".into()));
    }
    let (store, now) = (state.store.clone(), (state.clock)());
    let lookup = id.clone();
    let audit = trail.audit(actix_web::http::StatusCode::SEE_OTHER);
    blocking(move || crate::server::handlers::renew(&store, &issuer, &lookup, changes, now, Some(&audit)))
        .await?;
    tracing::info!(license_id = %id, "license renewed from the dashboard");
    Ok(see_other(&license_path(&id, "renewed")))
}

/// Frees the instance's seat.
#[utoipa::path(post, path = "/admin/licenses/{license_id}/instances/{instance_id}/release", tag = "dashboard", security(("dashboard_session" = [])),
    params(("license_id" = String, Path), ("instance_id" = String, Path)),
    request_body( content_type = "application/x-www-form-urlencoded", description = "With the form token, `csrf`"),
    responses(FormResponses))]
pub async fn release(
    trail: Trail,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
    form: Form<session::Token>,
) -> Page {
    form.session.may_change()?;
    let (id, instance) = path.into_inner();
    let (store, now) = (state.store.clone(), (state.clock)());
    let (l, i) = (id.clone(), instance.clone());
    let event = crate::server::webhooks::instance_released(&l, &i, "admin", now);
    let audit = trail.audit(actix_web::http::StatusCode::SEE_OTHER);
    let released = blocking(move || Ok(store.release_instance(&l, &i, now, &[event], Some(&audit))?)).await?;
    if released.is_none() {
        return Err(crate::server::error::ApiError::NotFound(format!(
            "no instance {instance:?} of license {id:?}"
        ))
        .into());
    }
    tracing::info!(license_id = %id, instance_id = %instance, "seat released from the dashboard");
    Ok(see_other(&license_path(&id, "released")))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct InstancesQuery {
    #[serde(default)]
    license_id: Option<String>,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    cursor: Option<String>,
}

#[derive(Template)]
#[template(path = "instances.html", config = "src/server/dashboard/askama.toml")]
pub struct InstancesPage {
    pub layout: Layout,
    pub license_id: String,
    pub status: String,
    pub statuses: Vec<&'static str>,
    pub instances: Vec<store::InstanceRecord>,
    pub next: Option<String>,
}

/// Instances: filters and pages.
#[utoipa::path(get, path = "/admin/instances", tag = "dashboard", security(("dashboard_session" = [])),
    params(InstancesQuery), responses(PageResponses))]
pub async fn instances(session: Session, state: web::Data<AppState>, q: web::Query<InstancesQuery>) -> Page {
    let q = q.into_inner();
    let status = q.status.filter(|s| !s.is_empty());
    if let Some(s) = &status {
        crate::protocol::CheckInStatus::parse(s)
            .ok_or_else(|| DashboardError::BadRequest(format!("{s:?} is not a check-in status")))?;
    }
    let license_id = q.license_id.filter(|l| !l.is_empty());
    let cursor = cursor(q.cursor.as_deref())?;
    let filter = store::InstanceFilter { license_id: license_id.clone(), status: status.clone() };
    let store = state.store.clone();
    let page = blocking(move || Ok(store.list_instances(&filter, 50, cursor.as_ref())?)).await?;
    let next = page.next.as_ref().map(|c| {
        let mut query = vec![format!("cursor={}", encode(&c.encode()))];
        query.extend(license_id.as_deref().map(|l| format!("license_id={}", encode(l))));
        query.extend(status.as_deref().map(|s| format!("status={}", encode(s))));
        format!("/admin/instances?{}", query.join("&"))
    });
    html(&InstancesPage {
        layout: Layout::new("Instances", "instances", &session),
        license_id: license_id.unwrap_or_default(),
        status: status.unwrap_or_default(),
        statuses: crate::protocol::CheckInStatus::ALL.iter().map(|s| s.as_str()).collect(),
        instances: page.items,
        next,
    })
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ExportQuery {
    #[serde(default)]
    days: Option<u32>,
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    since_version: Option<String>,
}

/// `/admin/export/{view}.csv`: a view's table as CSV, for the dashboard's links (the session
/// stands in for the admin API's bearer token).
#[utoipa::path(get, path = "/admin/export/{view}.csv", tag = "dashboard", security(("dashboard_session" = [])),
    params(("view" = String, Path, description = "overview, usage, performance, errors, environment or licenses"), ExportQuery),
    responses(
        (status = 200, content_type = "text/csv; charset=utf-8", body = String),
        (status = 303, description = "No session: to /admin/sign-in"),
        (status = 400, content_type = "text/html; charset=utf-8", body = String),
        (status = 404, description = "No such view", content_type = "text/html; charset=utf-8", body = String),
        (status = 503, content_type = "text/html; charset=utf-8", body = String),
    ))]
pub async fn export(
    _session: Session,
    state: web::Data<AppState>,
    path: web::Path<String>,
    q: web::Query<ExportQuery>,
) -> Page {
    let period = period(&state, q.days)?;
    let name = path.into_inner();
    let kind = q.kind.as_deref().map(usage_kind).transpose()?.unwrap_or("feature");
    let since = q.since_version.clone().filter(|v| !v.is_empty());
    let (store, now) = (state.store.clone(), (state.clock)());
    let view = name.clone();
    let table: Table = blocking(move || {
        Ok(match view.as_str() {
            "overview" => tables::overview(&store.insights_overview(period)?),
            "usage" => tables::usage(&store.insights_usage(period, kind)?),
            "performance" => tables::performance(&store.insights_performance(period)?),
            "errors" => tables::errors(&store.insights_errors(period, since.as_deref())?),
            "environment" => tables::environment(&store.insights_environment(period)?),
            "licenses" => tables::licenses(&store.insights_licenses(period, now, 1_000)?),
            other => {
                return Err(crate::server::error::ApiError::NotFound(format!("no view {other:?}")));
            }
        })
    })
    .await?;
    Ok(HttpResponse::Ok()
        .content_type("text/csv; charset=utf-8")
        .insert_header((
            header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"licensor-{name}-{}-{}.csv\"", period.from, period.until),
        ))
        .body(table.to_csv()?))
}
