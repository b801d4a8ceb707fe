-- What every admin action did, kept past the telemetry retention (no job deletes it): who (the
-- admin token's name), what (method and route pattern), on
-- what (the route's parameters), and how it ended (the answer's status). Never a token, a body or
-- a client address.
CREATE TABLE audit_log (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at TIMESTAMP NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    status INTEGER NOT NULL,
    request_id TEXT NOT NULL
);
CREATE INDEX audit_log_actor ON audit_log (actor, id);

-- A dashboard session remembers which admin token opened it, and that token's scope.
ALTER TABLE dashboard_sessions ADD COLUMN token_name TEXT NOT NULL DEFAULT 'admin';
ALTER TABLE dashboard_sessions ADD COLUMN scope TEXT NOT NULL DEFAULT 'full';
