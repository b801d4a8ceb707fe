-- Webhook endpoints registered by the vendor. The secret signs every delivery (HMAC-SHA256),
-- so it is kept as given: it is shown once at registration and never again.
CREATE TABLE webhook_endpoints (
    id TEXT PRIMARY KEY NOT NULL,
    url TEXT NOT NULL,
    -- The event types it receives, comma-separated.
    events TEXT NOT NULL,
    secret TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL
);

-- The outbox: one row per event and endpoint, written in the transaction of what caused the
-- event (so a crash loses none), sent by whichever replica claims it first (claimed_until), and
-- retried with backoff until delivered or given up.
CREATE TABLE webhook_deliveries (
    event_id TEXT NOT NULL,
    endpoint_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    payload TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL,
    next_attempt_at TIMESTAMP NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    claimed_until TIMESTAMP,
    delivered_at TIMESTAMP,
    gave_up_at TIMESTAMP,
    last_status INTEGER,
    last_error TEXT,
    PRIMARY KEY (event_id, endpoint_id)
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at)
    WHERE delivered_at IS NULL AND gave_up_at IS NULL;
CREATE INDEX webhook_deliveries_endpoint ON webhook_deliveries (endpoint_id, created_at);
