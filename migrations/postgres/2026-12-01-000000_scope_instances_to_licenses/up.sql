-- Instances are scoped to their license: an instance id names an instance of one license only,
-- so a check-in of another license naming the same id is another instance. It can neither
-- move this one, nor free its seat, nor mix its telemetry. The telemetry keyed by instance
-- (deduplicated errors, daily features) carries the license too.
-- Rows written before this migration had unique instance ids, so each takes its license from
-- its instance (rows of an instance that no longer exists keep an empty license id).
-- Keys start with the instance id: look-ups by instance alone (erasure, the admin's question
-- "which licenses have this id") use them, so no further index is written at every check-in.

ALTER TABLE telemetry_errors ADD COLUMN license_id TEXT NOT NULL DEFAULT '';
UPDATE telemetry_errors e SET license_id = i.license_id FROM instances i WHERE i.id = e.instance_id;
ALTER TABLE telemetry_errors ALTER COLUMN license_id DROP DEFAULT;
ALTER TABLE telemetry_errors DROP CONSTRAINT telemetry_errors_pkey;
ALTER TABLE telemetry_errors ADD PRIMARY KEY (instance_id, license_id, fingerprint);

ALTER TABLE telemetry_features ADD COLUMN license_id TEXT NOT NULL DEFAULT '';
UPDATE telemetry_features f SET license_id = i.license_id FROM instances i WHERE i.id = f.instance_id;
ALTER TABLE telemetry_features ALTER COLUMN license_id DROP DEFAULT;
ALTER TABLE telemetry_features DROP CONSTRAINT telemetry_features_pkey;
ALTER TABLE telemetry_features ADD PRIMARY KEY (instance_id, license_id, day, kind, name);

ALTER TABLE instances DROP CONSTRAINT instances_pkey;
ALTER TABLE instances ADD PRIMARY KEY (id, license_id);
