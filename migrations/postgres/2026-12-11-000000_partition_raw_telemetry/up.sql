-- The raw payload tables (usage, routes, sessions of each batch) partitioned by the day they
-- were received, so that retention drops a day's partition instead of deleting its rows. The
-- key becomes (batch_id, received_at), as a partitioned table's key must hold the partition
-- key; a batch's id stays unique through telemetry_batches, which is not partitioned.
-- Rows written before this migration go to the default partition, which retention empties by
-- deleting as before. Daily partitions are created ahead by the jobs (and here, for the coming
-- week), never for a day the default partition already holds rows of.
DO $$
DECLARE
    t TEXT;
    d DATE;
BEGIN
    FOREACH t IN ARRAY ARRAY['telemetry_events', 'telemetry_performance', 'telemetry_sessions'] LOOP
        EXECUTE format('ALTER TABLE %I RENAME TO %I', t, t || '_unpartitioned');
        EXECUTE format(
            'CREATE TABLE %I (LIKE %I INCLUDING DEFAULTS INCLUDING STORAGE INCLUDING COMPRESSION) '
            'PARTITION BY RANGE (received_at)', t, t || '_unpartitioned');
        EXECUTE format('CREATE TABLE %I PARTITION OF %I DEFAULT', t || '_default', t);
        EXECUTE format('INSERT INTO %I SELECT * FROM %I', t, t || '_unpartitioned');
        EXECUTE format('DROP TABLE %I', t || '_unpartitioned');
        EXECUTE format('ALTER TABLE %I ADD CONSTRAINT %I PRIMARY KEY (batch_id, received_at)', t, t || '_pkey');
        FOR d IN SELECT generate_series(current_date + 1, current_date + 7, interval '1 day')::date LOOP
            EXECUTE format('CREATE TABLE %I PARTITION OF %I FOR VALUES FROM (%L) TO (%L)',
                t || '_p' || to_char(d, 'YYYYMMDD'), t, d, d + 1);
        END LOOP;
    END LOOP;
END $$;
