-- PostgreSQL's twin partitions the raw payload tables by day; SQLite keeps its simple tables
-- (retention deletes rows). The version exists so that both backends carry the same names.
SELECT 1;
