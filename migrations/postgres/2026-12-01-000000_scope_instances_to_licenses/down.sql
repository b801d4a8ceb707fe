-- Back to instance ids unique across licenses: of instances sharing an id, the most recently
-- seen is kept.
DELETE FROM instances a USING instances b
WHERE a.id = b.id AND (a.last_check_in_at, a.license_id) < (b.last_check_in_at, b.license_id);
ALTER TABLE instances DROP CONSTRAINT instances_pkey;
ALTER TABLE instances ADD PRIMARY KEY (id);

DELETE FROM telemetry_features a USING telemetry_features b
WHERE (a.instance_id, a.day, a.kind, a.name) = (b.instance_id, b.day, b.kind, b.name) AND a.license_id < b.license_id;
ALTER TABLE telemetry_features DROP CONSTRAINT telemetry_features_pkey;
ALTER TABLE telemetry_features DROP COLUMN license_id;
ALTER TABLE telemetry_features ADD PRIMARY KEY (instance_id, day, kind, name);

DELETE FROM telemetry_errors a USING telemetry_errors b
WHERE (a.instance_id, a.fingerprint) = (b.instance_id, b.fingerprint) AND a.last_seen < b.last_seen;
ALTER TABLE telemetry_errors DROP CONSTRAINT telemetry_errors_pkey;
ALTER TABLE telemetry_errors DROP COLUMN license_id;
ALTER TABLE telemetry_errors ADD PRIMARY KEY (instance_id, fingerprint);
