-- Telemetry as received in check-ins. The check-in path only appends (and upserts the
-- deduplicated errors); the daily rollup job derives telemetry_features and
-- telemetry_aggregates. Raw tables are kept for the retention period (90 days by default).

-- One row per accepted batch; its primary key is the idempotency key.
CREATE TABLE telemetry_batches (
    batch_id TEXT PRIMARY KEY NOT NULL,
    instance_id TEXT NOT NULL,
    license_id TEXT NOT NULL,
    received_at TIMESTAMP NOT NULL,
    period_start TIMESTAMP NOT NULL,
    period_end TIMESTAMP NOT NULL,
    -- SHA-256 of the batch's bytes as received.
    digest TEXT NOT NULL,
    app_version TEXT NOT NULL,
    user_count_range TEXT NOT NULL,
    -- JSON: the batch's environment (os, arch, modules, uptime, sync status, health),
    -- its drop counts and its redaction counts, each read whole.
    environment TEXT NOT NULL,
    dropped TEXT NOT NULL,
    redactions TEXT NOT NULL
);
CREATE INDEX telemetry_batches_instance ON telemetry_batches (instance_id, received_at);
CREATE INDEX telemetry_batches_received ON telemetry_batches (received_at);

-- Usage counts per batch (feature, api, command, ui_action), raw.
CREATE TABLE telemetry_events (
    id BIGSERIAL PRIMARY KEY,
    batch_id TEXT NOT NULL,
    instance_id TEXT NOT NULL,
    received_at TIMESTAMP NOT NULL,
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    count BIGINT NOT NULL
);
CREATE INDEX telemetry_events_instance ON telemetry_events (instance_id, received_at);
CREATE INDEX telemetry_events_received ON telemetry_events (received_at);

-- Usage per instance, kind, name and day, rolled up from telemetry_events; kept forever.
CREATE TABLE telemetry_features (
    instance_id TEXT NOT NULL,
    day DATE NOT NULL,
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    count BIGINT NOT NULL,
    PRIMARY KEY (instance_id, day, kind, name)
);
CREATE INDEX telemetry_features_day ON telemetry_features (day);

-- Errors deduplicated by fingerprint per instance; kept forever.
CREATE TABLE telemetry_errors (
    instance_id TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    error_type TEXT NOT NULL,
    message TEXT NOT NULL,
    -- JSON array of at most 5 scrubbed lines.
    stack TEXT NOT NULL,
    count BIGINT NOT NULL,
    first_seen TIMESTAMP NOT NULL,
    last_seen TIMESTAMP NOT NULL,
    PRIMARY KEY (instance_id, fingerprint)
);

-- Request performance per batch, method and route, raw.
CREATE TABLE telemetry_performance (
    id BIGSERIAL PRIMARY KEY,
    batch_id TEXT NOT NULL,
    instance_id TEXT NOT NULL,
    received_at TIMESTAMP NOT NULL,
    method TEXT NOT NULL,
    route TEXT NOT NULL,
    count BIGINT NOT NULL,
    errors BIGINT NOT NULL,
    p50_ms DOUBLE PRECISION NOT NULL,
    p95_ms DOUBLE PRECISION NOT NULL,
    p99_ms DOUBLE PRECISION NOT NULL,
    max_ms DOUBLE PRECISION NOT NULL,
    sketch TEXT NOT NULL
);
CREATE INDEX telemetry_performance_instance ON telemetry_performance (instance_id, received_at);
CREATE INDEX telemetry_performance_received ON telemetry_performance (received_at);

-- Sessions per batch, raw.
CREATE TABLE telemetry_sessions (
    batch_id TEXT PRIMARY KEY NOT NULL,
    instance_id TEXT NOT NULL,
    received_at TIMESTAMP NOT NULL,
    count BIGINT NOT NULL,
    total_duration_s BIGINT NOT NULL,
    -- JSON array of 24 counts, by hour of day (UTC).
    hourly TEXT NOT NULL
);
CREATE INDEX telemetry_sessions_instance ON telemetry_sessions (instance_id, received_at);
CREATE INDEX telemetry_sessions_received ON telemetry_sessions (received_at);

-- Daily summaries across installs, by metric and dimension; kept forever. instances counts
-- the distinct installs behind a figure, so public views can hide figures from too few.
CREATE TABLE telemetry_aggregates (
    day DATE NOT NULL,
    metric TEXT NOT NULL,
    dimension TEXT NOT NULL,
    value DOUBLE PRECISION NOT NULL,
    instances BIGINT NOT NULL,
    PRIMARY KEY (day, metric, dimension)
);
