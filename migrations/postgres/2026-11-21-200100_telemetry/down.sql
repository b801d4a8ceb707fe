DROP TABLE telemetry_aggregates;
DROP TABLE telemetry_sessions;
DROP TABLE telemetry_performance;
DROP TABLE telemetry_errors;
DROP TABLE telemetry_features;
DROP TABLE telemetry_events;
DROP TABLE telemetry_batches;
