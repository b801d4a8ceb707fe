//! Scheduled jobs: nightly retention and the daily rollup, on tokio-cron-scheduler. With
//! several replicas on one database, each run is claimed in `job_runs` first (see
//! `Store::claim_job`), so it happens once; a replica that loses the claim skips the run.

use crate::error_chain::Chain;
use chrono::{DateTime, Duration, Utc};
use tokio_cron_scheduler::{Job, JobScheduler, JobSchedulerError};

use super::config::ServerConfig;
use super::Clock;
use crate::store::{Store, StoreError};

/// The name under which retention runs are claimed.
pub const RETENTION: &str = "retention";
/// The name under which rollup runs are claimed.
pub const ROLLUP: &str = "rollup";

/// What one job run did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunOutcome {
    /// This replica ran it; the text says what it did.
    Ran(String),
    /// Another replica (or an earlier run) already claimed this run.
    Skipped,
}

/// Deletes raw telemetry and check-in history older than `retention_days`, once per UTC day.
pub fn run_retention(
    store: &Store,
    now: DateTime<Utc>,
    retention_days: u32,
) -> Result<RunOutcome, StoreError> {
    let run_key = now.format("%Y-%m-%d").to_string();
    let Some(claim) = store.claim_job(RETENTION, &run_key, now)? else {
        return Ok(RunOutcome::Skipped);
    };
    let cutoff = now - Duration::days(i64::from(retention_days));
    // The coming week's partitions exist before their data arrives (PostgreSQL).
    if let Err(e) = store.ensure_partitions(now.date_naive(), PARTITIONS_AHEAD) {
        tracing::warn!(error = %Chain(&e), "creating the coming days' partitions failed");
    }
    // On PostgreSQL whole days of raw payload go first, a partition at a time (each drop is
    // O(1)); the deletes then touch only the default partition and the cutoff's own day.
    let purged = store
        .drop_partitions_before(cutoff.date_naive())
        .and_then(|dropped| store.purge_before(cutoff).map(|removed| (dropped, removed)));
    let outcome = match purged {
        Ok((dropped, removed)) => {
            let total: usize = removed.values().sum();
            let partitions = if dropped.len() == 1 { "partition" } else { "partitions" };
            format!(
                "dropped {} daily {partitions} and removed {total} rows received before {}",
                dropped.len(),
                crate::time::format(&cutoff)
            )
        }
        Err(e) => {
            store.finish_job(&claim, now, &format!("failed: {e}"))?;
            return Err(e);
        }
    };
    store.finish_job(&claim, now, &outcome)?;
    Ok(RunOutcome::Ran(outcome))
}

/// How many days of partitions (today and after) the retention job and a start keep ready.
pub const PARTITIONS_AHEAD: u32 = 8;

/// Rolls up the previous UTC day (see `Store::rollup_day`), once.
pub fn run_rollup(store: &Store, now: DateTime<Utc>) -> Result<RunOutcome, StoreError> {
    let day = (now - Duration::days(1)).date_naive();
    let Some(claim) = store.claim_job(ROLLUP, &day.format("%Y-%m-%d").to_string(), now)? else {
        return Ok(RunOutcome::Skipped);
    };
    rollup_claimed(store, claim, day, now, None)
}

/// How long a run may go without finishing before a run asked for now takes it over.
const STALE_RUN: i64 = 60 * 60;

/// Rolls up `day` now, as the admin asks: claimed under the same key as the nightly run of that
/// day, so it never runs beside one (`Skipped` while one is under way), and run again when the
/// day was rolled up before (a roll-up replaces the day's rows).
pub fn run_rollup_of(
    store: &Store,
    day: chrono::NaiveDate,
    now: DateTime<Utc>,
    audit: Option<&crate::store::Audit>,
) -> Result<RunOutcome, StoreError> {
    let run_key = day.format("%Y-%m-%d").to_string();
    let Some(claim) = store.claim_job_again(ROLLUP, &run_key, now, Duration::seconds(STALE_RUN))? else {
        return Ok(RunOutcome::Skipped);
    };
    rollup_claimed(store, claim, day, now, audit)
}

fn rollup_claimed(
    store: &Store,
    claim: crate::store::JobClaim,
    day: chrono::NaiveDate,
    now: DateTime<Utc>,
    audit: Option<&crate::store::Audit>,
) -> Result<RunOutcome, StoreError> {
    match store.rollup_day(day, audit) {
        Ok(rows) => {
            let outcome = format!("rolled up {day}: {rows} rows");
            store.finish_job(&claim, now, &outcome)?;
            Ok(RunOutcome::Ran(outcome))
        }
        Err(e) => {
            store.finish_job(&claim, now, &format!("failed: {e}"))?;
            Err(e)
        }
    }
}

/// Why the jobs could not be scheduled.
#[derive(Debug, thiserror::Error)]
#[error("cannot schedule {what}")]
pub struct ScheduleError {
    what: String,
    source: JobSchedulerError,
}

/// Schedules both jobs and starts the scheduler.
pub async fn schedule(
    config: &ServerConfig,
    store: Store,
    clock: Clock,
    metrics: std::sync::Arc<crate::metrics::Metrics>,
) -> Result<JobScheduler, ScheduleError> {
    let failed = |what: String| move |source| ScheduleError { what, source };
    let scheduler = JobScheduler::new().await.map_err(failed("the scheduler".into()))?;
    let retention_days = config.retention_days;
    let jobs: [(&str, &str); 2] =
        [(RETENTION, &config.retention_schedule), (ROLLUP, &config.rollup_schedule)];
    for (name, schedule) in jobs {
        let (store, clock, metrics) = (store.clone(), clock.clone(), metrics.clone());
        let job = Job::new_async(schedule, move |_, _| {
            let (store, clock, metrics) = (store.clone(), clock.clone(), metrics.clone());
            Box::pin(async move {
                let started = std::time::Instant::now();
                let result = tokio::task::spawn_blocking(move || {
                    let now = clock();
                    match name {
                        RETENTION => run_retention(&store, now, retention_days),
                        _ => run_rollup(&store, now),
                    }
                })
                .await;
                let outcome = match &result {
                    Ok(Ok(RunOutcome::Ran(_))) => "ran",
                    Ok(Ok(RunOutcome::Skipped)) => "claimed_elsewhere",
                    Ok(Err(_)) | Err(_) => "failed",
                };
                metrics.job_ran(name, outcome, started.elapsed().as_secs_f64());
                match result {
                    Ok(Ok(RunOutcome::Ran(what))) => tracing::info!(job = name, "{what}"),
                    Ok(Ok(RunOutcome::Skipped)) => {
                        tracing::debug!(job = name, "run claimed by another replica")
                    }
                    Ok(Err(e)) => tracing::error!(job = name, error = %Chain(&e), "job failed"),
                    Err(e) => tracing::error!(job = name, error = %Chain(&e), "job panicked"),
                }
            })
        })
        .map_err(failed(format!("the {name} job on {schedule:?}")))?;
        scheduler.add(job).await.map_err(failed(format!("the {name} job")))?;
    }
    scheduler.start().await.map_err(failed("the scheduler".into()))?;
    Ok(scheduler)
}
