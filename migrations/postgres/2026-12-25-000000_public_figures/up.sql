-- The public page publishes only names the vendor marked public (in the dashboard, audited, or
-- by the `public_names` setting), and each whole month is computed once and then kept as it
-- was published: two publications of one period never differ, so no difference between them
-- can single out a license.
CREATE TABLE public_names (
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    marked_at TIMESTAMP NOT NULL,
    PRIMARY KEY (kind, name)
);
CREATE TABLE public_publications (
    period_from DATE PRIMARY KEY,
    body TEXT NOT NULL,
    computed_at TIMESTAMP NOT NULL
);
