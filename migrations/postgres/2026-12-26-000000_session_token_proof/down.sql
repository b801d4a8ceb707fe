ALTER TABLE dashboard_sessions DROP COLUMN token_proof;
