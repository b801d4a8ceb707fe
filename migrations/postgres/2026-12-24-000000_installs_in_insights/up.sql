-- The vendor's insights count installs, not processes: each check-in and batch records the
-- install its process belongs to (NULL for clients before installs, whose process is its own
-- install), the daily features keep it beside the process, and a day's active installs are
-- keyed by it.
ALTER TABLE check_ins ADD COLUMN install_id TEXT;
ALTER TABLE telemetry_batches ADD COLUMN install_id TEXT;
ALTER TABLE telemetry_features ADD COLUMN install_id TEXT;
ALTER TABLE install_days RENAME COLUMN instance_id TO install_id;
