//! The vendor's insights under the admin token: one handler per view, each answering JSON or,
//! with `?format=csv`, the view's table as CSV; one license's detail; and running a job now.
//! The figures come from `store` (which reads the roll-ups); this module only checks queries
//! and renders.

use actix_web::{web, HttpResponse};
use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

use super::auth::Admin;
use super::error::ApiError;
use super::{blocking, AppState};
use crate::store::{self, Period};

/// The longest period a view covers, in days.
pub const MAX_DAYS: u32 = 365;
/// The default period.
pub const DEFAULT_DAYS: u32 = 30;

/// How a view answers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    #[default]
    Json,
    Csv,
}

/// The query every view takes.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct ViewQuery {
    #[serde(default)]
    days: Option<u32>,
    /// json (the default) or csv.
    #[serde(default)]
    #[param(inline)]
    format: Format,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct UsageQuery {
    #[serde(default)]
    days: Option<u32>,
    /// json (the default) or csv.
    #[serde(default)]
    #[param(inline)]
    format: Format,
    /// feature, api_call (or api), command or ui_action.
    kind: String,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct ErrorsQuery {
    #[serde(default)]
    days: Option<u32>,
    /// json (the default) or csv.
    #[serde(default)]
    #[param(inline)]
    format: Format,
    /// Only the groups first seen since this version first ran.
    #[serde(default)]
    since_version: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct LicensesQuery {
    #[serde(default)]
    days: Option<u32>,
    /// json (the default) or csv.
    #[serde(default)]
    #[param(inline)]
    format: Format,
    #[serde(default)]
    limit: Option<usize>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct DetailQuery {
    #[serde(default)]
    days: Option<u32>,
}

/// The period of `days` (1 to 365, default 30) ending today.
fn period(state: &AppState, days: Option<u32>) -> Result<Period, ApiError> {
    let days = days.unwrap_or(DEFAULT_DAYS);
    if !(1..=MAX_DAYS).contains(&days) {
        return Err(ApiError::bad_request("invalid_query", format!("days must be from 1 to {MAX_DAYS}")));
    }
    Ok(Period::ending((state.clock)(), days))
}

/// The usage kind named in a query: the protocol's names, and `api_call` for `api`.
pub fn usage_kind(kind: &str) -> Result<&'static str, ApiError> {
    match kind {
        "feature" => Ok("feature"),
        "api" | "api_call" => Ok("api"),
        "command" => Ok("command"),
        "ui_action" => Ok("ui_action"),
        other => Err(ApiError::bad_request(
            "invalid_query",
            format!("kind must be feature, api_call, command or ui_action, not {other:?}"),
        )),
    }
}

/// A table: its header and rows, for CSV.
pub struct Table {
    pub header: Vec<&'static str>,
    pub rows: Vec<Vec<String>>,
}

impl Table {
    fn new(header: &[&'static str]) -> Table {
        Table { header: header.to_vec(), rows: Vec::new() }
    }

    fn push(&mut self, row: Vec<String>) {
        self.rows.push(row);
    }

    /// The table as CSV (RFC 4180, with a header line), safe to open in a spreadsheet.
    pub fn to_csv(&self) -> Result<Vec<u8>, ApiError> {
        let failed = |e: csv::Error| ApiError::Internal(Box::new(e));
        let mut writer = crate::csv_safe::writer(Vec::new());
        crate::csv_safe::write_record(&mut writer, &self.header).map_err(failed)?;
        for row in &self.rows {
            crate::csv_safe::write_record(&mut writer, row).map_err(failed)?;
        }
        writer.into_inner().map_err(|e| ApiError::Internal(Box::new(e.into_error())))
    }
}

fn opt<T: ToString>(value: Option<T>) -> String {
    value.map(|v| v.to_string()).unwrap_or_default()
}

fn time(t: chrono::DateTime<chrono::Utc>) -> String {
    crate::time::format(&t)
}

/// The tables of each view (what `?format=csv` answers), shared with the dashboard's links.
pub mod tables {
    use super::*;

    pub fn overview(v: &store::Overview) -> Table {
        let mut t = Table::new(&["day", "metric", "dimension", "value"]);
        for d in &v.days {
            let day = d.day.to_string();
            let mut row = |metric: &str, dimension: &str, value: i64| {
                t.push(vec![day.clone(), metric.into(), dimension.into(), value.to_string()])
            };
            row("active", "all", d.active);
            for (tier, n) in &d.by_tier {
                row("active.tier", tier, *n);
            }
            for (version, n) in &d.by_version {
                row("active.version", version, *n);
            }
            row("instances.new", "all", d.new);
            row("instances.lapsed", "all", d.lapsed);
            for (status, n) in &d.check_ins {
                row("check_ins", status, *n);
            }
        }
        t
    }

    pub fn usage(v: &store::Usage) -> Table {
        let mut t = Table::new(&["name", "count", "installs", "share", "previous_count", "change", "rising"]);
        for n in &v.names {
            let rising = v.rising.iter().any(|r| r.name == n.name);
            t.push(vec![
                n.name.clone(),
                n.count.to_string(),
                n.installs.to_string(),
                n.share.to_string(),
                n.previous_count.to_string(),
                opt(n.change),
                rising.to_string(),
            ]);
        }
        t
    }

    pub fn performance(v: &store::Performance) -> Table {
        let mut t = Table::new(&[
            "method",
            "route",
            "version",
            "requests",
            "errors",
            "error_rate",
            "p50_ms",
            "p95_ms",
            "p99_ms",
            "max_ms",
            "percentiles",
        ]);
        let mut row = |version: &str, r: &store::RouteFigures| {
            t.push(vec![
                r.method.clone(),
                r.route.clone(),
                version.to_owned(),
                r.requests.to_string(),
                r.errors.to_string(),
                r.error_rate.to_string(),
                r.p50_ms.to_string(),
                r.p95_ms.to_string(),
                r.p99_ms.to_string(),
                r.max_ms.to_string(),
                serde_json::to_value(r.percentiles)
                    .map(|v| v.as_str().unwrap_or_default().to_owned())
                    .unwrap_or_default(),
            ])
        };
        for route in &v.routes {
            row("", &route.overall);
            for (version, figures) in &route.by_version {
                row(version, figures);
            }
        }
        t
    }

    pub fn errors(v: &store::Errors) -> Table {
        let mut t = Table::new(&[
            "fingerprint",
            "type",
            "message",
            "installs",
            "count",
            "first_seen",
            "last_seen",
            "versions",
            "first_seen_version",
        ]);
        for g in &v.groups {
            t.push(vec![
                g.fingerprint.clone(),
                g.error_type.clone(),
                g.message.clone(),
                g.installs.to_string(),
                g.count.to_string(),
                time(g.first_seen),
                time(g.last_seen),
                g.versions.join(" "),
                opt(g.first_seen_version.as_ref()),
            ]);
        }
        t
    }

    pub fn environment(v: &store::EnvironmentView) -> Table {
        let mut t = Table::new(&["metric", "name", "installs", "share"]);
        let lists = [
            ("user_count_range", &v.user_count_ranges),
            ("module", &v.modules),
            ("os", &v.os),
            ("arch", &v.arch),
            ("health", &v.health),
        ];
        for (metric, list) in lists {
            for s in list {
                t.push(vec![metric.into(), s.name.clone(), s.installs.to_string(), s.share.to_string()]);
            }
        }
        if let Some(mean) = v.uptime_hours_mean {
            t.push(vec!["uptime_hours_mean".into(), String::new(), v.installs.to_string(), mean.to_string()]);
        }
        t
    }

    pub fn licenses(v: &store::LicensesView) -> Table {
        let mut t = Table::new(&[
            "license_id",
            "licensee",
            "tier",
            "seats",
            "in_use",
            "peak",
            "expires_at",
            "revoked",
            "risks",
        ]);
        let risks = |id: &str| {
            let r = &v.at_risk;
            let lists = [
                ("overdue", &r.overdue),
                ("in_grace", &r.in_grace),
                ("expiring", &r.expiring),
                ("at_seat_limit", &r.at_seat_limit),
                ("telemetry_refused", &r.telemetry_refused),
            ];
            lists
                .iter()
                .filter(|(_, list)| list.iter().any(|e| e.license_id == id))
                .map(|(name, _)| *name)
                .collect::<Vec<_>>()
                .join(" ")
        };
        for l in &v.licenses {
            t.push(vec![
                l.license_id.clone(),
                l.licensee.clone(),
                l.tier.clone(),
                l.seats.to_string(),
                l.in_use.to_string(),
                l.peak.to_string(),
                opt(l.expires_at.map(time)),
                l.revoked.to_string(),
                risks(&l.license_id),
            ]);
        }
        t
    }
}

/// Answers a view as JSON, or its table as CSV named after the view and its period.
fn answer<V: serde::Serialize>(
    name: &str,
    period: &Period,
    format: Format,
    view: &V,
    table: impl FnOnce(&V) -> Table,
) -> Result<HttpResponse, ApiError> {
    Ok(match format {
        Format::Json => HttpResponse::Ok().json(view),
        Format::Csv => HttpResponse::Ok()
            .content_type("text/csv; charset=utf-8")
            .insert_header((
                "content-disposition",
                format!("attachment; filename=\"licensor-{name}-{}-{}.csv\"", period.from, period.until),
            ))
            .body(table(view).to_csv()?),
    })
}

/// Reads a view over the period of `days` on the blocking pool and answers it in `format`.
async fn view<V: serde::Serialize + Send + 'static>(
    state: &AppState,
    days: Option<u32>,
    format: Format,
    name: &str,
    read: impl FnOnce(&store::Store, Period) -> Result<V, store::StoreError> + Send + 'static,
    table: fn(&V) -> Table,
) -> Result<HttpResponse, ApiError> {
    let period = period(state, days)?;
    let store = state.store.clone();
    let view = blocking(move || Ok(read(&store, period)?)).await?;
    answer(name, &period, format, &view, table)
}

/// Active instances per day, by tier and version; new and lapsed instances; check-in outcomes.
#[utoipa::path(get, path = "/v1/admin/insights/overview", tag = "insights", security(("admin_token" = [])),
    params(ViewQuery),
    responses(
        (status = 200, description = "The view as JSON, or with format=csv its table as CSV", content(
            (store::Overview = "application/json"),
            (String = "text/csv; charset=utf-8"),
        )),
        super::error::AdminErrors,
    ))]
pub(super) async fn overview(
    _admin: Admin,
    state: web::Data<AppState>,
    web::Query(q): web::Query<ViewQuery>,
) -> Result<HttpResponse, ApiError> {
    view(&state, q.days, q.format, "overview", |s, p| s.insights_overview(p), tables::overview).await
}

/// Usage of one kind per name: counts, installs, share of active installs, change, and what rises.
#[utoipa::path(get, path = "/v1/admin/insights/usage", tag = "insights", security(("admin_token" = [])),
    params(UsageQuery),
    responses(
        (status = 200, description = "The view as JSON, or with format=csv its table as CSV", content(
            (store::Usage = "application/json"),
            (String = "text/csv; charset=utf-8"),
        )),
        super::error::AdminErrors,
    ))]
pub(super) async fn usage(
    _admin: Admin,
    state: web::Data<AppState>,
    web::Query(q): web::Query<UsageQuery>,
) -> Result<HttpResponse, ApiError> {
    let kind = usage_kind(&q.kind)?;
    let name = format!("usage-{kind}");
    view(&state, q.days, q.format, &name, move |s, p| s.insights_usage(p, kind), tables::usage).await
}

/// Per route: requests, error rate and merged percentiles, overall and by version.
#[utoipa::path(get, path = "/v1/admin/insights/performance", tag = "insights", security(("admin_token" = [])),
    params(ViewQuery),
    responses(
        (status = 200, description = "The view as JSON, or with format=csv its table as CSV", content(
            (store::Performance = "application/json"),
            (String = "text/csv; charset=utf-8"),
        )),
        super::error::AdminErrors,
    ))]
pub(super) async fn performance(
    _admin: Admin,
    state: web::Data<AppState>,
    web::Query(q): web::Query<ViewQuery>,
) -> Result<HttpResponse, ApiError> {
    view(&state, q.days, q.format, "performance", |s, p| s.insights_performance(p), tables::performance).await
}

/// Error groups across installs, and which are new since a version.
#[utoipa::path(get, path = "/v1/admin/insights/errors", tag = "insights", security(("admin_token" = [])),
    params(ErrorsQuery),
    responses(
        (status = 200, description = "The view as JSON, or with format=csv its table as CSV", content(
            (store::Errors = "application/json"),
            (String = "text/csv; charset=utf-8"),
        )),
        super::error::AdminErrors,
    ))]
pub(super) async fn errors(
    _admin: Admin,
    state: web::Data<AppState>,
    web::Query(q): web::Query<ErrorsQuery>,
) -> Result<HttpResponse, ApiError> {
    let since = q.since_version;
    let read = move |s: &store::Store, p| s.insights_errors(p, since.as_deref());
    view(&state, q.days, q.format, "errors", read, tables::errors).await
}

/// Organisation sizes, modules, OS and architecture, health and uptime.
#[utoipa::path(get, path = "/v1/admin/insights/environment", tag = "insights", security(("admin_token" = [])),
    params(ViewQuery),
    responses(
        (status = 200, description = "The view as JSON, or with format=csv its table as CSV", content(
            (store::EnvironmentView = "application/json"),
            (String = "text/csv; charset=utf-8"),
        )),
        super::error::AdminErrors,
    ))]
pub(super) async fn environment(
    _admin: Admin,
    state: web::Data<AppState>,
    web::Query(q): web::Query<ViewQuery>,
) -> Result<HttpResponse, ApiError> {
    view(&state, q.days, q.format, "environment", |s, p| s.insights_environment(p), tables::environment).await
}

/// Seat use per license, licenses at risk, expirations per week ahead.
#[utoipa::path(get, path = "/v1/admin/insights/licenses", tag = "insights", security(("admin_token" = [])),
    params(LicensesQuery),
    responses(
        (status = 200, description = "The view as JSON, or with format=csv its table as CSV", content(
            (store::LicensesView = "application/json"),
            (String = "text/csv; charset=utf-8"),
        )),
        super::error::AdminErrors,
    ))]
pub(super) async fn licenses(
    _admin: Admin,
    state: web::Data<AppState>,
    web::Query(q): web::Query<LicensesQuery>,
) -> Result<HttpResponse, ApiError> {
    let limit = super::extract::page_size(q.limit)?;
    let now = (state.clock)();
    let read = move |s: &store::Store, p| s.insights_licenses(p, now, limit);
    view(&state, q.days, q.format, "licenses", read, tables::licenses).await
}

/// `GET /v1/admin/licenses/{license_id}`: one license, its instances, history and telemetry.
#[utoipa::path(get, path = "/v1/admin/licenses/{license_id}", tag = "licenses", security(("admin_token" = [])),
    params(("license_id" = String, Path), DetailQuery),
    responses(
        (status = 200, body = store::LicenseDetail),
        (status = 404, description = "No such license", body = crate::protocol::ErrorBody),
        super::error::AdminErrors,
    ))]
pub(super) async fn license_detail(
    _admin: Admin,
    state: web::Data<AppState>,
    path: web::Path<String>,
    web::Query(q): web::Query<DetailQuery>,
) -> Result<HttpResponse, ApiError> {
    let period = period(&state, q.days)?;
    let license_id = path.into_inner();
    let (store, now) = (state.store.clone(), (state.clock)());
    let id = license_id.clone();
    let detail = blocking(move || Ok(store.license_detail(&id, now, period)?)).await?;
    match detail {
        Some(detail) => Ok(HttpResponse::Ok().json(detail)),
        None => Err(ApiError::NotFound(format!("no license {license_id:?} is known to this server"))),
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RunBody {
    /// The day to roll up, `YYYY-MM-DD` (UTC); not after today.
    day: String,
}

/// A job run.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct JobRun {
    job: &'static str,
    /// What the run was claimed under (the day, for the roll-up).
    run_key: String,
    /// What it did.
    outcome: String,
    duration_ms: u64,
}

/// `POST /v1/admin/jobs/rollup/runs`: rolls up a day now, claimed like the nightly run.
#[utoipa::path(post, path = "/v1/admin/jobs/rollup/runs", tag = "jobs", security(("admin_token" = [])),
    request_body(content = RunBody, content_type = "application/json"),
    responses(
        (status = 200, body = JobRun),
        (status = 409, description = "A run of that day is under way", body = crate::protocol::ErrorBody),
        (status = 413, body = crate::protocol::ErrorBody),
        (status = 415, body = crate::protocol::ErrorBody),
        super::error::WriteErrors,
    ))]
pub(super) async fn run_rollup(
    _admin: super::auth::FullAdmin,
    trail: super::audit::Trail,
    state: web::Data<AppState>,
    super::extract::Json(body): super::extract::Json<RunBody>,
) -> Result<HttpResponse, ApiError> {
    let day = NaiveDate::parse_from_str(&body.day, "%Y-%m-%d").map_err(|_| {
        ApiError::bad_request("invalid_request", format!("day: {:?} is not a date (YYYY-MM-DD)", body.day))
    })?;
    let (store, now) = (state.store.clone(), (state.clock)());
    if day > now.date_naive() {
        return Err(ApiError::bad_request("invalid_request", format!("day: {day} is in the future")));
    }
    let started = std::time::Instant::now();
    let audit = trail.audit(actix_web::http::StatusCode::OK);
    let result = blocking(move || Ok(super::jobs::run_rollup_of(&store, day, now, Some(&audit))?)).await;
    let label = match &result {
        Ok(super::jobs::RunOutcome::Ran(_)) => "ran",
        Ok(super::jobs::RunOutcome::Skipped) => "claimed_elsewhere",
        Err(_) => "failed",
    };
    state.service.metrics.job_ran(super::jobs::ROLLUP, label, started.elapsed().as_secs_f64());
    match result? {
        super::jobs::RunOutcome::Ran(outcome) => {
            tracing::info!(job = super::jobs::ROLLUP, %day, "job run on request: {outcome}");
            Ok(HttpResponse::Ok().json(JobRun {
                job: super::jobs::ROLLUP,
                run_key: day.to_string(),
                outcome,
                duration_ms: started.elapsed().as_millis() as u64,
            }))
        }
        super::jobs::RunOutcome::Skipped => Err(ApiError::Conflict {
            code: "job_running",
            message: format!("a roll-up of {day} is under way; try again when it has finished"),
        }),
    }
}
