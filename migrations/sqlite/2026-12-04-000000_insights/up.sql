-- Roll-ups for the vendor's insights: the views read these (and telemetry_aggregates), never
-- raw batches, so their cost grows with installs x days, not with events.

-- Whether this server issued (or renewed) the license: the key column now holds the newest key
-- of every license, whoever issued it, so it no longer tells.
ALTER TABLE licenses ADD COLUMN issued_here BOOLEAN NOT NULL DEFAULT FALSE;
UPDATE licenses SET issued_here = TRUE WHERE license_key IS NOT NULL;

-- The lease a valid check-in granted, so that the roll-up knows which days it covers.
ALTER TABLE check_ins ADD COLUMN valid_until TIMESTAMP;

-- One row per install (a license's instance) and day its lease covered: its tier, version and
-- environment as last reported (carried forward from the day before when it sent nothing).
CREATE TABLE install_days (
    day DATE NOT NULL,
    license_id TEXT NOT NULL,
    instance_id TEXT NOT NULL,
    tier TEXT NOT NULL,
    software_version TEXT NOT NULL,
    lease_until TIMESTAMP NOT NULL,
    -- Whether a valid check-in arrived that day.
    checked_in BOOLEAN NOT NULL,
    -- '' where the install never sent an environment (air-gapped Enterprise).
    user_count_range TEXT NOT NULL,
    os TEXT NOT NULL,
    arch TEXT NOT NULL,
    -- JSON array of module names.
    modules TEXT NOT NULL,
    uptime_hours DOUBLE NOT NULL,
    -- JSON object: health check name to state.
    health TEXT NOT NULL,
    PRIMARY KEY (day, license_id, instance_id)
);
CREATE INDEX install_days_license ON install_days (license_id, day);

-- Request performance per day, route and software version, across installs: the batches'
-- sketches merged (sketch is '' where some batch carried none; the percentiles are then the
-- batches' weighted by request count).
CREATE TABLE route_days (
    day DATE NOT NULL,
    method TEXT NOT NULL,
    route TEXT NOT NULL,
    software_version TEXT NOT NULL,
    count BIGINT NOT NULL,
    errors BIGINT NOT NULL,
    p50_ms DOUBLE NOT NULL,
    p95_ms DOUBLE NOT NULL,
    p99_ms DOUBLE NOT NULL,
    max_ms DOUBLE NOT NULL,
    sketch TEXT NOT NULL,
    installs BIGINT NOT NULL,
    PRIMARY KEY (day, method, route, software_version)
);
