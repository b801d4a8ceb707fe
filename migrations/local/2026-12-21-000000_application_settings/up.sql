-- What the application ran with that its operator's commands need and may not have: the
-- license server's URL, the instance URL and the key ring it trusted (JSON; public keys only).
-- The commands show and inspect with them; nothing that changes the deployment's state is ever
-- verified against this ring. NULL until an application records them.
ALTER TABLE verifier_state ADD COLUMN app_settings TEXT;
