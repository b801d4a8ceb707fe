-- A batch's raw payload (usage, request performance, sessions) in one row instead of one row in
-- each of three tables: every row paid a header, the batch and instance ids, the time and a
-- primary-key entry three times over. Still partitioned by the day it was received (see
-- partition_raw_telemetry); reached through telemetry_batches, which keeps the batch's id
-- unique. body is JSON, {"usage": [...], "performance": [...], "sessions": {count,
-- total_duration_s, hourly}}, which the server stores deflated (src/store/payload.rs): 900
-- bytes for the bench's batch, where lz4 on the three texts took 1,137. It is stored as it
-- comes (EXTERNAL): compressing it again would spend CPU for nothing. Rows copied here from
-- the three tables keep plain JSON, which the reader also takes.
CREATE TABLE telemetry_payloads (
    batch_id TEXT NOT NULL,
    received_at TIMESTAMP NOT NULL,
    body BYTEA NOT NULL,
    PRIMARY KEY (batch_id, received_at)
) PARTITION BY RANGE (received_at);
ALTER TABLE telemetry_payloads ALTER COLUMN body SET STORAGE EXTERNAL;
CREATE TABLE telemetry_payloads_default PARTITION OF telemetry_payloads DEFAULT;
-- The same daily partitions as the old tables had, so that their rows land in their day's.
DO $$
DECLARE
    p TEXT;
    d DATE;
BEGIN
    FOR p IN SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
             WHERE i.inhparent = 'telemetry_events'::regclass AND c.relname ~ '_p[0-9]{8}$' LOOP
        d := to_date(right(p, 8), 'YYYYMMDD');
        EXECUTE format('CREATE TABLE %I PARTITION OF telemetry_payloads FOR VALUES FROM (%L) TO (%L)',
            'telemetry_payloads_p' || to_char(d, 'YYYYMMDD'), d, d + 1);
    END LOOP;
END $$;
INSERT INTO telemetry_payloads (batch_id, received_at, body)
SELECT e.batch_id, e.received_at, convert_to(json_build_object(
    'usage', e.usage::json,
    'performance', p.routes::json,
    'sessions', json_build_object('count', s.count, 'total_duration_s', s.total_duration_s, 'hourly', s.hourly::json)
)::text, 'UTF8')
FROM telemetry_events e
JOIN telemetry_performance p ON p.batch_id = e.batch_id AND p.received_at = e.received_at
JOIN telemetry_sessions s ON s.batch_id = e.batch_id AND s.received_at = e.received_at;
DROP TABLE telemetry_events, telemetry_performance, telemetry_sessions;
