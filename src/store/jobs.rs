//! Claims on scheduled job runs, so that with several replicas on one database each run
//! happens once: the replica whose insert of `(job, run_key)` succeeds runs it.

use chrono::{DateTime, Utc};
use diesel::prelude::*;

use super::models::naive;
use super::schema::job_runs;
use super::{on_backend, Store, StoreError};

/// A run this replica won the right to perform.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobClaim {
    pub job: String,
    pub run_key: String,
}

impl Store {
    /// Claims the run `run_key` of `job`; `None` when another replica (or an earlier run of
    /// this one) already claimed it.
    pub fn claim_job(
        &self,
        job: &str,
        run_key: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<JobClaim>, StoreError> {
        let mut conn = self.conn()?;
        let inserted = on_backend!(&mut *conn, c => {
            diesel::insert_into(job_runs::table)
                .values((job_runs::job.eq(job), job_runs::run_key.eq(run_key), job_runs::started_at.eq(naive(now))))
                .on_conflict_do_nothing()
                .execute(c)?
        });
        Ok((inserted == 1).then(|| JobClaim { job: job.to_owned(), run_key: run_key.to_owned() }))
    }

    /// Claims the run `run_key` of `job` for a run asked for now (by the admin): like
    /// [`Store::claim_job`], but a run that already finished, or one started more than
    /// `stale_after` ago that never finished (its process died), is taken over and run again.
    /// `None` while another run of it is under way.
    pub fn claim_job_again(
        &self,
        job: &str,
        run_key: &str,
        now: DateTime<Utc>,
        stale_after: chrono::Duration,
    ) -> Result<Option<JobClaim>, StoreError> {
        if let Some(claim) = self.claim_job(job, run_key, now)? {
            return Ok(Some(claim));
        }
        let taken = diesel::update(job_runs::table.find((job, run_key)).filter(
            job_runs::finished_at.is_not_null().or(job_runs::started_at.lt(naive(now - stale_after))),
        ))
        .set((
            job_runs::started_at.eq(naive(now)),
            job_runs::finished_at.eq(None::<chrono::NaiveDateTime>),
            job_runs::outcome.eq(None::<String>),
        ))
        .execute(&mut self.conn()?)?;
        Ok((taken == 1).then(|| JobClaim { job: job.to_owned(), run_key: run_key.to_owned() }))
    }

    /// Records how a claimed run ended.
    pub fn finish_job(&self, claim: &JobClaim, now: DateTime<Utc>, outcome: &str) -> Result<(), StoreError> {
        diesel::update(job_runs::table.find((&claim.job, &claim.run_key)))
            .set((job_runs::finished_at.eq(naive(now)), job_runs::outcome.eq(outcome)))
            .execute(&mut self.conn()?)?;
        Ok(())
    }

    #[cfg(feature = "test-support")]
    /// The runs recorded for `job`: (run key, outcome), for tests.
    pub fn job_runs(&self, job: &str) -> Result<Vec<(String, Option<String>)>, StoreError> {
        Ok(job_runs::table
            .filter(job_runs::job.eq(job))
            .order(job_runs::run_key)
            .select((job_runs::run_key, job_runs::outcome))
            .load(&mut self.conn()?)?)
    }
}
