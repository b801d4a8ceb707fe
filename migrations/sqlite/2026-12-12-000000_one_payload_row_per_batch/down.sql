-- Back to the three tables, split from each row's body. SQL cannot inflate the bodies the
-- server deflated, so the revert refuses while any is stored rather than lose them (a trigger
-- is SQLite's one way to raise an error from SQL).
CREATE TEMP TABLE payload_revert_guard (x INTEGER);
CREATE TEMP TRIGGER payload_revert_guard_check BEFORE INSERT ON payload_revert_guard
WHEN EXISTS (SELECT 1 FROM telemetry_payloads WHERE substr(body, 1, 1) <> X'7B')
BEGIN
    SELECT RAISE(ABORT, 'telemetry_payloads holds deflated payloads, which this revert cannot split: erase them (or wait until retention has) before reverting');
END;
INSERT INTO payload_revert_guard VALUES (1);
DROP TABLE payload_revert_guard;
CREATE TABLE telemetry_events (
    batch_id TEXT PRIMARY KEY NOT NULL, instance_id TEXT NOT NULL, received_at TIMESTAMP NOT NULL, usage TEXT NOT NULL
);
CREATE TABLE telemetry_performance (
    batch_id TEXT PRIMARY KEY NOT NULL, instance_id TEXT NOT NULL, received_at TIMESTAMP NOT NULL, routes TEXT NOT NULL
);
CREATE TABLE telemetry_sessions (
    batch_id TEXT PRIMARY KEY NOT NULL, instance_id TEXT NOT NULL, received_at TIMESTAMP NOT NULL,
    count BIGINT NOT NULL, total_duration_s BIGINT NOT NULL, hourly TEXT NOT NULL
);
INSERT INTO telemetry_events SELECT p.batch_id, b.instance_id, p.received_at, json_extract(CAST(p.body AS TEXT), '$.usage')
    FROM telemetry_payloads p JOIN telemetry_batches b ON b.batch_id = p.batch_id;
INSERT INTO telemetry_performance SELECT p.batch_id, b.instance_id, p.received_at, json_extract(CAST(p.body AS TEXT), '$.performance')
    FROM telemetry_payloads p JOIN telemetry_batches b ON b.batch_id = p.batch_id;
INSERT INTO telemetry_sessions SELECT p.batch_id, b.instance_id, p.received_at,
    json_extract(CAST(p.body AS TEXT), '$.sessions.count'), json_extract(CAST(p.body AS TEXT), '$.sessions.total_duration_s'),
    json_extract(CAST(p.body AS TEXT), '$.sessions.hourly')
    FROM telemetry_payloads p JOIN telemetry_batches b ON b.batch_id = p.batch_id;
DROP TABLE telemetry_payloads;
