-- The license key a check-in answer delivered (a renewal, or new seats or features), kept so
-- that the deployment uses it across restarts without anyone pasting it into its settings.
-- NULL until the server delivers one.
ALTER TABLE verifier_state ADD COLUMN license_key TEXT;
