-- Instances are scoped to their license: an instance id names an instance of one license only,
-- so a check-in of another license naming the same id is another instance. It can neither
-- move this one, nor free its seat, nor mix its telemetry. The telemetry keyed by instance
-- (deduplicated errors, daily features) carries the license too.
-- Rows written before this migration had unique instance ids, so each takes its license from
-- its instance (rows of an instance that no longer exists keep an empty license id).
-- Keys start with the instance id: look-ups by instance alone (erasure, the admin's question
-- "which licenses have this id") use them, so no further index is written at every check-in.

CREATE TABLE telemetry_errors_scoped (
    license_id TEXT NOT NULL,
    instance_id TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    error_type TEXT NOT NULL,
    message TEXT NOT NULL,
    stack TEXT NOT NULL,
    count BIGINT NOT NULL,
    first_seen TIMESTAMP NOT NULL,
    last_seen TIMESTAMP NOT NULL,
    PRIMARY KEY (instance_id, license_id, fingerprint)
);
INSERT INTO telemetry_errors_scoped
SELECT COALESCE((SELECT i.license_id FROM instances i WHERE i.id = e.instance_id), ''),
       e.instance_id, e.fingerprint, e.error_type, e.message, e.stack, e.count, e.first_seen, e.last_seen
FROM telemetry_errors e;
DROP TABLE telemetry_errors;
ALTER TABLE telemetry_errors_scoped RENAME TO telemetry_errors;

CREATE TABLE telemetry_features_scoped (
    license_id TEXT NOT NULL,
    instance_id TEXT NOT NULL,
    day DATE NOT NULL,
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    count BIGINT NOT NULL,
    PRIMARY KEY (instance_id, license_id, day, kind, name)
);
INSERT INTO telemetry_features_scoped
SELECT COALESCE((SELECT i.license_id FROM instances i WHERE i.id = f.instance_id), ''),
       f.instance_id, f.day, f.kind, f.name, f.count
FROM telemetry_features f;
DROP TABLE telemetry_features;
ALTER TABLE telemetry_features_scoped RENAME TO telemetry_features;
CREATE INDEX telemetry_features_day ON telemetry_features (day);

CREATE TABLE instances_scoped (
    id TEXT NOT NULL,
    license_id TEXT NOT NULL REFERENCES licenses (id),
    software_version TEXT NOT NULL,
    first_seen_at TIMESTAMP NOT NULL,
    last_check_in_at TIMESTAMP NOT NULL,
    last_status TEXT NOT NULL,
    seat_until TIMESTAMP,
    PRIMARY KEY (id, license_id)
);
INSERT INTO instances_scoped
SELECT id, license_id, software_version, first_seen_at, last_check_in_at, last_status, seat_until FROM instances;
DROP TABLE instances;
ALTER TABLE instances_scoped RENAME TO instances;
CREATE INDEX instances_license_seat ON instances (license_id, seat_until);
