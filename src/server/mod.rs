//! The license server: the only module that knows actix-web. Routes are declared in one place
//! ([`routes`]), one handler per function, shared state through `web::Data<AppState>`, admin
//! authentication as an extractor ([`auth::Admin`]). Database work runs on the blocking pool,
//! never on the async executor.

pub mod audit;
pub mod auth;
mod circuit;
mod client_address;
pub mod config;
pub mod dashboard;
pub mod error;
pub(crate) mod extract;
mod handlers;
pub mod insights;
mod installs;
pub mod jobs;
mod licenses;
pub mod openapi;
pub mod public;
mod request_log;
pub mod tls;
pub mod webhooks;

use crate::error_chain::Chain;
use actix_web::{web, App, HttpServer};
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;

use crate::checkin::CheckInService;
use crate::keys::Signer;
use crate::store::Store;
pub use config::{
    remove_created, ConfigError, KeySettingNames, ServeOptions, ServerConfig, TlsFiles, SETTINGS,
};
use error::ApiError;

pub use crate::time::{system_clock, Clock};

/// What every handler shares.
pub struct AppState {
    pub service: Arc<CheckInService>,
    pub store: Store,
    /// The admin tokens: `admin_token` (named `admin`, full scope) and the named ones.
    pub admin_tokens: auth::AdminTokens,
    pub issuer: Option<Arc<Signer>>,
    pub clock: Clock,
    pub max_body_bytes: usize,
    /// How long a request body may take to arrive.
    pub body_timeout: std::time::Duration,
    /// Reverse proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// The public insights, when the operator publishes them.
    pub public: Option<public::Public>,
}

/// Why the server could not start (the client's own start-up failures are
/// [`client::StartError`](crate::client::StartError)).
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A setting is missing, malformed or inconsistent.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The database could not be opened or migrated.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// The address is taken, or not this machine's.
    #[error("cannot listen on {addr}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    /// The job scheduler could not start.
    #[error(transparent)]
    Jobs(#[from] jobs::ScheduleError),
    /// The TLS certificate or key could not be used; `setting` names the one at fault.
    #[error("{setting}: {source}")]
    Tls { setting: String, source: tls::TlsError },
}

/// All routes, in one place.
pub fn routes(cfg: &mut web::ServiceConfig) {
    dashboard_routes(cfg);
    cfg.service(resource("/insights").route(web::get().to(public::page)))
        .service(resource("/v1/insights").route(web::get().to(public::json)))
        .service(resource("/healthz").route(web::get().to(handlers::healthz)))
        .service(resource("/readyz").route(web::get().to(handlers::readyz)))
        .service(resource("/metrics").route(web::get().to(handlers::metrics)))
        .service(resource("/openapi.json").route(web::get().to(openapi::openapi_json)))
        .service(resource("/v1/check-ins").route(web::post().to(handlers::check_in)))
        .service(resource("/v1/deactivations").route(web::post().to(handlers::deactivate)))
        .service(resource("/v1/installs/list").route(web::post().to(installs::list)))
        .service(resource("/v1/installs/release").route(web::post().to(installs::release)))
        .service(
            web::scope("/v1/admin")
                .wrap(actix_web::middleware::from_fn(audit::middleware))
                .service(resource("/audit").route(web::get().to(audit::list)))
                .service(resource("/usage-imports").route(web::post().to(handlers::import_usage)))
                .service(
                    resource("/webhooks")
                        .route(web::post().to(webhooks::create))
                        .route(web::get().to(webhooks::list)),
                )
                .service(resource("/webhooks/{endpoint_id}").route(web::delete().to(webhooks::delete)))
                .service(
                    resource("/webhooks/{endpoint_id}/deliveries").route(web::get().to(webhooks::deliveries)),
                )
                .service(
                    resource("/webhooks/{endpoint_id}/deliveries/{event_id}/redeliver")
                        .route(web::post().to(webhooks::redeliver)),
                )
                .service(
                    resource("/licenses")
                        .route(web::post().to(handlers::issue_license))
                        .route(web::get().to(handlers::list_licenses)),
                )
                // Before `/licenses/{license_id}`, which would otherwise take the path.
                .service(resource("/licenses/register").route(web::post().to(licenses::register_licenses)))
                .service(
                    resource("/licenses/{license_id}")
                        .route(web::get().to(insights::license_detail))
                        .route(web::patch().to(handlers::update_license)),
                )
                .service(resource("/insights/overview").route(web::get().to(insights::overview)))
                .service(resource("/insights/usage").route(web::get().to(insights::usage)))
                .service(resource("/insights/performance").route(web::get().to(insights::performance)))
                .service(resource("/insights/errors").route(web::get().to(insights::errors)))
                .service(resource("/insights/environment").route(web::get().to(insights::environment)))
                .service(resource("/insights/licenses").route(web::get().to(insights::licenses)))
                .service(resource("/jobs/rollup/runs").route(web::post().to(insights::run_rollup)))
                .service(
                    resource("/licenses/{license_id}/install-keys")
                        .route(web::get().to(licenses::install_keys)),
                )
                .service(
                    resource("/licenses/{license_id}/install-keys/{instance_id}/reset")
                        .route(web::post().to(licenses::reset_install_key)),
                )
                .service(
                    resource("/licenses/{license_id}/terms")
                        .route(web::patch().to(licenses::set_license_terms)),
                )
                .service(
                    resource("/licenses/{license_id}/revoke").route(web::post().to(handlers::revoke_license)),
                )
                .service(
                    resource("/licenses/{license_id}/reinstate")
                        .route(web::post().to(handlers::reinstate_license)),
                )
                .service(
                    resource("/licenses/{license_id}/instances/{instance_id}")
                        .route(web::delete().to(handlers::release_instance)),
                )
                .service(resource("/instances").route(web::get().to(handlers::list_instances)))
                .service(resource("/sessions").route(web::delete().to(handlers::end_sessions)))
                .service(resource("/telemetry/summary").route(web::get().to(handlers::telemetry_summary)))
                .service(
                    resource("/instances/{instance_id}/telemetry")
                        .route(web::delete().to(handlers::erase_telemetry)),
                ),
        );
}

/// The dashboard's routes, under `/admin` (see [`dashboard`]).
fn dashboard_routes(cfg: &mut web::ServiceConfig) {
    use dashboard::handlers as d;
    cfg.service(
        web::scope("/admin")
            // A query or form that does not read gets the dashboard's own error page, not the
            // API's JSON.
            .app_data(web::QueryConfig::default().error_handler(|e, _| {
                dashboard::DashboardError::BadRequest(format!("the address's query does not read: {e}"))
                    .into()
            }))
            .app_data(web::FormConfig::default().error_handler(|e, _| {
                dashboard::DashboardError::BadRequest(format!("the form does not read: {e}")).into()
            }))
            .wrap(actix_web::middleware::from_fn(audit::middleware))
            .wrap(
                actix_web::middleware::DefaultHeaders::new()
                    .add(("content-security-policy", dashboard::CONTENT_SECURITY_POLICY))
                    .add(("x-content-type-options", "nosniff"))
                    // Not `no-referrer`: under it a browser sends `Origin: null` with every
                    // form, which hides the origin the forms are checked against.
                    .add(("referrer-policy", "same-origin"))
                    .add(("x-frame-options", "DENY")),
            )
            .service(web::resource("").route(web::get().to(d::index)))
            .service(web::resource("/").route(web::get().to(d::index)))
            .service(web::resource("/assets/dashboard.css").route(web::get().to(d::stylesheet)))
            .service(
                web::resource("/sign-in")
                    .route(web::get().to(d::sign_in_form))
                    .route(web::post().to(d::sign_in)),
            )
            .service(web::resource("/sign-out").route(web::post().to(d::sign_out)))
            .service(web::resource("/sign-out-everywhere").route(web::post().to(d::sign_out_everywhere)))
            .service(web::resource("/overview").route(web::get().to(d::overview)))
            .service(web::resource("/usage").route(web::get().to(d::usage)))
            .service(web::resource("/performance").route(web::get().to(d::performance)))
            .service(web::resource("/errors").route(web::get().to(d::errors)))
            .service(web::resource("/environment").route(web::get().to(d::environment)))
            .service(web::resource("/licenses").route(web::get().to(d::licenses)))
            .service(web::resource("/licenses/{license_id}").route(web::get().to(d::license)))
            .service(web::resource("/licenses/{license_id}/revoke").route(web::post().to(d::revoke)))
            .service(web::resource("/licenses/{license_id}/reinstate").route(web::post().to(d::reinstate)))
            .service(web::resource("/licenses/{license_id}/renew").route(web::post().to(d::renew)))
            .service(
                web::resource("/licenses/{license_id}/instances/{instance_id}/release")
                    .route(web::post().to(d::release)),
            )
            .service(
                web::resource("/public-names/{kind}/{decision}/{name:.*}")
                    .route(web::post().to(dashboard::public_names::public_name)),
            )
            .service(web::resource("/instances").route(web::get().to(d::instances)))
            .service(web::resource("/export/{view}.csv").route(web::get().to(d::export))),
    );
}

/// A resource whose unsupported methods get the JSON 405 rather than an empty one.
fn resource(path: &str) -> actix_web::Resource {
    web::resource(path).default_service(web::to(handlers::method_not_allowed))
}

/// A server that is running, with the means to stop it.
pub struct Running {
    /// The address it listens on (useful when asked for port 0).
    pub addr: SocketAddr,
    /// The metrics address, when one was configured (useful when asked for port 0).
    pub metrics_addr: Option<SocketAddr>,
    /// The rate limiters' clock, which tests move on instead of waiting.
    pub limiter_clock: crate::checkin::LimiterClock,
    handle: actix_web::dev::ServerHandle,
    thread: Option<std::thread::JoinHandle<Result<(), ServeError>>>,
}

impl Running {
    /// Stops gracefully: in-flight requests finish, then the server exits.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some(thread) = self.thread.take() {
            let handle = self.handle.clone();
            // The server's own runtime lives on its thread; stopping is a message to it.
            let _ =
                std::thread::spawn(move || actix_web::rt::System::new().block_on(handle.stop(true))).join();
            let _ = thread.join();
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Opens the store, loads the keys and prepares the shared state.
fn prepare(config: &ServerConfig, clock: Clock) -> Result<(web::Data<AppState>, Store), ServeError> {
    let (ring, signer, issuer) = config.load_keys()?;
    let metrics = crate::metrics::Metrics::new();
    let mut store = Store::open(&config.database_url, config.db_pool_size)?;
    store.record_pool_wait(metrics.pool_wait_seconds.clone());
    let rates = crate::checkin::Rates {
        per_address_per_minute: config.rate_limit_per_address,
        per_instance_per_minute: config.rate_limit_per_minute,
        ipv6_prefix: config.rate_limit_ipv6_prefix,
    };
    let service = CheckInService::new(
        store.clone(),
        Arc::new(ring),
        Arc::new(signer),
        config.limits.clone(),
        rates,
        metrics,
        config.seats.clone(),
    );
    if config.admin_token.is_none() {
        let named: Vec<&str> = config.admin_tokens.iter().map(|t| t.name.as_str()).collect();
        tracing::info!(
            ?named,
            "no admin_token is configured and none was generated: only the named admin tokens are accepted"
        );
    }
    let state = AppState {
        service: Arc::new(service),
        store: store.clone(),
        admin_tokens: auth::AdminTokens::new(
            config
                .admin_token
                .as_deref()
                .map(|token| ("admin", auth::Scope::Full, token))
                .into_iter()
                .chain(config.admin_tokens.iter().map(|t| (t.name.as_str(), t.scope, t.token.as_str()))),
        ),
        issuer: issuer.map(Arc::new),
        clock,
        max_body_bytes: config.max_body_bytes,
        body_timeout: config.body_timeout,
        trusted_proxies: config.trusted_proxies.clone(),
        public: config
            .public_insights
            .then(|| public::Public::new(config.insights_min_installs, config.public_names.clone())),
    };
    Ok((web::Data::new(state), store))
}

/// What a server serves on, bound before it starts so that a taken port or an unusable
/// certificate fails the start.
struct Bound {
    listener: TcpListener,
    addr: SocketAddr,
    metrics_listener: Option<TcpListener>,
    metrics_addr: Option<SocketAddr>,
    tls: Option<Arc<tls::CertificateStore>>,
}

fn bind(config: &ServerConfig) -> Result<Bound, ServeError> {
    let tls = load_tls(config)?;
    let failed = |addr| move |source| ServeError::Bind { addr, source };
    let listener = TcpListener::bind(config.bind).map_err(failed(config.bind))?;
    let addr = listener.local_addr().map_err(failed(config.bind))?;
    let metrics_listener = match config.metrics_bind {
        Some(at) => Some(TcpListener::bind(at).map_err(failed(at))?),
        None => None,
    };
    let metrics_addr = metrics_listener.as_ref().and_then(|l| l.local_addr().ok());
    Ok(Bound { listener, addr, metrics_listener, metrics_addr, tls })
}

/// The server's certificate, when it terminates TLS itself; the error names the setting at
/// fault.
fn load_tls(config: &ServerConfig) -> Result<Option<Arc<tls::CertificateStore>>, ServeError> {
    let Some(files) = &config.tls else { return Ok(None) };
    tls::CertificateStore::load(&files.cert, &files.key).map(Some).map_err(|source| {
        let setting = match source {
            tls::TlsError::Certificate { .. } => files.cert_setting.clone(),
            _ => files.key_setting.clone(),
        };
        ServeError::Tls { setting, source }
    })
}

/// `addr` is the listener's own address, for errors.
fn http_server(
    state: web::Data<AppState>,
    listener: TcpListener,
    addr: SocketAddr,
    workers: usize,
    tls: Option<&Arc<tls::CertificateStore>>,
) -> Result<actix_web::dev::Server, ServeError> {
    let bind = |source| ServeError::Bind { addr, source };
    let server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .app_data(web::QueryConfig::default().error_handler(extract::query_error))
            .configure(routes)
            .default_service(web::to(handlers::not_found))
            .wrap(actix_web::middleware::from_fn(request_log::middleware))
    })
    .workers(workers)
    .shutdown_timeout(30);
    let server = match tls {
        Some(store) => {
            let config = store
                .server_config()
                .map_err(|source| ServeError::Tls { setting: "LICENSOR_TLS_CERT".into(), source })?;
            server.listen_rustls_0_23(listener, config).map_err(bind)?
        }
        None => server.listen(listener).map_err(bind)?,
    };
    Ok(server.run())
}

/// The metrics address's server: `/metrics` without a token, nothing else.
fn metrics_server(
    state: web::Data<AppState>,
    listener: TcpListener,
) -> std::io::Result<actix_web::dev::Server> {
    Ok(HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .service(resource("/metrics").route(web::get().to(handlers::metrics_open)))
            .default_service(web::to(handlers::not_found))
    })
    .workers(1)
    .shutdown_timeout(5)
    .listen(listener)?
    .run())
}

/// Reads the certificate again on every SIGHUP, for as long as the server runs; a reload that
/// fails keeps the certificate in use and logs why.
fn reload_on_sighup(
    store: Arc<tls::CertificateStore>,
) -> std::io::Result<actix_web::rt::task::JoinHandle<()>> {
    let mut hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    Ok(actix_web::rt::spawn(async move {
        while hangups.recv().await.is_some() {
            let store = store.clone();
            let reloaded = actix_web::rt::task::spawn_blocking(move || store.reload()).await;
            match reloaded {
                Ok(Ok(())) => tracing::info!("TLS certificate reloaded (SIGHUP)"),
                Ok(Err(e)) => {
                    tracing::error!(error = %Chain(&e), "TLS certificate not reloaded; the previous one stays in use")
                }
                Err(e) => tracing::error!(error = %Chain(&e), "TLS certificate reload stopped"),
            }
        }
    }))
}

/// Serves until the server is stopped (by its handle, or by SIGTERM or SIGINT), running the
/// scheduled jobs beside it; `ready` gets the server's handle once it is listening and the jobs
/// are scheduled. In-flight requests get up to 30 seconds to finish.
async fn serve(
    config: ServerConfig,
    state: web::Data<AppState>,
    store: Store,
    bound: Bound,
    clock: Clock,
    ready: impl FnOnce(actix_web::dev::ServerHandle),
) -> Result<(), ServeError> {
    let Bound { listener, addr, metrics_listener, metrics_addr, tls } = bound;
    let bind = |source| ServeError::Bind { addr: config.bind, source };
    let state_service = state.service.clone();
    let metrics = match (metrics_listener, metrics_addr) {
        (Some(listener), Some(addr)) => Some(
            metrics_server(state.clone(), listener).map_err(|source| ServeError::Bind { addr, source })?,
        ),
        _ => None,
    };
    let metrics_handle = metrics.as_ref().map(|m| m.handle());
    let metrics_task = metrics.map(actix_web::rt::spawn);
    let server = http_server(state, listener, addr, config.workers, tls.as_ref())?;
    let reloading = match tls {
        Some(store) => Some(reload_on_sighup(store).map_err(bind)?),
        None => None,
    };
    let (store_for_webhooks, clock_for_webhooks) = (store.clone(), clock.clone());
    // The coming days' partitions (PostgreSQL), before the first check-in needs them; the
    // nightly retention run keeps them ahead.
    let (partitions, today) = (store.clone(), clock().date_naive());
    match actix_web::rt::task::spawn_blocking(move || {
        partitions.ensure_partitions(today, jobs::PARTITIONS_AHEAD)
    })
    .await
    {
        Ok(Err(e)) => tracing::warn!(error = %Chain(&e), "creating the coming days' partitions failed"),
        Err(e) => tracing::warn!(error = %Chain(&e), "creating the coming days' partitions stopped"),
        Ok(Ok(_)) => {}
    }
    let mut scheduler = if config.jobs {
        Some(
            jobs::schedule(&config, store, clock, state_service.metrics.clone())
                .await
                .map_err(ServeError::Jobs)?,
        )
    } else {
        None
    };
    // Rate-limit keys whose allowance filled up again are dropped every minute, shard by shard,
    // off the async workers.
    let service = state_service.clone();
    let forgetting = actix_web::rt::spawn(async move {
        let mut every = actix_web::rt::time::interval(std::time::Duration::from_secs(60));
        loop {
            every.tick().await;
            let service = service.clone();
            let _ = actix_web::rt::task::spawn_blocking(move || service.limiter.forget_idle()).await;
        }
    });
    let delivering =
        webhooks::start_worker(store_for_webhooks, clock_for_webhooks, state_service.metrics.clone());
    ready(server.handle());
    let result = server.await;
    delivering.abort();
    if let Some(handle) = metrics_handle {
        handle.stop(true).await;
    }
    if let Some(task) = metrics_task {
        let _ = task.await;
    }
    forgetting.abort();
    if let Some(reloading) = reloading {
        reloading.abort();
    }
    if let Some(scheduler) = scheduler.as_mut() {
        let _ = scheduler.shutdown().await;
    }
    result.map_err(bind)
}

/// Starts a server on its own thread, with `clock` as its time source, and returns once it
/// listens. For tests and for applications that embed the server.
pub fn start(config: ServerConfig, clock: Clock) -> Result<Running, ServeError> {
    let (state, store) = prepare(&config, clock.clone())?;
    let limiter_clock = state.service.limiter.clock();
    let bound = bind(&config)?;
    let (addr, metrics_addr) = (bound.addr, bound.metrics_addr);
    let (tx, rx) = std::sync::mpsc::channel();
    let thread = std::thread::spawn(move || {
        actix_web::rt::System::new().block_on(serve(config, state, store, bound, clock, move |handle| {
            let _ = tx.send(handle);
        }))
    });
    match rx.recv() {
        Ok(handle) => Ok(Running { addr, metrics_addr, limiter_clock, handle, thread: Some(thread) }),
        // The thread ended before it was ready: its result says why.
        Err(_) => Err(match thread.join() {
            Ok(Err(e)) => e,
            _ => ServeError::Bind {
                addr,
                source: std::io::Error::other("the server thread stopped while starting"),
            },
        }),
    }
}

/// Runs the server until SIGTERM or SIGINT, then shuts down gracefully: new connections are
/// refused, in-flight requests get up to 30 seconds to finish. `listening` is called once the
/// address is bound (and not at all when the start fails), for a banner that must not claim
/// too early that the server listens.
pub fn run(
    config: ServerConfig,
    listening: impl FnOnce(&ServerConfig, SocketAddr),
) -> Result<(), ServeError> {
    let clock = system_clock();
    let (state, store) = prepare(&config, clock.clone())?;
    let bound = bind(&config)?;
    let addr = bound.addr;
    let (backend, issuing, banner_config) = (store.backend(), state.issuer.is_some(), config.clone());
    let scheme = if bound.tls.is_some() { "https" } else { "http" };
    // Called once the jobs are scheduled and the server is about to accept connections.
    let ready = move |_| {
        listening(&banner_config, addr);
        tracing::info!(addr = %addr, scheme, backend = ?backend, issuing, "licensor server listening");
    };
    let result = actix_web::rt::System::new().block_on(serve(config, state, store, bound, clock, ready));
    tracing::info!("licensor server stopped");
    result
}

/// Runs `f` on the blocking pool: the database and signing work of a request.
pub(crate) async fn blocking<T, F>(f: F) -> Result<T, ApiError>
where
    F: FnOnce() -> Result<T, ApiError> + Send + 'static,
    T: Send + 'static,
{
    // The work logs under the request's span, so its lines carry the request id too.
    let span = tracing::Span::current();
    web::block(move || span.in_scope(f)).await?
}
