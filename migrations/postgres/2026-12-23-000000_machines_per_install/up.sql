-- How many distinct machines (hashed identities) the processes of one install may run on at
-- once (NULL: the server's default, which is no limit): one install id shared by a whole fleet
-- shows in the vendor's views, and with this set, is refused past the limit.
ALTER TABLE license_terms ADD COLUMN max_machines INTEGER;
