-- The vendor's insights count installs, not processes. The roll-up finds each process's install
-- in `instances`, and, for a process whose row is gone (released, deactivated or replaced), in
-- `released_processes`, which keeps that mapping until retention ages it out: so nothing is
-- added to the rows every check-in writes. The daily features keep the install beside the
-- process, and a day's active installs are keyed by it.
CREATE TABLE released_processes (
    license_id TEXT NOT NULL,
    instance_id TEXT NOT NULL,
    install_id TEXT NOT NULL,
    released_at TIMESTAMP NOT NULL,
    PRIMARY KEY (license_id, instance_id)
);
ALTER TABLE telemetry_features ADD COLUMN install_id TEXT;
ALTER TABLE install_days RENAME COLUMN instance_id TO install_id;
