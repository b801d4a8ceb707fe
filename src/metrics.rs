//! The license server's own metrics, in the Prometheus (OpenMetrics) text format: what an
//! operator watches to know the server is healthy and keeping up.
//!
//! Invariants: no I/O and no global state (each server has its registry, so servers in one
//! process, as in the tests, count apart); labels come from small fixed sets (statuses, scopes,
//! job names, route patterns), never from what a client sends, so the series cannot grow without
//! bound; recording is a few atomic operations, cheap enough for the check-in path.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};
use std::sync::Arc;

/// One label.
type Label = [(&'static str, &'static str); 1];
/// Two labels.
type Labels = [(&'static str, &'static str); 2];
/// An HTTP request's labels: method, route pattern and status.
type RequestLabels = [(&'static str, String); 3];

/// Every metric the server keeps.
pub struct Metrics {
    registry: Registry,
    /// Check-ins answered, by status (`valid`, `revoked`, `seat_limit`, ...).
    pub check_ins: Family<Label, Counter>,
    /// Time from a check-in's arrival to its answer, recorded and signed.
    pub check_in_seconds: Histogram,
    /// Check-ins that could not be recorded, by cause (`unavailable`: retry later;
    /// `refused`: the database refused that check-in; `panicked`: a bug).
    pub check_in_failures: Family<Label, Counter>,
    /// Check-ins per transaction of the writer (group commit).
    pub group_size: Histogram,
    /// Check-ins waiting for a writer when a group starts.
    pub queue_depth: Gauge,
    /// Time spent waiting for a database connection from the pool.
    pub pool_wait_seconds: Histogram,
    /// Requests refused for a rate limit, by scope (`address`, `license`, `instance`).
    pub rate_limited: Family<Label, Counter>,
    /// Telemetry batches' bytes as received (the batch's JSON).
    pub telemetry_received_bytes: Counter,
    /// Telemetry bytes written to the store (the stored rows' text, after scrubbing).
    pub telemetry_stored_bytes: Counter,
    /// Scheduled or requested job runs, by job and outcome (`ran`, `claimed_elsewhere`, `failed`).
    pub job_runs: Family<Labels, Counter>,
    /// How long job runs took, by job.
    pub job_seconds: Family<Label, Histogram>,
    /// Webhook deliveries, by outcome (`delivered`, `failed`).
    pub webhook_deliveries: Family<Label, Counter>,
    /// Times a webhook endpoint was paused because its deliveries kept failing.
    pub webhook_circuits_opened: Counter,
    /// Scans for lapsed leases and silent licenses that completed.
    pub webhook_scans: Counter,
    /// HTTP requests answered, by method, route pattern and status.
    pub requests: Family<RequestLabels, Counter>,
}

fn seconds_histogram() -> Histogram {
    // 0.25 ms to about 8 s.
    Histogram::new(exponential_buckets(0.000_25, 2.0, 16))
}

impl Metrics {
    pub fn new() -> Arc<Metrics> {
        let mut registry = Registry::with_prefix("licensor");
        let check_ins = Family::<Label, Counter>::default();
        registry.register("check_ins", "Check-ins answered, by status", check_ins.clone());
        let check_in_failures = Family::<Label, Counter>::default();
        registry.register(
            "check_in_failures",
            "Check-ins that could not be recorded, by cause",
            check_in_failures.clone(),
        );
        let check_in_seconds = seconds_histogram();
        registry.register_with_unit(
            "check_in_duration",
            "Time from a check-in's arrival to its signed answer",
            Unit::Seconds,
            check_in_seconds.clone(),
        );
        let group_size = Histogram::new(exponential_buckets(1.0, 2.0, 9));
        registry.register(
            "writer_group_size",
            "Check-ins per writer transaction (group commit)",
            group_size.clone(),
        );
        let queue_depth = Gauge::default();
        registry.register(
            "writer_queue_depth",
            "Check-ins waiting for a writer when the last group started",
            queue_depth.clone(),
        );
        let pool_wait_seconds = seconds_histogram();
        registry.register_with_unit(
            "db_pool_wait",
            "Time spent waiting for a database connection",
            Unit::Seconds,
            pool_wait_seconds.clone(),
        );
        let rate_limited = Family::<Label, Counter>::default();
        registry.register(
            "rate_limited",
            "Requests refused for a rate limit, by scope",
            rate_limited.clone(),
        );
        let telemetry_received_bytes = Counter::default();
        registry.register_with_unit(
            "telemetry_received",
            "Telemetry batch bytes received",
            Unit::Bytes,
            telemetry_received_bytes.clone(),
        );
        let telemetry_stored_bytes = Counter::default();
        registry.register_with_unit(
            "telemetry_stored",
            "Telemetry bytes written to the store, after scrubbing",
            Unit::Bytes,
            telemetry_stored_bytes.clone(),
        );
        let job_runs = Family::<Labels, Counter>::default();
        registry.register("job_runs", "Job runs, by job and outcome", job_runs.clone());
        let job_seconds =
            Family::<Label, Histogram>::new_with_constructor(seconds_histogram as fn() -> Histogram);
        registry.register_with_unit(
            "job_duration",
            "How long job runs took",
            Unit::Seconds,
            job_seconds.clone(),
        );
        let webhook_deliveries = Family::<Label, Counter>::default();
        registry.register("webhook_deliveries", "Webhook deliveries, by outcome", webhook_deliveries.clone());
        let webhook_scans = Counter::default();
        registry.register(
            "webhook_scans",
            "Scans for lapsed leases and silent licenses that completed (each may enqueue events)",
            webhook_scans.clone(),
        );
        let webhook_circuits_opened = Counter::default();
        registry.register(
            "webhook_circuits_opened",
            "Times a webhook endpoint was paused because its deliveries kept failing",
            webhook_circuits_opened.clone(),
        );
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests answered, by method, route and status",
            requests.clone(),
        );
        Arc::new(Metrics {
            registry,
            check_ins,
            check_in_failures,
            check_in_seconds,
            group_size,
            queue_depth,
            pool_wait_seconds,
            rate_limited,
            telemetry_received_bytes,
            telemetry_stored_bytes,
            job_runs,
            job_seconds,
            webhook_deliveries,
            webhook_circuits_opened,
            webhook_scans,
            requests,
        })
    }

    /// The metrics in the OpenMetrics text format (which Prometheus reads).
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }

    /// Counts a request refused by the rate limit of `scope`.
    pub fn refused(&self, scope: &'static str) {
        self.rate_limited.get_or_create(&[("scope", scope)]).inc();
    }

    /// Records a job run.
    pub fn job_ran(&self, job: &'static str, outcome: &'static str, seconds: f64) {
        self.job_runs.get_or_create(&[("job", job), ("outcome", outcome)]).inc();
        self.job_seconds.get_or_create(&[("job", job)]).observe(seconds);
    }

    /// Records an answered HTTP request.
    pub fn answered(&self, method: &str, route: &str, status: u16) {
        let method = match method {
            "GET" | "POST" | "PATCH" | "PUT" | "DELETE" | "HEAD" | "OPTIONS" => method.to_owned(),
            _ => "other".to_owned(),
        };
        self.requests
            .get_or_create(&[("method", method), ("route", route.to_owned()), ("status", status.to_string())])
            .inc();
    }
}

/// The content type of [`Metrics::render`].
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
