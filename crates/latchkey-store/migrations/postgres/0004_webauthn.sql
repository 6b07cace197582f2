-- WebAuthn (issue #4): registered credentials, pending ceremonies, admin policy.

-- One row per registered FIDO2 credential; the `methods` row carries label,
-- state and last use like every other method.
CREATE TABLE webauthn_credentials (
    method_id TEXT PRIMARY KEY REFERENCES methods(id) ON DELETE CASCADE,
    user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    -- base64url credential id; unique so one authenticator key cannot be
    -- registered twice (or to two users).
    credential_id TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    -- webauthn-rs Credential (public key, counter, flags, attestation) as JSON.
    credential_json TEXT NOT NULL,
    aaguid TEXT,
    model TEXT,
    attested BIGINT NOT NULL,
    backup_eligible BIGINT NOT NULL,
    backup_state BIGINT NOT NULL,
    -- The replay/clone guard, advanced with a conditional UPDATE.
    sign_count BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX webauthn_credentials_user ON webauthn_credentials(user_id);

-- Started ceremonies; finishing deletes the row (DELETE ... RETURNING), so a
-- challenge is answered at most once, on whichever node.
CREATE TABLE webauthn_ceremonies (
    id_hash TEXT PRIMARY KEY,
    user_id TEXT,
    purpose_json TEXT NOT NULL,
    state_json TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);

CREATE TABLE webauthn_settings (
    id BIGINT PRIMARY KEY CHECK (id = 1),
    policy_json TEXT NOT NULL,
    updated_by TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);
