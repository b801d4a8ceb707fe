DROP TABLE license_terms;
ALTER TABLE instances DROP COLUMN exemption;
