-- One row per run of a scheduled job. Replicas race to insert the row for a run; only the
-- one whose insert succeeds runs the job, so each run happens once across replicas.
CREATE TABLE job_runs (
    job TEXT NOT NULL,
    run_key TEXT NOT NULL,
    started_at TIMESTAMP NOT NULL,
    finished_at TIMESTAMP,
    outcome TEXT,
    PRIMARY KEY (job, run_key)
);
