ALTER TABLE verifier_state DROP COLUMN app_recorded_at;
ALTER TABLE verifier_state DROP COLUMN app_environment;
