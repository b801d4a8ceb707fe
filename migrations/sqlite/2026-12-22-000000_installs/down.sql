ALTER TABLE license_terms DROP COLUMN max_processes;
DROP INDEX instances_by_install;
ALTER TABLE instances DROP COLUMN machine;
ALTER TABLE instances DROP COLUMN install_source;
ALTER TABLE instances DROP COLUMN install_id;
