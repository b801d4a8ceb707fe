DROP TABLE check_ins;
DROP TABLE instances;
DROP TABLE licenses;
