-- Seats count installs, not processes: every process (an instance: a replica, a restart, a
-- redeploy with a fresh data directory) names the install it belongs to, an id the client
-- derives (LICENSOR_INSTALL_ID, else its instance URL's origin, else the machine's identity,
-- else its data directory's id, each hashed with the license id) and how (`install_source`),
-- with its machine's hashed identity where it has one. A process that is its own install (an
-- instance from before installs, or one whose install id comes from its data directory) has
-- no install id: it is found by its key, and the index holds only installs that processes can
-- share.
ALTER TABLE instances ADD COLUMN install_id TEXT;
ALTER TABLE instances ADD COLUMN install_source TEXT;
ALTER TABLE instances ADD COLUMN machine TEXT;
CREATE INDEX instances_by_install ON instances (license_id, install_id) WHERE install_id IS NOT NULL;

-- How many processes of one install may hold its seat at once (NULL: the server's default).
ALTER TABLE license_terms ADD COLUMN max_processes INTEGER;
