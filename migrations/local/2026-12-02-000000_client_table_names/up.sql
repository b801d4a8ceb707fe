-- The client's tables had the server's names with other columns, which misled anyone reading
-- both schemas. They get names of their own; SQLite moves their indexes with them.
ALTER TABLE telemetry_events RENAME TO usage_counts;
ALTER TABLE telemetry_performance RENAME TO route_latencies;
ALTER TABLE telemetry_errors RENAME TO error_groups;
ALTER TABLE telemetry_sessions RENAME TO session_counts;
ALTER TABLE telemetry_health RENAME TO health_checks;
ALTER TABLE telemetry_users RENAME TO seen_users;
ALTER TABLE telemetry_tallies RENAME TO pending_tallies;
ALTER TABLE telemetry_outbox RENAME TO outbox;
ALTER TABLE telemetry_batches RENAME TO ledger;
