ALTER TABLE license_terms DROP COLUMN max_machines;
