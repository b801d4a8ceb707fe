ALTER TABLE check_ins DROP COLUMN imported_report;
DROP TABLE install_keys;
