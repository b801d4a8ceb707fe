ALTER TABLE dashboard_sessions DROP COLUMN scope;
ALTER TABLE dashboard_sessions DROP COLUMN token_name;
DROP TABLE audit_log;
