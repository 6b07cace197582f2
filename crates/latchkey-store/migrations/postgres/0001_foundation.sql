-- Latchkey foundation schema. Times are unix seconds unless named *_ms.
-- Booleans are BIGINT 0/1 so the same queries run on SQLite and PostgreSQL.

CREATE TABLE users (
    id TEXT PRIMARY KEY,
    username TEXT NOT NULL UNIQUE,
    display_name TEXT NOT NULL,
    department TEXT,
    groups_json TEXT NOT NULL DEFAULT '[]',
    roles_json TEXT NOT NULL DEFAULT '[]',
    state TEXT NOT NULL DEFAULT 'active',
    password_hash TEXT,
    password_changed_at BIGINT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE methods (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    kind TEXT NOT NULL,
    label TEXT NOT NULL,
    state TEXT NOT NULL,
    -- AES-256-GCM sealed secret (nonce || ciphertext), bound to the row id.
    secret_sealed BYTEA,
    params_json TEXT NOT NULL DEFAULT '{}',
    -- Highest TOTP time step accepted: the replay guard, advanced atomically.
    last_used_step BIGINT,
    device_id TEXT,
    registered_at BIGINT NOT NULL,
    confirmed_at BIGINT,
    last_used_at BIGINT
);
CREATE INDEX methods_user ON methods(user_id);

CREATE TABLE recovery_codes (
    id BIGSERIAL PRIMARY KEY,
    method_id TEXT NOT NULL REFERENCES methods(id) ON DELETE CASCADE,
    user_id TEXT NOT NULL,
    code_hash TEXT NOT NULL,
    used_at BIGINT,
    UNIQUE (user_id, code_hash)
);

CREATE TABLE temporary_access_passes (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    pass_hash TEXT NOT NULL UNIQUE,
    issued_by TEXT NOT NULL,
    verification_json TEXT NOT NULL,
    single_use BIGINT NOT NULL,
    starts_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at BIGINT,
    use_count BIGINT NOT NULL DEFAULT 0,
    revoked_at BIGINT,
    created_at BIGINT NOT NULL
);
CREATE INDEX taps_user ON temporary_access_passes(user_id);

CREATE TABLE signin_flows (
    id_hash TEXT PRIMARY KEY,
    user_id TEXT,
    username TEXT NOT NULL,
    flow_json TEXT NOT NULL,
    application TEXT,
    source_ip TEXT,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);

CREATE TABLE sessions (
    id TEXT PRIMARY KEY,
    token_hash TEXT NOT NULL UNIQUE,
    user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    amr_json TEXT NOT NULL,
    methods_json TEXT NOT NULL,
    acr TEXT NOT NULL,
    authenticated_at BIGINT NOT NULL,
    last_seen_at BIGINT NOT NULL,
    idle_expires_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    revoked_at BIGINT,
    source_ip TEXT
);
CREATE INDEX sessions_user ON sessions(user_id);

CREATE TABLE api_tokens (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    token_hash TEXT NOT NULL UNIQUE,
    scopes_json TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    last_used_at BIGINT,
    revoked_at BIGINT
);

CREATE TABLE throttle (
    key TEXT PRIMARY KEY,
    -- Attempts are counted before they are verified (and refunded when
    -- right), so parallel guesses cannot outrun the lock.
    failures BIGINT NOT NULL,
    locked_until BIGINT,
    -- Length of the last lock; each new lock doubles it, up to the policy maximum.
    lock_secs BIGINT NOT NULL DEFAULT 0,
    updated_at BIGINT NOT NULL
);

CREATE TABLE audit_events (
    seq BIGINT PRIMARY KEY,
    at_ms BIGINT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    details TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);

-- One row: the chain head. Every audited write transaction updates it first,
-- which serialises appenders across processes (row lock on PostgreSQL, the
-- write lock on SQLite).
CREATE TABLE audit_head (
    id BIGINT PRIMARY KEY CHECK (id = 1),
    seq BIGINT NOT NULL,
    hash TEXT NOT NULL
);
INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000');

CREATE TABLE notifications (
    id BIGSERIAL PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    at BIGINT NOT NULL,
    channel TEXT NOT NULL,
    subject TEXT NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX notifications_user ON notifications(user_id);

CREATE TABLE signins (
    id BIGSERIAL PRIMARY KEY,
    at BIGINT NOT NULL,
    user_id TEXT,
    username TEXT NOT NULL,
    application TEXT,
    source_ip TEXT,
    result TEXT NOT NULL,
    reason TEXT,
    methods_json TEXT NOT NULL DEFAULT '[]',
    acr TEXT
);
CREATE INDEX signins_at ON signins(at);
CREATE INDEX signins_user ON signins(user_id, at);
