-- OpenID Connect provider and RADIUS server (issue 9).

-- Relying parties registered by administrators. Confidential clients have a
-- keyed hash of their secret; public clients have none and must use PKCE S256.
CREATE TABLE oidc_clients (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    kind TEXT NOT NULL,
    secret_hash TEXT,
    redirect_uris_json TEXT NOT NULL,
    post_logout_redirect_uris_json TEXT NOT NULL DEFAULT '[]',
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    revoked_at BIGINT
);

-- Signing keys: private half sealed (AES-GCM, bound to kid). A retired key
-- no longer signs but stays in the JWKS until publish_until.
CREATE TABLE oidc_signing_keys (
    kid TEXT PRIMARY KEY,
    alg TEXT NOT NULL,
    private_sealed BYTEA NOT NULL,
    public_jwk TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    retired_at BIGINT,
    publish_until BIGINT
);

-- One authorization: a user's sign-in delegated to one client. Codes and
-- tokens hang off it; revoking it kills all of them.
CREATE TABLE oidc_grants (
    id TEXT PRIMARY KEY,
    client_id TEXT NOT NULL REFERENCES oidc_clients(id) ON DELETE CASCADE,
    user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    session_id TEXT,
    scope TEXT NOT NULL,
    nonce TEXT,
    auth_time BIGINT NOT NULL,
    amr_json TEXT NOT NULL,
    acr TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    revoked_at BIGINT,
    revoked_reason TEXT
);
CREATE INDEX oidc_grants_user ON oidc_grants(user_id);

CREATE TABLE oidc_codes (
    code_hash TEXT PRIMARY KEY,
    grant_id TEXT NOT NULL REFERENCES oidc_grants(id) ON DELETE CASCADE,
    redirect_uri TEXT NOT NULL,
    code_challenge TEXT,
    expires_at BIGINT NOT NULL,
    used_at BIGINT
);

-- Opaque bearer tokens, stored as keyed hashes. kind: access | refresh.
CREATE TABLE oidc_tokens (
    token_hash TEXT PRIMARY KEY,
    grant_id TEXT NOT NULL REFERENCES oidc_grants(id) ON DELETE CASCADE,
    kind TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at BIGINT
);
CREATE INDEX oidc_tokens_grant ON oidc_tokens(grant_id);

-- RADIUS clients (NAS), identified by source IP; the shared secret sealed.
CREATE TABLE radius_clients (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    ip TEXT NOT NULL UNIQUE,
    secret_sealed BYTEA NOT NULL,
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

-- Outstanding Access-Challenges, so any node can take the answer. The
-- sign-in flow id is a bearer secret: sealed, bound to the state hash.
CREATE TABLE radius_challenges (
    state_hash TEXT PRIMARY KEY,
    client_id TEXT NOT NULL REFERENCES radius_clients(id) ON DELETE CASCADE,
    username TEXT NOT NULL,
    flow_sealed BYTEA NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at BIGINT
);
