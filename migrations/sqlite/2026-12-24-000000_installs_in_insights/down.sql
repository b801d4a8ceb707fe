ALTER TABLE install_days RENAME COLUMN install_id TO instance_id;
ALTER TABLE telemetry_features DROP COLUMN install_id;
DROP TABLE released_processes;
