ALTER TABLE verifier_state DROP COLUMN app_settings;
