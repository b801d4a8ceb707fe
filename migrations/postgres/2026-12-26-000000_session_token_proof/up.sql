-- A proof of the admin token that signed a dashboard session in: SHA-256 over the session's
-- token hash and the admin token's digest. Each request checks it against the tokens configured
-- now, so a removed or rotated token ends its sessions. Sessions from before have none and end.
ALTER TABLE dashboard_sessions ADD COLUMN token_proof TEXT NOT NULL DEFAULT '';
