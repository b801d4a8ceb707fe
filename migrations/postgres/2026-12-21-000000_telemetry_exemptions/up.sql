-- The telemetry exemption an instance declared at its last check-in (`loopback`, `private
-- address`, `link-local address`, `local name`), or NULL when it sends telemetry. A loopback
-- instance (a developer's machine) holds no seat: seats count the others.
ALTER TABLE instances ADD COLUMN exemption TEXT;

-- What the vendor set for one license beside its signed key, and the license's soft seat
-- overage. Kept apart from `licenses`, whose row a check-in upserts from the key it presents.
CREATE TABLE license_terms (
    license_id TEXT PRIMARY KEY NOT NULL,
    -- Whether deployments on private networks may check in without telemetry (Community and
    -- Pro); NULL takes the server's default for the license's tier.
    private_exemption BOOLEAN,
    -- How many loopback instances may hold a place at once; NULL takes the server's default.
    max_loopback INTEGER,
    -- When the license first went over its seats, which starts its soft-overage period.
    overage_started_at TIMESTAMP
);
