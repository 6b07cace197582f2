-- Account lifecycle (joiners and leavers): why an account was disabled or
-- deleted and when. A deleted account stays as a tombstone row.
ALTER TABLE users ADD COLUMN state_reason TEXT;
ALTER TABLE users ADD COLUMN state_changed_at INTEGER;
CREATE INDEX users_state ON users(state, state_changed_at);
