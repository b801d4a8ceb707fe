DROP TABLE route_days;
DROP TABLE install_days;
ALTER TABLE check_ins DROP COLUMN valid_until;
ALTER TABLE licenses DROP COLUMN issued_here;
