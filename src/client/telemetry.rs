//! The collector, [`Telemetry`]: usage counters, request figures, deduplicated errors and sessions,
//! and the assembly of a schema-1 batch from them. Scrubbing happens here, when figures are
//! drained, off the host's hot paths and out of every lock: names and routes must be
//! identifiers the scrubber leaves unchanged (or they are dropped), error messages and stacks
//! go through the scrubber, and the redaction counts travel in the batch.

use chrono::{DateTime, Timelike as _, Utc};
use sha2::{Digest as _, Sha256};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::counters::Counters;
pub use super::errors::Sampling;
use super::errors::{cut, template, RawErrors, Taken};
use super::requests::{Requests, RouteFigures};
use crate::privacy::{self, Redactions};
use crate::protocol::{Dropped, ErrorGroup, Health, RoutePerformance, Sessions, UsageCount, UsageKind};
use rustc_hash::FxHashSet;

/// Bounds on what one collector holds between drains.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    pub max_keys: usize,
    pub max_routes: usize,
    pub max_errors: usize,
}

/// The most distinct users one collector remembers between drains (they only decide the
/// batch's user-count range, whose top is "1001+").
pub const MAX_USERS: usize = 10_000;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_keys: super::counters::DEFAULT_MAX_KEYS,
            max_routes: super::requests::DEFAULT_MAX_ROUTES,
            max_errors: 200,
        }
    }
}

/// Figures drained from the collector, scrubbed: what the local store adds to its tables.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Figures {
    pub usage: Vec<UsageCount>,
    pub performance: Vec<RoutePerformance>,
    pub errors: Vec<ErrorGroup>,
    pub sessions: Sessions,
    pub dropped: Dropped,
    pub redactions: BTreeMap<String, u64>,
    /// Salted hashes of the user ids seen.
    pub users: Vec<String>,
    /// The latest result of each health check.
    pub health: BTreeMap<String, Health>,
}

impl Figures {
    pub fn is_empty(&self) -> bool {
        self.usage.is_empty()
            && self.performance.is_empty()
            && self.errors.is_empty()
            && self.sessions.count == 0
            && self.dropped == Dropped::default()
            && self.redactions.values().all(|&v| v == 0)
            && self.users.is_empty()
            && self.health.is_empty()
    }
}

/// Everything an instance tracks; cheap to clone and share.
#[derive(Clone)]
pub struct Telemetry {
    pub counters: Counters,
    pub requests: Requests,
    errors: Arc<RawErrors>,
    sessions: Arc<Mutex<Sessions>>,
    users: Arc<Mutex<FxHashSet<String>>>,
    enabled: Arc<AtomicBool>,
}

impl Telemetry {
    pub fn new(limits: &Limits) -> Telemetry {
        Telemetry {
            counters: Counters::new(limits.max_keys),
            requests: Requests::new(limits.max_routes),
            errors: Arc::new(RawErrors::new(limits.max_errors, Sampling::Always)),
            sessions: Arc::new(Mutex::new(Sessions::default())),
            users: Arc::default(),
            enabled: Arc::new(AtomicBool::new(true)),
        }
    }

    /// A collector whose raw error events are sampled.
    pub fn with_sampling(limits: &Limits, sampling: Sampling) -> Telemetry {
        Telemetry { errors: Arc::new(RawErrors::new(limits.max_errors, sampling)), ..Telemetry::new(limits) }
    }

    /// A collector that records nothing (development instances, the basic level).
    pub fn disabled() -> Telemetry {
        Telemetry {
            counters: Counters::disabled(),
            requests: Requests::disabled(),
            errors: Arc::new(RawErrors::new(0, Sampling::Always)),
            sessions: Arc::new(Mutex::new(Sessions::default())),
            users: Arc::default(),
            enabled: Arc::new(AtomicBool::new(false)),
        }
    }

    /// A collector with its bounds that records nothing until [`wake`](Self::wake) is called: a
    /// developer's machine, which may turn out to be a real deployment.
    pub fn dormant(limits: &Limits, sampling: Sampling) -> Telemetry {
        Telemetry {
            counters: Counters::dormant(limits.max_keys),
            requests: Requests::dormant(limits.max_routes),
            enabled: Arc::new(AtomicBool::new(false)),
            ..Telemetry::with_sampling(limits, sampling)
        }
    }

    /// Starts recording, for a dormant collector.
    pub fn wake(&self) {
        self.counters.wake();
        self.requests.wake();
        self.enabled.store(true, Ordering::Relaxed);
    }

    pub fn enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    /// Records an error under a category (`database`, `mail`...) at `now`. Errors with the
    /// same category and the same message once its particulars (numbers, ids, PII) are taken
    /// out share a fingerprint and are counted together. The error's chain of sources stands
    /// in for its stack.
    pub fn track_error(&self, error: &(dyn std::error::Error + 'static), category: &str, now: DateTime<Utc>) {
        let mut chain = Vec::new();
        let mut source = error.source();
        while let Some(cause) = source {
            chain.push(format!("caused by: {cause}"));
            source = cause.source();
        }
        self.track_error_parts(category, &error.to_string(), &chain, now);
    }

    /// Records an error from its parts, with an explicit stack (frames, most recent first).
    pub fn track_error_parts<S: AsRef<str>>(
        &self,
        category: &str,
        message: &str,
        stack: &[S],
        now: DateTime<Utc>,
    ) {
        if !self.enabled() {
            return;
        }
        self.errors.track(category, message, stack, now);
    }

    /// Starts a user session; it counts when the returned handle is ended or dropped.
    pub fn start_session(&self, now: DateTime<Utc>) -> Session {
        Session { sessions: self.enabled().then(|| self.sessions.clone()), started: now, ended: false }
    }

    /// Notes a user as seen, by the salted hash of their id (never the id itself).
    pub fn note_user(&self, user_hash: String) {
        if !self.enabled() {
            return;
        }
        if let Ok(mut users) = self.users.lock() {
            if users.len() < MAX_USERS {
                users.insert(user_hash);
            }
        }
    }

    #[cfg(feature = "test-support")]
    /// Tests and the collector benchmark: everything tracked since the last drain as one
    /// batch, without the store's list limits (deployments assemble batches in the store).
    pub fn take_batch(
        &self,
        batch_id: uuid::Uuid,
        period: (DateTime<Utc>, DateTime<Utc>),
        environment: crate::protocol::Environment,
    ) -> crate::protocol::TelemetryBatch {
        let flush = self.drain();
        crate::protocol::TelemetryBatch {
            schema: crate::protocol::TELEMETRY_SCHEMA,
            batch_id,
            period_start: period.0,
            period_end: period.1,
            environment,
            usage: flush.usage,
            performance: flush.performance,
            errors: flush.errors,
            sessions: flush.sessions,
            dropped: flush.dropped,
            redactions: flush.redactions,
        }
    }

    /// Takes everything tracked since the last drain, scrubbed, for the local store.
    pub fn drain(&self) -> Figures {
        let mut redactions = Redactions::default();
        let (counts, counter_overflow) = self.counters.drain();
        // Scrubbing and normalising can make two keys one (two emails become `[EMAIL]`, two
        // ids `:id`): they are merged here, so a batch never lists a key twice.
        let mut merged_usage: BTreeMap<(UsageKind, String), u64> = BTreeMap::new();
        // A name that is not an identifier, or that a rule would change, is dropped and
        // counted; it is never renamed.
        for (kind, name, count) in counts {
            if let Some(name) = privacy::keep_name(&name, &mut redactions) {
                *merged_usage.entry((kind, name.to_owned())).or_default() += count;
            }
        }
        let usage =
            merged_usage.into_iter().map(|((kind, name), count)| UsageCount { kind, name, count }).collect();
        let (routes, route_overflow) = self.requests.drain();
        let mut merged_routes: BTreeMap<(String, String), RouteFigures> = BTreeMap::new();
        for r in routes {
            // A raw path (an application without route patterns) counts by its shape: ids,
            // UUIDs, long hex, emails and tokens become `:id`; a pattern loses its regexes.
            let route = if r.route.starts_with('/') && !r.route.contains('{') {
                privacy::normalize_path(&r.route)
            } else {
                privacy::route_template(&r.route).into_owned()
            };
            let (Some(method), Some(route)) =
                (privacy::keep_name(&r.method, &mut redactions), privacy::keep_name(&route, &mut redactions))
            else {
                continue;
            };
            let (method, route) = (method.to_owned(), route.to_owned());
            match merged_routes.get_mut(&(method.clone(), route.clone())) {
                Some(m) => {
                    m.count += r.count;
                    m.errors += r.errors;
                    m.max_ms = m.max_ms.max(r.max_ms);
                    // Both sketches come from this collector: same accuracy, so they merge.
                    let _ = m.sketch.merge(&r.sketch);
                }
                None => {
                    merged_routes.insert((method, route), r);
                }
            }
        }
        let performance = merged_routes
            .into_iter()
            .map(|((method, route), r)| {
                RoutePerformance::from_sketch(method, route, r.count, r.errors, r.max_ms, &r.sketch)
            })
            .collect();
        let Taken { mut raw, overflow: mut error_overflow, sampled, throttled } = self.errors.take();
        let max_groups = self.errors.max;
        // Scrubbed out of every lock: tracking goes on meanwhile.
        let mut groups: BTreeMap<String, ErrorGroup> = BTreeMap::new();
        raw.sort_by_key(|r| r.first_seen);
        for r in raw {
            let message = privacy::scrub_into(&r.message, &mut redactions);
            let category = privacy::scrub_into(&r.category, &mut redactions);
            let fingerprint = fingerprint(&category, &message);
            if let Some(group) = groups.get_mut(&fingerprint) {
                group.count += r.count;
                group.first_seen = group.first_seen.min(r.first_seen);
                group.last_seen = group.last_seen.max(r.last_seen);
                continue;
            }
            if groups.len() >= max_groups {
                error_overflow += r.count;
                continue;
            }
            let stack = privacy::cut_stack(&r.stack, &mut redactions);
            groups.insert(
                fingerprint.clone(),
                ErrorGroup {
                    fingerprint,
                    error_type: if category.is_empty() { "error".into() } else { category },
                    message,
                    stack: stack.into_iter().map(|l| cut(&l, 512)).collect(),
                    count: r.count,
                    first_seen: r.first_seen,
                    last_seen: r.last_seen,
                },
            );
        }
        let errors: Vec<ErrorGroup> = groups.into_values().collect();
        let sessions = self.sessions.lock().map(|mut s| std::mem::take(&mut *s)).unwrap_or_default();
        let users = self.users.lock().map(|mut u| u.drain().collect()).unwrap_or_default();
        Figures {
            usage,
            performance,
            errors,
            sessions,
            dropped: Dropped {
                sampled,
                throttled,
                overflow: counter_overflow + route_overflow + error_overflow,
            },
            redactions: redactions.by_name(),
            users,
            health: BTreeMap::new(),
        }
    }

    /// Whether a bound that a drain frees is nearly reached (error groups or users held), so
    /// the flusher should drain now rather than at its next tick. Counter keys and routes are
    /// not freed by a drain (each is registered once and bounded for the collector's life).
    pub fn needs_flush(&self) -> bool {
        let errors = self.errors.nearly_full();
        let users = self.users.lock().map(|u| u.len() * 4 >= MAX_USERS * 3).unwrap_or(false);
        errors || users
    }
}

/// A user session in progress.
pub struct Session {
    sessions: Option<Arc<Mutex<Sessions>>>,
    started: DateTime<Utc>,
    ended: bool,
}

impl Session {
    /// Ends the session at `now`.
    pub fn end(mut self, now: DateTime<Utc>) {
        self.record(now);
    }

    fn record(&mut self, now: DateTime<Utc>) {
        if std::mem::replace(&mut self.ended, true) {
            return;
        }
        let Some(sessions) = &self.sessions else { return };
        let seconds = (now - self.started).to_std().unwrap_or(Duration::ZERO).as_secs();
        if let Ok(mut s) = sessions.lock() {
            s.count += 1;
            s.total_duration_s += seconds;
            s.hourly[self.started.hour() as usize] += 1;
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.record(Utc::now());
    }
}

/// Category and message template, hashed: the same error in another request or for another
/// record shares it.
fn fingerprint(category: &str, message: &str) -> String {
    let mut text = String::with_capacity(category.len() + 1 + message.len());
    text.push_str(category);
    text.push('\u{0}');
    template(message, |c| text.push(c));
    let digest = Sha256::digest(text.as_bytes());
    hex::encode(&digest[..16])
}
