-- Licenses seen in check-ins or issued through the admin API, instances holding them,
-- and the history of check-ins. Times are UTC; ids are UUID text.
CREATE TABLE licenses (
    id TEXT PRIMARY KEY NOT NULL,
    kid TEXT NOT NULL,
    licensee TEXT NOT NULL,
    tier TEXT NOT NULL,
    seats INTEGER NOT NULL,
    -- JSON array of feature names.
    features TEXT NOT NULL,
    issued_at TIMESTAMP NOT NULL,
    not_before TIMESTAMP NOT NULL,
    expires_at TIMESTAMP,
    check_in_interval_s BIGINT,
    -- The key itself, when this server issued it.
    license_key TEXT,
    revoked_at TIMESTAMP,
    revoked_reason TEXT,
    first_seen_at TIMESTAMP NOT NULL,
    last_check_in_at TIMESTAMP
);

CREATE TABLE instances (
    id TEXT PRIMARY KEY NOT NULL,
    license_id TEXT NOT NULL REFERENCES licenses (id),
    software_version TEXT NOT NULL,
    first_seen_at TIMESTAMP NOT NULL,
    last_check_in_at TIMESTAMP NOT NULL,
    last_status TEXT NOT NULL,
    -- The valid-until of the last lease that granted a seat: the instance holds a seat
    -- while this is in the future.
    seat_until TIMESTAMP
);
CREATE INDEX instances_license_seat ON instances (license_id, seat_until);

CREATE TABLE check_ins (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    instance_id TEXT NOT NULL,
    -- NULL when the license could not be read or its signature did not verify.
    license_id TEXT,
    at TIMESTAMP NOT NULL,
    status TEXT NOT NULL,
    software_version TEXT NOT NULL,
    telemetry_batch_id TEXT
);
CREATE INDEX check_ins_at ON check_ins (at);
CREATE INDEX check_ins_instance_at ON check_ins (instance_id, at);
