-- PostgreSQL's twin compresses raw telemetry JSON with lz4; SQLite has no column compression,
-- and the embedded default keeps its simple tables. (The version exists so that both backends
-- carry the same migration names.)
SELECT 1;
