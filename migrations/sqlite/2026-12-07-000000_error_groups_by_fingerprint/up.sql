-- The errors view sums groups across installs and reads each group's latest text by its
-- fingerprint and last sighting.
CREATE INDEX telemetry_errors_fingerprint ON telemetry_errors (fingerprint, last_seen);
