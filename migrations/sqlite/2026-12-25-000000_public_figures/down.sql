DROP TABLE public_publications;
DROP TABLE public_names;
