-- Back to three partitioned payload tables, split from each row's body. SQL cannot inflate the
-- bodies the server deflated, so the revert refuses while any is stored rather than lose them.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM telemetry_payloads WHERE get_byte(body, 0) <> 123) THEN
        RAISE EXCEPTION 'telemetry_payloads holds deflated payloads, which this revert cannot split: '
            'erase them (or wait until retention has) before reverting';
    END IF;
END $$;
DO $$
DECLARE
    p TEXT;
    d DATE;
    t TEXT;
BEGIN
    CREATE TABLE telemetry_events (
        batch_id TEXT NOT NULL, instance_id TEXT NOT NULL, received_at TIMESTAMP NOT NULL,
        usage TEXT COMPRESSION lz4 NOT NULL, PRIMARY KEY (batch_id, received_at)
    ) PARTITION BY RANGE (received_at);
    CREATE TABLE telemetry_performance (
        batch_id TEXT NOT NULL, instance_id TEXT NOT NULL, received_at TIMESTAMP NOT NULL,
        routes TEXT COMPRESSION lz4 NOT NULL, PRIMARY KEY (batch_id, received_at)
    ) PARTITION BY RANGE (received_at);
    CREATE TABLE telemetry_sessions (
        batch_id TEXT NOT NULL, instance_id TEXT NOT NULL, received_at TIMESTAMP NOT NULL,
        count BIGINT NOT NULL, total_duration_s BIGINT NOT NULL, hourly TEXT NOT NULL,
        PRIMARY KEY (batch_id, received_at)
    ) PARTITION BY RANGE (received_at);
    FOREACH t IN ARRAY ARRAY['telemetry_events', 'telemetry_performance', 'telemetry_sessions'] LOOP
        EXECUTE format('CREATE TABLE %I PARTITION OF %I DEFAULT', t || '_default', t);
        FOR p IN SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
                 WHERE i.inhparent = 'telemetry_payloads'::regclass AND c.relname ~ '_p[0-9]{8}$' LOOP
            d := to_date(right(p, 8), 'YYYYMMDD');
            EXECUTE format('CREATE TABLE %I PARTITION OF %I FOR VALUES FROM (%L) TO (%L)',
                t || '_p' || to_char(d, 'YYYYMMDD'), t, d, d + 1);
        END LOOP;
    END LOOP;
END $$;
INSERT INTO telemetry_events SELECT p.batch_id, b.instance_id, p.received_at, (convert_from(p.body, 'UTF8')::json -> 'usage')::text
    FROM telemetry_payloads p JOIN telemetry_batches b ON b.batch_id = p.batch_id;
INSERT INTO telemetry_performance SELECT p.batch_id, b.instance_id, p.received_at, (convert_from(p.body, 'UTF8')::json -> 'performance')::text
    FROM telemetry_payloads p JOIN telemetry_batches b ON b.batch_id = p.batch_id;
INSERT INTO telemetry_sessions SELECT p.batch_id, b.instance_id, p.received_at,
    (convert_from(p.body, 'UTF8')::json -> 'sessions' ->> 'count')::bigint, (convert_from(p.body, 'UTF8')::json -> 'sessions' ->> 'total_duration_s')::bigint,
    (convert_from(p.body, 'UTF8')::json -> 'sessions' -> 'hourly')::text
    FROM telemetry_payloads p JOIN telemetry_batches b ON b.batch_id = p.batch_id;
DROP TABLE telemetry_payloads;
