DO $$
DECLARE
    t TEXT;
BEGIN
    FOREACH t IN ARRAY ARRAY['telemetry_events', 'telemetry_performance', 'telemetry_sessions'] LOOP
        EXECUTE format('ALTER TABLE %I RENAME TO %I', t, t || '_partitioned');
        EXECUTE format('CREATE TABLE %I (LIKE %I INCLUDING DEFAULTS INCLUDING STORAGE INCLUDING COMPRESSION)', t, t || '_partitioned');
        EXECUTE format('INSERT INTO %I SELECT * FROM %I', t, t || '_partitioned');
        EXECUTE format('DROP TABLE %I', t || '_partitioned');
        EXECUTE format('ALTER TABLE %I ADD PRIMARY KEY (batch_id)', t);
    END LOOP;
END $$;
