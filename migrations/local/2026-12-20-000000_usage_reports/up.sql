-- What an air-gapped install needs to report usage by signed file, in one row: its own Ed25519
-- key (the 32-byte secret in hex, created at the first air-gapped start; the file is 0600, like
-- the salt), where its chain of reports stands (the sequence and digest of the last report a
-- verified receipt acknowledged), and the report exported and not yet acknowledged, which
-- `licensor telemetry export --signed` writes again, byte for byte, until its receipt comes back.
CREATE TABLE report_state (
    id INTEGER PRIMARY KEY NOT NULL CHECK (id = 1),
    install_key TEXT NOT NULL,
    report_sequence BIGINT NOT NULL DEFAULT 0,
    report_digest TEXT,
    pending_report TEXT
);
