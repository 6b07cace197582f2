-- When a user last lost a role. For a while afterwards the two-person rule
-- still applies to them, so that removing someone's role cannot be the first
-- step of taking over their account alone.
ALTER TABLE users ADD COLUMN roles_removed_at INTEGER;
