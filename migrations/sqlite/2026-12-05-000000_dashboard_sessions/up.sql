-- Sessions of the vendor's dashboard, after a sign-in with the admin token. Kept in the
-- database so that every replica knows them and a sign-out ends one everywhere. The cookie
-- holds a random token; only its SHA-256 is stored, so a copy of the database opens no session.
CREATE TABLE dashboard_sessions (
    token_hash TEXT PRIMARY KEY NOT NULL,
    -- The form token every state-changing form must carry (CSRF).
    csrf TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL,
    expires_at TIMESTAMP NOT NULL
);
CREATE INDEX dashboard_sessions_expires ON dashboard_sessions (expires_at);
