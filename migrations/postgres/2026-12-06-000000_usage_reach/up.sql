-- The installs behind a daily figure as a mergeable distinct-count sketch (`crate::reach`), for
-- the figures whose installs are counted over periods (usage per name, active installs): a
-- period's distinct installs are the days' sketches merged, not a distinct count over every
-- install-day. '' for figures that need none.
ALTER TABLE telemetry_aggregates ADD COLUMN reach TEXT NOT NULL DEFAULT '';

-- One license's usage (its page in the dashboard, GET /v1/admin/licenses/{id}).
CREATE INDEX telemetry_features_license ON telemetry_features (license_id, day);
