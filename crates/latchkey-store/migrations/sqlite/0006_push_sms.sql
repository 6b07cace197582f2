-- Push approval with number matching, and SMS/voice codes (issue #5).

-- One-time enrollment tokens shown as a QR code on the security-info page.
-- Stored as a keyed hash; taking one is a conditional UPDATE (single use).
CREATE TABLE push_enrollments (
    token_hash TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    label TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    used_at INTEGER
);

-- A registered authenticator device. The `methods` row (kind 'push') carries
-- label, state and last use like every other method; here is the device's
-- P-256 public key (SEC1 uncompressed point; the private key never leaves the
-- device) and the keyed hash of the bearer token it uses to receive prompts.
-- The token only lets a device *see* prompts: answers must be signed.
CREATE TABLE push_devices (
    method_id TEXT PRIMARY KEY REFERENCES methods(id) ON DELETE CASCADE,
    user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    public_key BLOB NOT NULL,
    token_hash TEXT NOT NULL UNIQUE,
    created_at INTEGER NOT NULL,
    last_seen_at INTEGER
);
CREATE INDEX push_devices_user ON push_devices(user_id);

-- Prompts. `number` is the two-digit number shown on the sign-in screen: it
-- is not a secret (it is displayed), it binds the screen to the device.
-- `flow_key` ties the prompt to the sign-in (keyed hash of the flow id, or a
-- RADIUS state) that may use its approval, once (`used_at`).
CREATE TABLE push_prompts (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    flow_key TEXT NOT NULL,
    number INTEGER NOT NULL,
    challenge TEXT NOT NULL,
    application TEXT,
    source_ip TEXT,
    location TEXT,
    status TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    ended_at INTEGER,
    answered_by TEXT,
    used_at INTEGER
);
-- Fatigue protection that holds across nodes: one pending prompt per user.
CREATE UNIQUE INDEX push_prompts_one_pending ON push_prompts(user_id) WHERE status = 'pending';
CREATE INDEX push_prompts_user_created ON push_prompts(user_id, created_at);
CREATE INDEX push_prompts_flow ON push_prompts(flow_key);

-- SMS/voice codes: keyed hash only, single use and attempt-limited in SQL.
-- `phone_hash` (keyed hash of the E.164 number) counts sends per number
-- without storing the number again.
CREATE TABLE sms_codes (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    method_id TEXT NOT NULL REFERENCES methods(id) ON DELETE CASCADE,
    phone_hash TEXT NOT NULL,
    channel TEXT NOT NULL,
    flow_key TEXT NOT NULL,
    code_hash TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    used_at INTEGER
);
CREATE INDEX sms_codes_user_created ON sms_codes(user_id, created_at);
CREATE INDEX sms_codes_phone_created ON sms_codes(phone_hash, created_at);
CREATE INDEX sms_codes_flow ON sms_codes(flow_key);
