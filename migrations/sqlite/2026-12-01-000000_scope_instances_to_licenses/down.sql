-- Back to instance ids unique across licenses: of instances sharing an id, the most recently
-- seen is kept.
CREATE TABLE instances_unscoped (
    id TEXT PRIMARY KEY NOT NULL,
    license_id TEXT NOT NULL REFERENCES licenses (id),
    software_version TEXT NOT NULL,
    first_seen_at TIMESTAMP NOT NULL,
    last_check_in_at TIMESTAMP NOT NULL,
    last_status TEXT NOT NULL,
    seat_until TIMESTAMP
);
INSERT OR REPLACE INTO instances_unscoped
SELECT id, license_id, software_version, first_seen_at, last_check_in_at, last_status, seat_until
FROM instances ORDER BY last_check_in_at;
DROP TABLE instances;
ALTER TABLE instances_unscoped RENAME TO instances;
CREATE INDEX instances_license_seat ON instances (license_id, seat_until);

CREATE TABLE telemetry_errors_unscoped (
    instance_id TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    error_type TEXT NOT NULL,
    message TEXT NOT NULL,
    stack TEXT NOT NULL,
    count BIGINT NOT NULL,
    first_seen TIMESTAMP NOT NULL,
    last_seen TIMESTAMP NOT NULL,
    PRIMARY KEY (instance_id, fingerprint)
);
INSERT OR REPLACE INTO telemetry_errors_unscoped
SELECT instance_id, fingerprint, error_type, message, stack, count, first_seen, last_seen
FROM telemetry_errors ORDER BY last_seen;
DROP TABLE telemetry_errors;
ALTER TABLE telemetry_errors_unscoped RENAME TO telemetry_errors;

CREATE TABLE telemetry_features_unscoped (
    instance_id TEXT NOT NULL,
    day DATE NOT NULL,
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    count BIGINT NOT NULL,
    PRIMARY KEY (instance_id, day, kind, name)
);
INSERT OR REPLACE INTO telemetry_features_unscoped
SELECT instance_id, day, kind, name, count FROM telemetry_features;
DROP TABLE telemetry_features;
ALTER TABLE telemetry_features_unscoped RENAME TO telemetry_features;
CREATE INDEX telemetry_features_day ON telemetry_features (day);
