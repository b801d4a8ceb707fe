-- A batch's raw payload (usage, request performance, sessions) in one row instead of one row in
-- each of three tables (see the PostgreSQL twin). body is JSON, {"usage": [...],
-- "performance": [...], "sessions": {count, total_duration_s, hourly}}, which the server
-- stores deflated; rows copied here keep plain JSON, which the reader also takes.
CREATE TABLE telemetry_payloads (
    batch_id TEXT PRIMARY KEY NOT NULL,
    received_at TIMESTAMP NOT NULL,
    body BLOB NOT NULL
);
INSERT INTO telemetry_payloads (batch_id, received_at, body)
SELECT e.batch_id, e.received_at, CAST(json_object(
    'usage', json(e.usage),
    'performance', json(p.routes),
    'sessions', json_object('count', s.count, 'total_duration_s', s.total_duration_s, 'hourly', json(s.hourly))
) AS BLOB)
FROM telemetry_events e
JOIN telemetry_performance p ON p.batch_id = e.batch_id
JOIN telemetry_sessions s ON s.batch_id = e.batch_id;
DROP TABLE telemetry_events;
DROP TABLE telemetry_performance;
DROP TABLE telemetry_sessions;
