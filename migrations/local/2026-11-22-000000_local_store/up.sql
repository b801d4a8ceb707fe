-- The client's local store (SQLite only). The telemetry tables carry the server's names; rows
-- whose batch_id is '' are not yet in a batch, others are in the outbox or were acknowledged.

-- What the verifier keeps across restarts: one row.
CREATE TABLE verifier_state (
    id INTEGER PRIMARY KEY NOT NULL CHECK (id = 1),
    instance_id TEXT NOT NULL,
    -- Hex; the secret salt for user-id hashes. It never leaves the install.
    salt TEXT NOT NULL,
    first_started_at TIMESTAMP NOT NULL,
    -- Where the next batch's period starts: the end of the last batch assembled.
    period_start TIMESTAMP NOT NULL,
    last_server_time TIMESTAMP,
    lease TEXT,
    last_check_in_at TIMESTAMP,
    last_result TEXT,
    next_check_in_at TIMESTAMP
);

CREATE TABLE telemetry_events (
    period_start TIMESTAMP NOT NULL,
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    batch_id TEXT NOT NULL DEFAULT '',
    count BIGINT NOT NULL,
    PRIMARY KEY (period_start, kind, name, batch_id)
);

CREATE TABLE telemetry_performance (
    period_start TIMESTAMP NOT NULL,
    method TEXT NOT NULL,
    route TEXT NOT NULL,
    batch_id TEXT NOT NULL DEFAULT '',
    count BIGINT NOT NULL,
    errors BIGINT NOT NULL,
    max_ms DOUBLE NOT NULL,
    sketch TEXT NOT NULL,
    PRIMARY KEY (period_start, method, route, batch_id)
);

CREATE TABLE telemetry_errors (
    fingerprint TEXT NOT NULL,
    batch_id TEXT NOT NULL DEFAULT '',
    error_type TEXT NOT NULL,
    message TEXT NOT NULL,
    -- JSON array of frames, already cut and stripped of paths.
    stack TEXT NOT NULL,
    count BIGINT NOT NULL,
    first_seen TIMESTAMP NOT NULL,
    last_seen TIMESTAMP NOT NULL,
    PRIMARY KEY (fingerprint, batch_id)
);

CREATE TABLE telemetry_sessions (
    period_start TIMESTAMP NOT NULL,
    batch_id TEXT NOT NULL DEFAULT '',
    count BIGINT NOT NULL,
    total_duration_s BIGINT NOT NULL,
    -- JSON array of 24 counts.
    hourly TEXT NOT NULL,
    PRIMARY KEY (period_start, batch_id)
);

-- The latest result of each registered health check.
CREATE TABLE telemetry_health (
    name TEXT PRIMARY KEY NOT NULL,
    status TEXT NOT NULL,
    checked_at TIMESTAMP NOT NULL
);

-- Salted hashes of user ids seen, for the batch's user-count range; never sent.
CREATE TABLE telemetry_users (
    user_hash TEXT PRIMARY KEY NOT NULL,
    last_seen TIMESTAMP NOT NULL
);

-- Counts not yet in a batch: `dropped.sampled`, `dropped.throttled`, `dropped.overflow` and
-- `redaction.<rule>`.
CREATE TABLE telemetry_tallies (
    name TEXT PRIMARY KEY NOT NULL,
    value BIGINT NOT NULL
);

-- The batch being sent: written before the first attempt, cleared on acknowledgement.
CREATE TABLE telemetry_outbox (
    batch_id TEXT PRIMARY KEY NOT NULL,
    created_at TIMESTAMP NOT NULL,
    payload TEXT NOT NULL,
    digest TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0
);

-- The ledger: every acknowledged batch, byte for byte (bounded; the oldest are dropped).
CREATE TABLE telemetry_batches (
    batch_id TEXT PRIMARY KEY NOT NULL,
    acknowledged_at TIMESTAMP NOT NULL,
    payload TEXT NOT NULL,
    digest TEXT NOT NULL
);
CREATE INDEX telemetry_batches_acknowledged_at ON telemetry_batches (acknowledged_at);
