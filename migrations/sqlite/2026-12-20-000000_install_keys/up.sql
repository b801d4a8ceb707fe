-- The key of each air-gapped install that reported usage by file, pinned at its first import:
-- later reports of the install must be signed by it. Beside it, where the install's chain of
-- reports stands: the sequence and digest of the last report imported, so that a missing,
-- replayed or reordered report is refused and the same report imported twice counts once.
-- Keyed by license and instance like the instances table, so no license reaches another's.
CREATE TABLE install_keys (
    license_id TEXT NOT NULL,
    instance_id TEXT NOT NULL,
    public_key TEXT NOT NULL,
    report_sequence BIGINT NOT NULL,
    report_digest TEXT NOT NULL,
    pinned_at TIMESTAMP NOT NULL,
    imported_at TIMESTAMP NOT NULL,
    PRIMARY KEY (license_id, instance_id)
);

-- A check-in that an imported usage report stands for names the report's sequence, so the
-- history tells a report carried by hand from a check-in over the network.
ALTER TABLE check_ins ADD COLUMN imported_report BIGINT;
