-- Revoking a Temporary Access Pass records who did it and why (the pass
-- row stays, so the audit trail and "why did my pass stop working" agree).
ALTER TABLE temporary_access_passes ADD COLUMN revoked_by TEXT;
ALTER TABLE temporary_access_passes ADD COLUMN revoked_reason TEXT;

-- Every account state change, kept as history: the users row holds only the
-- latest. The evidence report measures a leaver from the moment the source
-- changed (the directory, or the administrator's request for a local
-- disable) to the moment Latchkey revoked access.
CREATE TABLE account_state_changes (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    from_state TEXT NOT NULL,
    to_state TEXT NOT NULL,
    reason TEXT,
    actor TEXT NOT NULL,
    source TEXT NOT NULL,
    source_changed_at BIGINT NOT NULL,
    revoked_at BIGINT,
    changed_at BIGINT NOT NULL
);
CREATE INDEX account_state_changes_at ON account_state_changes(changed_at);
