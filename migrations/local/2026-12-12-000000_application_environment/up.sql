-- The environment the application itself last recorded (its version, platform, modules and
-- uptime, as JSON of the protocol's Environment) and when: the `licensor` commands run on the
-- same data directory preview and send that, not their own version, and say how old the
-- application's last flush of figures is. NULL until an application records one.
ALTER TABLE verifier_state ADD COLUMN app_environment TEXT;
ALTER TABLE verifier_state ADD COLUMN app_recorded_at TIMESTAMP;
