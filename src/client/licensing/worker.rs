//! The background worker: a thread of its own with a current-thread tokio runtime, so the host
//! application needs no runtime and its own is never blocked. Its jobs are plain `tokio::time`
//! loops, one task each, so a check-in waiting on a slow server holds up no flush:
//!
//! - flush memory to the store every [`Config::flush_every`](crate::client::Config);
//! - every 10 s, flush early when a bound that a flush frees is nearly full;
//! - roll the local tables up 10 s after start, then every hour (so an application restarted
//!   more often than hourly still keeps its tables bounded);
//! - run the health checks every `health_every`, on a blocking thread;
//! - check in after the first delay (with spread), then when the lease says, or after the
//!   retry policy's backoff (not when air-gapped, which never connects).
//!
//! Fixed intervals and one-shots are all the client needs; cron expressions belong to the
//! server's jobs.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use super::verifier::Verifier;
use super::StartError;

/// How long shutdown waits for the worker before leaving it behind.
const SHUTDOWN_WAIT: Duration = Duration::from_millis(600);
/// How often the worker checks whether a bound that a flush frees is nearly full.
const WATCH_EVERY: Duration = Duration::from_secs(10);
/// How often the local tables are rolled up.
const ROLL_UP_EVERY: Duration = Duration::from_secs(60 * 60);

/// The running worker.
pub(super) struct Worker {
    stop: tokio::sync::oneshot::Sender<()>,
    done: std::sync::mpsc::Receiver<()>,
    /// Its runtime, where the host's own calls (a check-in now, a release) run.
    pub(super) handle: tokio::runtime::Handle,
}

impl Worker {
    /// Stops the worker, waiting for it at most [`SHUTDOWN_WAIT`]: a check-in in flight is
    /// abandoned (its batch stays in the outbox).
    pub(super) fn stop(self) {
        let _ = self.stop.send(());
        if self.done.recv_timeout(SHUTDOWN_WAIT).is_err() {
            tracing::warn!(target: "licensor", "the check-in thread did not stop in time; left behind");
        }
    }
}

/// Starts the worker thread.
pub(super) fn spawn(verifier: Arc<Verifier>) -> Result<Worker, StartError> {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (done_tx, done) = std::sync::mpsc::channel();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .thread_name("licensor-check-in")
        .build()
        .map_err(StartError::Runtime)?;
    let handle = runtime.handle().clone();
    std::thread::Builder::new()
        .name("licensor-check-in".into())
        .spawn(move || {
            runtime.block_on(async move {
                let (flush_every, health_every) = (verifier.config.flush_every, verifier.config.health_every);
                // Air-gapped with a sender delivers on the same schedule, without connecting.
                let checks_in = match verifier.mode() {
                    crate::client::policy::Mode::Telemetry { .. }
                    | crate::client::policy::Mode::Exempt { .. } => true,
                    crate::client::policy::Mode::AirGapped { .. } => verifier.sender.is_some(),
                    _ => false,
                };
                let mut tasks =
                    vec![
                        tokio::spawn(every(flush_every, flush_every, verifier.clone(), |v| async move {
                            flush(&v)
                        })),
                        tokio::spawn(every(WATCH_EVERY, WATCH_EVERY, verifier.clone(), |v| async move {
                            watch(&v)
                        })),
                        tokio::spawn(every(WATCH_EVERY, ROLL_UP_EVERY, verifier.clone(), |v| async move {
                            roll_up(&v)
                        })),
                        // Off the worker's thread: a slow check must not hold up a flush or a check-in.
                        tokio::spawn(every(health_every, health_every, verifier.clone(), |v| async move {
                            let _ = tokio::task::spawn_blocking(move || v.run_health_checks()).await;
                        })),
                    ];
                // An air-gapped deployment never connects: its figures leave by signed file, or
                // through the host's sender.
                if checks_in {
                    tasks.push(tokio::spawn(check_ins(verifier)));
                }
                let _ = stopped.await;
                for task in &tasks {
                    task.abort();
                }
            });
            // Whatever is still running (a check-in waiting on a silent server) is dropped.
            runtime.shutdown_timeout(Duration::from_millis(100));
            let _ = done_tx.send(());
        })
        .map_err(StartError::Runtime)?;
    Ok(Worker { stop, done, handle })
}

/// Runs `job` after `first`, then every `period`; a run that overruns delays the next rather
/// than piling runs up.
async fn every<F, Fut>(first: Duration, period: Duration, verifier: Arc<Verifier>, job: F)
where
    F: Fn(Arc<Verifier>) -> Fut,
    Fut: Future<Output = ()>,
{
    let period = period.max(Duration::from_millis(1));
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + first, period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        job(verifier.clone()).await;
    }
}

fn flush(verifier: &Verifier) {
    if let Err(e) = verifier.flush() {
        tracing::warn!(target: "licensor", "flushing telemetry failed: {}", crate::error_chain::Chain(&e));
    }
}

/// Flushes early when a bound that a flush frees (error groups, users) is nearly full.
fn watch(verifier: &Verifier) {
    if verifier.telemetry.needs_flush() {
        flush(verifier);
    }
}

fn roll_up(verifier: &Verifier) {
    let Some(store) = &verifier.store else { return };
    match store.roll_up(verifier.now()) {
        Ok(r) if r.dropped > 0 => tracing::warn!(
            target: "licensor",
            "local telemetry over its bound: {} unsent events dropped (counted in the next batch)",
            r.dropped
        ),
        Ok(_) => {}
        Err(e) => {
            tracing::warn!(target: "licensor", "rolling up local telemetry failed: {}", crate::error_chain::Chain(&e))
        }
    }
}

/// Checks in after the first delay (with a random spread, so a fleet started together does not
/// check in together), then whenever the last outcome says. The store holds that time, and
/// `licensor telemetry status` shows it: when a command run beside the application checked in
/// meanwhile (`licensor check-in`), the store holds the time its answer named, and the
/// application keeps to that instead of its own.
async fn check_ins(verifier: Arc<Verifier>) {
    let first = verifier.config.first_check_in_after;
    let first = first + first.mul_f64(rand::random::<f64>());
    let mut due = tokio::time::Instant::now() + first;
    verifier.announce_next_check_in(verifier.now() + chrono::Duration::from_std(first).unwrap_or_default());
    // The time this loop last saw in the store: a different one was written by someone else.
    let mut seen = verifier.stored_next_check_in();
    loop {
        let now = tokio::time::Instant::now();
        if now < due {
            // Woken early when the instance must check in at once (it was reclassified).
            if tokio::time::timeout((due - now).min(WATCH_EVERY), verifier.check_in_soon.notified())
                .await
                .is_ok()
            {
                due = tokio::time::Instant::now();
                continue;
            }
            let stored = verifier.stored_next_check_in();
            if let Some(at) = stored.filter(|_| stored != seen) {
                let wait = (at - verifier.now()).to_std().unwrap_or(Duration::ZERO);
                due = tokio::time::Instant::now() + wait;
                seen = stored;
            }
            continue;
        }
        let outcome = verifier.check_in().await;
        due = tokio::time::Instant::now() + verifier.delay_after(&outcome);
        seen = verifier.stored_next_check_in();
    }
}
