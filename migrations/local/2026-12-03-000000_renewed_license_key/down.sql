ALTER TABLE verifier_state DROP COLUMN license_key;
