//! actix-web integration (feature `actix`) for applications that serve HTTP with actix-web:
//! [`Track`], a middleware that tracks every request by its matched route pattern (never the
//! raw path), status and duration, with 5xx answers counted as errors; and [`scope`], the
//! telemetry routes an application mounts behind its own authentication, with its privacy page
//! (what is and is not collected, and the controls the tier allows).
//!
//! Requests whose `Host` is exempt (localhost, loopback, private or link-local addresses,
//! `*.local`) are not tracked. An instance classed as a developer's machine (loopback) that
//! serves any other host reclassifies itself as a deployment ([`Licensing::served_host`]).

use actix_web::body::MessageBody;
use actix_web::dev::{Service, ServiceRequest, ServiceResponse, Transform};
use actix_web::http::{Method, StatusCode};
use actix_web::{web, HttpResponse};
use rustc_hash::FxHashMap;
use serde::Deserialize;
use serde_json::json;
use std::cell::RefCell;
use std::future::{ready, Future, Ready};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use super::policy;
use super::requests::RouteCells;
use super::telemetry::Telemetry;
use super::Licensing;

/// The middleware: `App::new().wrap(Track::new(licensing.clone()))`.
#[derive(Clone)]
pub struct Track {
    licensing: Licensing,
}

impl Track {
    pub fn new(licensing: Licensing) -> Track {
        Track { licensing }
    }
}

impl<S, B> Transform<S, ServiceRequest> for Track
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<B>;
    type Error = actix_web::Error;
    type Transform = TrackService<S>;
    type InitError = ();
    type Future = Ready<Result<Self::Transform, Self::InitError>>;

    fn new_transform(&self, service: S) -> Self::Future {
        let telemetry = self.licensing.telemetry();
        // A developer's machine (loopback) collects nothing, but watches the hosts it serves:
        // one that is not local makes it a real deployment (see `Licensing::served_host`).
        let watch = self.licensing.watches_hosts().then(|| self.licensing.clone());
        let worker = (telemetry.enabled() || watch.is_some())
            .then(|| Rc::new(WorkerState::new(telemetry.clone(), watch)));
        ready(Ok(TrackService { service, worker }))
    }
}

/// The middleware's service; see [`Track`].
pub struct TrackService<S> {
    service: S,
    /// `None` where nothing is collected and no host is watched (exempt hosts, the basic
    /// level): requests pass untouched.
    worker: Option<Rc<WorkerState>>,
}

/// One worker thread's tracking state. Actix builds one service per worker thread and never
/// moves it to another, so nothing here needs a lock or an atomic count, and the request path
/// touches only a few cache lines of its own.
struct WorkerState {
    telemetry: Telemetry,
    /// The handle to tell of a host that is not local, while the instance is classed as a
    /// developer's machine and its collector is dormant.
    watch: Option<super::Licensing>,
    /// Reads the CPU's time-stamp counter where it is invariant (about half the cost of
    /// `Instant::now` on these machines), else the system's monotonic clock.
    clock: quanta::Clock,
    last_host: RefCell<LastHost>,
    /// This worker's cells per route pattern and method. The patterns come from the
    /// application's route table, so the map grows no larger than that.
    routes: RefCell<FxHashMap<Box<str>, [RouteEntry; METHODS.len()]>>,
}

/// The methods a route's cells are kept for in [`WorkerState::routes`]; requests with another
/// (extension) method take the collector's general path.
const METHODS: [Method; 9] = [
    Method::GET,
    Method::POST,
    Method::PUT,
    Method::DELETE,
    Method::PATCH,
    Method::HEAD,
    Method::OPTIONS,
    Method::CONNECT,
    Method::TRACE,
];

/// A (route, method)'s cells, as far as this worker knows them.
#[derive(Default)]
enum RouteEntry {
    /// Not seen by this worker yet.
    #[default]
    Unknown,
    /// Past the collector's route bound, which never frees a place: its requests count as
    /// overflow.
    Overflow,
    Cells(RouteCells),
}

/// The last `Host` this worker saw, as raw bytes, and whether it is local. Nearly every
/// request of a deployment names the same host, so the per-request check is one header
/// look-up and a byte comparison; parsing and the policy run only when the host changes.
#[derive(Default)]
struct LastHost {
    bytes: Vec<u8>,
    local: bool,
}

impl<S, B> Service<ServiceRequest> for TrackService<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<B>;
    type Error = actix_web::Error;
    type Future = TrackFuture<S::Future>;

    fn poll_ready(&self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.service.poll_ready(cx)
    }

    fn call(&self, req: ServiceRequest) -> Self::Future {
        let tracked = match &self.worker {
            Some(worker) if !worker.local_host(&req) && worker.collecting(&req) => Some(Tracked {
                started: worker.clock.raw(),
                method: match METHODS.iter().position(|m| m == req.method()) {
                    Some(index) => MethodKey::Listed(index),
                    None => MethodKey::Other(req.method().clone()),
                },
                worker: worker.clone(),
            }),
            _ => None,
        };
        TrackFuture { fut: self.service.call(req), tracked }
    }
}

/// What a tracked request carries until its response is ready.
struct Tracked {
    /// The clock's raw reading at the start.
    started: u64,
    method: MethodKey,
    worker: Rc<WorkerState>,
}

/// A request's method: its place in [`METHODS`], or the method itself where it has none.
enum MethodKey {
    Listed(usize),
    Other(Method),
}

impl MethodKey {
    fn as_str(&self) -> &str {
        match self {
            MethodKey::Listed(index) => METHODS[*index].as_str(),
            MethodKey::Other(method) => method.as_str(),
        }
    }
}

pin_project_lite::pin_project! {
    /// The middleware's future: the inner service's, timed. No allocation per request.
    pub struct TrackFuture<F> {
        #[pin]
        fut: F,
        tracked: Option<Tracked>,
    }
}

impl<F, B> Future for TrackFuture<F>
where
    F: Future<Output = Result<ServiceResponse<B>, actix_web::Error>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let poll = this.fut.poll(cx);
        // The response is looked at where it lies, never moved out and back; what the request
        // carries is taken only once it is ready (a pending poll leaves it in place).
        if let Poll::Ready(result) = &poll {
            if let Some(tracked) = this.tracked.take() {
                tracked.finish(result);
            }
        }
        poll
    }
}

impl Tracked {
    /// Records the request once its response (or error) is ready.
    fn finish<B>(self, result: &Result<ServiceResponse<B>, actix_web::Error>) {
        let worker = &self.worker;
        let nanos = worker.clock.delta_as_nanos(self.started, worker.clock.raw());
        let (status, pattern) = match result {
            Ok(res) => (res.status(), res.request().match_pattern()),
            Err(e) => (e.as_response_error().status_code(), None),
        };
        // An unmatched path is never recorded as itself (it may hold anything).
        let route = pattern.as_deref().unwrap_or("{unmatched}");
        worker.record(&self.method, route, status.as_u16(), nanos);
        if status.is_server_error() {
            let message = format!("{} {route} answered {}", self.method.as_str(), status.as_u16());
            worker.telemetry.track_error_parts::<&str>("http", &message, &[], chrono::Utc::now());
        }
    }
}

impl WorkerState {
    fn new(telemetry: Telemetry, watch: Option<super::Licensing>) -> WorkerState {
        WorkerState {
            telemetry,
            watch,
            // The first clock of a process calibrates the counter (under a millisecond here);
            // the rest reuse that calibration.
            clock: quanta::Clock::new(),
            last_host: RefCell::default(),
            routes: RefCell::default(),
        }
    }

    /// Whether the request's host (from `Host`, or the URI's authority under HTTP/2) is local.
    /// Inlined into the middleware's generic service, which the application's crate compiles:
    /// a call through the dynamic linker's table costs more here than the check itself.
    #[inline]
    fn local_host(&self, req: &ServiceRequest) -> bool {
        let host = match req.headers().get(actix_web::http::header::HOST) {
            Some(value) => value.as_bytes(),
            None => match req.uri().authority() {
                Some(authority) => authority.as_str().as_bytes(),
                None => return false,
            },
        };
        let Ok(mut last) = self.last_host.try_borrow_mut() else {
            return host_is_local(host);
        };
        if last.bytes != host {
            last.local = host_is_local(host);
            last.bytes.clear();
            last.bytes.extend_from_slice(host);
        }
        last.local
    }

    /// Whether the collector records this request (whose host is not local). A dormant one
    /// records nothing, unless this request wakes it: the first host that is not local makes a
    /// developer's machine a deployment.
    #[inline]
    fn collecting(&self, req: &ServiceRequest) -> bool {
        if self.telemetry.enabled() {
            return true;
        }
        let Some(licensing) = &self.watch else { return false };
        let host = match req.headers().get(actix_web::http::header::HOST) {
            Some(value) => value.to_str().ok(),
            None => req.uri().authority().map(|a| a.as_str()),
        };
        if let Some(host) = host {
            licensing.served_host(strip_port(host));
        }
        self.telemetry.enabled()
    }

    /// Records one request in this worker's cells for its route and method, found with one
    /// hash of the pattern; the collector is asked for them the first time only.
    #[inline]
    fn record(&self, method: &MethodKey, route: &str, status: u16, nanos: u64) {
        let requests = &self.telemetry.requests;
        let (&MethodKey::Listed(index), Ok(mut routes)) = (method, self.routes.try_borrow_mut()) else {
            return requests.track_request(method.as_str(), route, status, Duration::from_nanos(nanos));
        };
        let entries = match routes.get_mut(route) {
            Some(entries) => entries,
            None => routes.entry(route.into()).or_default(),
        };
        if let RouteEntry::Unknown = entries[index] {
            entries[index] = match requests.route(method.as_str(), route) {
                Some(cells) => RouteEntry::Cells(cells),
                None => RouteEntry::Overflow,
            };
        }
        match &entries[index] {
            RouteEntry::Cells(cells) => cells.record(nanos as f64 / 1e6, status),
            _ => requests.overflowed(),
        }
    }
}

/// Whether a host (as sent, perhaps with a port) is exempt from telemetry (loopback, private,
/// link-local, `*.local`). A host that is not text is not: such a request is tracked like any
/// other.
fn host_is_local(host: &[u8]) -> bool {
    std::str::from_utf8(host).is_ok_and(|host| policy::host_exemption(strip_port(host)).is_some())
}

/// `example.com:8080` → `example.com`; `[::1]:8080` → `[::1]`; a bare IPv6 address stays.
fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.find(']').map_or(host, |end| &host[..=end]);
    }
    match host.rsplit_once(':') {
        Some((name, port)) if !name.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    }
}

/// The telemetry routes, to mount behind the application's own authentication:
/// `GET /telemetry/summary?hours=24`, `POST /telemetry/flush`, `POST /telemetry/preview` (the
/// next batch exactly, memory included), `POST /telemetry/ui-actions`
/// (a browser front end reports UI actions through its back end), the local dashboard,
/// `GET /telemetry/dashboard`, and the privacy page, `GET /telemetry/privacy`, whose forms post
/// to `POST /telemetry/choice`.
///
/// They answer only requests whose `Host` is an address, `localhost`, or the host of
/// `LICENSOR_INSTANCE_URL` ([`host_allowed`]); others get 421.
pub fn scope(
    licensing: Licensing,
) -> actix_web::Scope<
    impl actix_web::dev::ServiceFactory<
        actix_web::dev::ServiceRequest,
        Config = (),
        Response = actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    let instance_host = licensing.instance_host();
    web::scope("/telemetry")
        .wrap(actix_web::middleware::from_fn(
            move |req: ServiceRequest, next: actix_web::middleware::Next<actix_web::body::BoxBody>| {
                let allowed = host_allowed(&request_host(&req), instance_host.as_deref());
                async move {
                    if allowed {
                        next.call(req).await.map(ServiceResponse::map_into_left_body)
                    } else {
                        Ok(req.into_response(misdirected()).map_into_right_body())
                    }
                }
            },
        ))
        .app_data(web::Data::new(licensing))
        .app_data(web::JsonConfig::default().limit(64 * 1024).error_handler(|err, _| malformed(err)))
        .app_data(web::QueryConfig::default().error_handler(|err, _| malformed(err)))
        .app_data(web::FormConfig::default().limit(1024).error_handler(|err, _| malformed(err)))
        .route("/summary", web::get().to(summary))
        .route("/flush", web::post().to(flush))
        .route("/preview", web::post().to(preview))
        .route("/ui-actions", web::post().to(ui_actions))
        .route("/privacy", web::get().to(privacy::page))
        .route("/privacy-rules", web::get().to(privacy::rules))
        .route("/dashboard", web::get().to(dashboard))
        .route("/choice", web::post().to(privacy::choose))
}

/// The host a request names: its `Host` header, else (HTTP/2) its URI's authority.
pub fn request_host(req: &ServiceRequest) -> String {
    req.headers()
        .get(actix_web::http::header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| req.uri().authority().map(|a| a.to_string()))
        .unwrap_or_default()
}

/// Whether a request for `host` (as sent, perhaps with a port) may reach the deployment's own
/// pages and telemetry routes: an IP address, `localhost` (or a name under it), or the host of
/// the deployment's URL. Any other name is refused, so that a page on another site whose name
/// was made to resolve to this machine (DNS rebinding) cannot read or post them: such a page's
/// requests carry its own name. A request that names no host at all (HTTP/1.0, a test) comes
/// from no browser, and is answered.
pub fn host_allowed(host: &str, instance_host: Option<&str>) -> bool {
    let host = strip_port(host.trim()).trim_end_matches('.').to_ascii_lowercase();
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    host.is_empty()
        || (bare.parse::<std::net::IpAddr>().is_ok()
            || host == "localhost"
            || host.ends_with(".localhost")
            || instance_host.is_some_and(|h| h == host))
}

/// The answer to a request for a host these routes do not serve.
pub fn misdirected() -> HttpResponse {
    html_page(
        StatusCode::MISDIRECTED_REQUEST,
        "Not this host",
        "<p>This deployment's telemetry pages answer only for its own address: an IP address, localhost, \
         or the host of LICENSOR_INSTANCE_URL. Set LICENSOR_INSTANCE_URL to the URL this deployment is \
         reached at.</p>",
    )
}

/// A page of the deployment's own, with the headers that keep it to its origin: never cached,
/// never framed, no script, nothing fetched from elsewhere.
pub fn html_page(status: StatusCode, title: &str, body: &str) -> HttpResponse {
    HttpResponse::build(status)
        .content_type("text/html; charset=utf-8")
        .insert_header((actix_web::http::header::CACHE_CONTROL, "no-store"))
        .insert_header(("Content-Security-Policy", super::dashboard::CSP))
        .body(super::dashboard::page(title, body))
}

/// The local dashboard (see [`crate::client::dashboard`]).
async fn dashboard(licensing: web::Data<Licensing>) -> HttpResponse {
    let l = licensing.get_ref().clone();
    match web::block(move || l.dashboard()).await {
        Ok(Ok(d)) => html_page(StatusCode::OK, "Telemetry on this deployment", &super::dashboard::render(&d)),
        Ok(Err(e)) => {
            tracing::error!(target: "licensor", "the local dashboard failed: {}", crate::error_chain::Chain(&e));
            error(StatusCode::INTERNAL_SERVER_ERROR, "internal", "the local telemetry store failed")
        }
        Err(_) => error(StatusCode::INTERNAL_SERVER_ERROR, "internal", "the local telemetry store failed"),
    }
}

/// The longest window a summary covers: the local store keeps hourly rows for two days and
/// daily ones for sixty.
const MAX_LOCAL_SUMMARY_HOURS: u32 = 90 * 24;
/// The most UI actions one report may carry, and the most one action may count.
const MAX_UI_ACTIONS: usize = 100;
const MAX_UI_COUNT: u64 = 10_000;

fn error(status: StatusCode, code: &str, message: &str) -> HttpResponse {
    HttpResponse::build(status).json(json!({ "error": { "code": code, "message": message } }))
}

fn disabled(licensing: &Licensing) -> HttpResponse {
    HttpResponse::Ok().json(json!({ "enabled": false, "reason": licensing.mode().off_reason() }))
}

/// A body or query that does not parse: the API's error shape, not actix's text.
fn malformed(err: impl std::fmt::Display + std::fmt::Debug + 'static) -> actix_web::Error {
    let message = err.to_string();
    actix_web::error::InternalError::from_response(
        err,
        error(StatusCode::BAD_REQUEST, "malformed_request", &message),
    )
    .into()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SummaryQuery {
    hours: Option<u32>,
}

async fn summary(licensing: web::Data<Licensing>, query: web::Query<SummaryQuery>) -> HttpResponse {
    let hours = query.hours.unwrap_or(24);
    if hours == 0 || hours > MAX_LOCAL_SUMMARY_HOURS {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_hours",
            &format!("hours must be between 1 and {MAX_LOCAL_SUMMARY_HOURS}"),
        );
    }
    let l = licensing.get_ref().clone();
    match web::block(move || l.summary(hours)).await {
        Ok(Ok(Some(summary))) => {
            HttpResponse::Ok().json(json!({ "enabled": true, "hours": hours, "summary": summary }))
        }
        Ok(Ok(None)) => disabled(&licensing),
        Ok(Err(e)) => {
            tracing::error!(target: "licensor", "telemetry summary failed: {}", crate::error_chain::Chain(&e));
            error(StatusCode::INTERNAL_SERVER_ERROR, "internal", "the local telemetry store failed")
        }
        Err(_) => error(StatusCode::INTERNAL_SERVER_ERROR, "internal", "the local telemetry store failed"),
    }
}

async fn flush(licensing: web::Data<Licensing>) -> HttpResponse {
    if !licensing.telemetry().enabled() {
        return disabled(&licensing);
    }
    let l = licensing.get_ref().clone();
    match web::block(move || l.flush()).await {
        Ok(Ok(())) => HttpResponse::Ok().json(json!({ "flushed": true })),
        Ok(Err(e)) => {
            tracing::error!(target: "licensor", "telemetry flush failed: {}", crate::error_chain::Chain(&e));
            error(StatusCode::INTERNAL_SERVER_ERROR, "internal", "the local telemetry store failed")
        }
        Err(_) => error(StatusCode::INTERNAL_SERVER_ERROR, "internal", "the local telemetry store failed"),
    }
}

/// The next batch, exactly as the next check-in will send it, with the application's memory
/// flushed into it first; it is taken into the outbox, so a second call answers the same bytes.
/// A POST, since it changes what the outbox holds. The batch id travels in `Licensor-Batch-Id`.
async fn preview(licensing: web::Data<Licensing>) -> HttpResponse {
    let l = licensing.get_ref().clone();
    match web::block(move || l.preview()).await {
        Ok(Ok(Some(preview))) => HttpResponse::Ok()
            .content_type("application/json")
            .insert_header(("Licensor-Batch-Id", preview.batch_id))
            .body(preview.payload),
        Ok(Ok(None)) => disabled(&licensing),
        Ok(Err(e)) => {
            tracing::error!(target: "licensor", "telemetry preview failed: {}", crate::error_chain::Chain(&e));
            error(StatusCode::INTERNAL_SERVER_ERROR, "internal", "the local telemetry store failed")
        }
        Err(_) => error(StatusCode::INTERNAL_SERVER_ERROR, "internal", "the local telemetry store failed"),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UiActions {
    actions: Vec<UiAction>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UiAction {
    name: String,
    #[serde(default = "one")]
    count: u64,
}

fn one() -> u64 {
    1
}

async fn ui_actions(licensing: web::Data<Licensing>, body: web::Json<UiActions>) -> HttpResponse {
    let actions = body.into_inner().actions;
    if actions.len() > MAX_UI_ACTIONS {
        return error(
            StatusCode::BAD_REQUEST,
            "too_many_actions",
            &format!("at most {MAX_UI_ACTIONS} actions per report, got {}", actions.len()),
        );
    }
    for (i, a) in actions.iter().enumerate() {
        let name = a.name.trim();
        if name.is_empty() || name.chars().count() > crate::protocol::MAX_NAME_LEN {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_action",
                &format!("actions[{i}].name must be 1 to {} characters", crate::protocol::MAX_NAME_LEN),
            );
        }
        if a.count == 0 || a.count > MAX_UI_COUNT {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_action",
                &format!("actions[{i}].count must be between 1 and {MAX_UI_COUNT}"),
            );
        }
    }
    let counted: u64 = actions.iter().map(|a| a.count).sum();
    for a in &actions {
        // Names are scrubbed of PII when the collector is drained, like every other name.
        licensing.telemetry().counters.add(crate::protocol::UsageKind::UiAction, a.name.trim(), a.count);
    }
    let recorded = licensing.telemetry().enabled();
    HttpResponse::Accepted()
        .json(json!({ "accepted": actions.len(), "events": counted, "recorded": recorded }))
}

#[cfg(test)]
mod tests {
    use super::strip_port;

    #[test]
    fn ports_are_stripped_from_every_host_form() {
        assert_eq!(strip_port("example.com:8080"), "example.com");
        assert_eq!(strip_port("example.com"), "example.com");
        assert_eq!(strip_port("[::1]:8080"), "[::1]");
        assert_eq!(strip_port("[fe80::1]"), "[fe80::1]");
        assert_eq!(strip_port("10.0.0.1:80"), "10.0.0.1");
        assert_eq!(strip_port("::1"), "::1");
    }
}

/// The privacy page: server-rendered HTML that works without JavaScript and asks nothing of any
/// other origin (its style is inline, it has no script, font or image).
mod privacy {
    use actix_web::http::{header, StatusCode};
    use actix_web::{web, HttpRequest, HttpResponse};
    use serde::Deserialize;

    use crate::client::choice::Choice;
    use crate::client::{Licensing, SaveChoiceError};
    use crate::license::Tier;

    use crate::html::escape as esc;

    fn html(status: StatusCode, body: String) -> HttpResponse {
        super::html_page(status, "Telemetry and privacy", &body)
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub(super) struct PageQuery {
        saved: Option<String>,
    }

    const FULL: &[&str] = &[
        "how often features, API calls, commands and UI actions were used (counts per name)",
        "request counts, errors and latency percentiles per route pattern (never a path with ids, never a query string)",
        "errors, grouped: type, message and at most 5 stack lines, scrubbed of personal data",
        "how many sessions there were, how long, and in which hours of the day",
        "the environment: application version, operating system, architecture, a user-count range \
         (such as 11-50), enabled modules, uptime, last sync result and health checks",
    ];
    const BASIC: &[&str] =
        &["the environment only: application version, operating system, architecture, a user-count range, \
         enabled modules, uptime, last sync result and health checks"];
    const NEVER: &[&str] = &[
        "names, e-mail addresses, phone numbers, card or account numbers, access keys: every text is \
         scrubbed before it is stored here, and again by the license server",
        "IP addresses: neither this deployment nor the license server stores one",
        "user ids: distinct users are counted here with a secret per-install salt, and only a range leaves",
        "request or response bodies, paths with ids, query strings, headers",
    ];

    fn list(items: &[&str]) -> String {
        let items: String = items.iter().map(|i| format!("<li>{}</li>", esc(i))).collect();
        format!("<ul>{items}</ul>")
    }

    pub(super) async fn page(licensing: web::Data<Licensing>, query: web::Query<PageQuery>) -> HttpResponse {
        let license = licensing.license();
        let tier = license.as_ref().map(|l| l.tier);
        let mut body = String::new();
        if let Some(saved) = query.saved.as_deref() {
            body.push_str(&format!(
                "<section class=\"saved\" role=\"status\"><p>Saved: telemetry <strong>{}</strong>. The \
                 application applies it at its next start.</p></section>",
                esc(saved)
            ));
        }
        body.push_str(&format!("<section><h2>Now</h2><p>{}</p>", esc(&licensing.mode().describe())));
        if let Some(l) = &license {
            body.push_str(&format!("<p>License: {} ({} tier).</p>", esc(&l.licensee), l.tier));
        }
        for notice in licensing.notices() {
            body.push_str(&format!("<p>Note: {}</p>", esc(&notice)));
        }
        body.push_str("</section>");
        body.push_str(&format!(
            "<section><h2>What is sent</h2><p>At the full level:</p>{}<p>At the basic level (Enterprise):</p>{}\
             <p>Everything is aggregated on this machine first: counts and percentiles, never single events.</p>\
             <p>Air-gapped (Enterprise, telemetry disabled): nothing is sent, and no connection is made. The same \
             figures (or basic health only) are kept here until an operator exports a signed usage report \
             (<code>licensor telemetry export --signed</code>): a readable file that leaves only when a person \
             carries it to the vendor.</p></section>",
            list(FULL),
            list(BASIC)
        ));
        body.push_str(&format!(
            "<section><h2>What is never sent</h2>{}<p>What the scrubber masks, what it keeps, what it \
             cannot catch, and how the vendor's public figures protect each customer: \
             <a href=\"privacy-rules\">the privacy rules</a> (text).</p></section>",
            list(NEVER)
        ));
        body.push_str(
            "<section><h2>See every byte</h2><p>The figures kept here: <a href=\"summary\">the last 24 hours</a> \
             (JSON). On the server running this application, <code>licensor telemetry preview</code> prints the \
             next batch exactly as it will be sent, and <code>licensor telemetry sent --raw</code> a sent one \
             exactly as it was sent.</p>",
        );
        if let Some(url) = &licensing.public_insights_url() {
            body.push_str(&format!(
                "<p>What the vendor publishes from all installs together (never one install alone): \
                 <a href=\"{}\" rel=\"noreferrer\">public insights</a>.</p>",
                esc(url)
            ));
        }
        body.push_str("</section>");
        body.push_str(&controls(&licensing, tier));
        html(StatusCode::OK, body)
    }

    /// The privacy rules (`docs/privacy.md`), as the library was built with them: served from
    /// this deployment, so reading them asks nothing of another origin.
    pub(super) async fn rules() -> HttpResponse {
        HttpResponse::Ok()
            .content_type("text/plain; charset=utf-8")
            .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .body(include_str!("../../docs/privacy.md"))
    }

    /// The controls the tier allows: all three on Enterprise; on Community and Pro, why none.
    fn controls(licensing: &Licensing, tier: Option<Tier>) -> String {
        let mut out = String::from("<section><h2>Your choice</h2>");
        match tier {
            Some(Tier::Enterprise) => {
                let saved = licensing.saved_choice().ok().flatten().unwrap_or(Choice::Full);
                out.push_str("<p>Saved in this deployment's data directory and applied at its next start:</p>");
                for (choice, label) in [
                    (Choice::Full, "Send usage and health"),
                    (Choice::Basic, "Basic health only"),
                    (Choice::Disabled, "Disable: air-gapped, usage reported by signed file"),
                    (Choice::DisabledBasic, "Disable: air-gapped, basic health reported by signed file"),
                ] {
                    out.push_str(&format!(
                        "<form method=\"post\" action=\"choice\"><input type=\"hidden\" name=\"choice\" \
                         value=\"{}\"><button type=\"submit\" aria-pressed=\"{}\">{label}</button></form>",
                        choice.as_str(),
                        choice == saved
                    ));
                }
            }
            Some(tier) => out.push_str(&format!(
                "<p>The {tier} tier's license requires usage telemetry: it cannot be turned off or down here \
                 (Enterprise licenses can). What is sent is listed above, and every byte can be seen before it \
                 leaves.</p>"
            )),
            None => out.push_str("<p>The license key is refused: nothing is collected or sent.</p>"),
        }
        out.push_str("</section>");
        out
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub(super) struct ChoiceForm {
        choice: String,
    }

    /// Saves a choice from the page's forms. A post from another origin is refused (the page is
    /// behind the host's authentication, so another site must not make a signed-in browser post
    /// here); so is a choice the tier does not allow.
    pub(super) async fn choose(
        request: HttpRequest,
        licensing: web::Data<Licensing>,
        form: web::Form<ChoiceForm>,
    ) -> HttpResponse {
        if !same_origin(&request) {
            return html(
                StatusCode::FORBIDDEN,
                "<section class=\"refused\"><p>Refused: this form was posted from another site.</p></section>".into(),
            );
        }
        let choice = match form.choice.as_str() {
            "full" => Choice::Full,
            "basic" => Choice::Basic,
            "disabled" => Choice::Disabled,
            "disabled_basic" => Choice::DisabledBasic,
            other => {
                return html(
                    StatusCode::BAD_REQUEST,
                    format!("<section class=\"refused\"><p>Unknown choice {}.</p></section>", esc(other)),
                )
            }
        };
        let l = licensing.get_ref().clone();
        match web::block(move || l.save_choice(choice)).await {
            Ok(Ok(_)) => HttpResponse::SeeOther()
                .insert_header((header::LOCATION, format!("privacy?saved={}", choice.as_str())))
                .finish(),
            Ok(Err(SaveChoiceError::Refused(why))) => html(
                StatusCode::FORBIDDEN,
                format!("<section class=\"refused\"><p>Refused: {}</p><p><a href=\"privacy\">Back</a></p></section>", esc(&why)),
            ),
            Ok(Err(e)) => {
                tracing::error!(target: "licensor", "saving the telemetry choice failed: {}", crate::error_chain::Chain(&e));
                html(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "<section class=\"refused\"><p>The choice could not be saved.</p></section>".into(),
                )
            }
            Err(_) => html(
                StatusCode::INTERNAL_SERVER_ERROR,
                "<section class=\"refused\"><p>The choice could not be saved.</p></section>".into(),
            ),
        }
    }

    /// Whether a post comes from this origin: its `Origin` (or, without one, its `Referer`)
    /// names the host the request was made to. Browsers send `Origin` with every form post; a
    /// post with neither header is not from a browser on another site.
    fn same_origin(request: &HttpRequest) -> bool {
        let host = request.connection_info().host().to_ascii_lowercase();
        let named = request
            .headers()
            .get(header::ORIGIN)
            .or_else(|| request.headers().get(header::REFERER))
            .and_then(|v| v.to_str().ok());
        let Some(named) = named else { return true };
        let Some(rest) = named.split_once("://").map(|(_, rest)| rest) else { return false };
        let authority = rest.split('/').next().unwrap_or("").to_ascii_lowercase();
        authority == host
    }
}
