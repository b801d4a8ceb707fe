-- Telemetry as received in check-ins. The check-in path only appends one row per raw table
-- (and upserts the deduplicated errors); the daily rollup job derives telemetry_features and
-- telemetry_aggregates. Raw tables are kept for the retention period (90 days by default) and
-- are reached through telemetry_batches, whose indexes serve summaries, erasure and retention.

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

-- Usage counts of each batch (feature, api, command, ui_action), raw: one row per batch, the
-- entries as a JSON array of {kind, name, count}. One row rather than one per counter keeps a
-- check-in's writes small; the daily rollup derives per-name rows into telemetry_features.
-- Reached through telemetry_batches (by instance and time), so only the key is indexed.
CREATE TABLE telemetry_events (
    batch_id TEXT PRIMARY KEY NOT NULL,
    instance_id TEXT NOT NULL,
    received_at TIMESTAMP NOT NULL,
    usage TEXT NOT NULL
);

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

-- Request performance of each batch, raw: one row per batch, the routes as a JSON array of
-- {method, route, count, errors, p50_ms, p95_ms, p99_ms, max_ms, sketch}.
CREATE TABLE telemetry_performance (
    batch_id TEXT PRIMARY KEY NOT NULL,
    instance_id TEXT NOT NULL,
    received_at TIMESTAMP NOT NULL,
    routes TEXT NOT NULL
);

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

-- Raw JSON is written once and read rarely: store it uncompressed, which saves the CPU that
-- compressing every batch cost under load.
ALTER TABLE telemetry_events ALTER COLUMN usage SET STORAGE EXTERNAL;
ALTER TABLE telemetry_performance ALTER COLUMN routes SET STORAGE EXTERNAL;
ALTER TABLE telemetry_batches ALTER COLUMN environment SET STORAGE EXTERNAL;
