DROP INDEX telemetry_features_license;
ALTER TABLE telemetry_aggregates DROP COLUMN reach;
