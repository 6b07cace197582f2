-- Conditional access (issue 7): versioned policies, named locations, custom
-- strengths, exceptions with mandatory end dates, break-glass accounts,
-- rollout waves. Times are unix seconds.

-- Every change to a policy is a new version row; `policies` points at the current one.
CREATE TABLE policy_versions (
    id BIGSERIAL PRIMARY KEY,
    policy_id TEXT NOT NULL,
    version BIGINT NOT NULL,
    -- The ConditionalAccessPolicy as JSON; NULL for the version that deleted it.
    body_json TEXT,
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    UNIQUE (policy_id, version)
);

CREATE TABLE policies (
    id TEXT PRIMARY KEY,
    current_version BIGINT NOT NULL,
    state TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE named_locations (
    name TEXT PRIMARY KEY,
    body_json TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE auth_strengths (
    name TEXT PRIMARY KEY,
    body_json TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);

-- Bumped by every change to policies, locations, strengths, exceptions,
-- break-glass flags or waves, so nodes can cache the evaluated set cheaply.
CREATE TABLE policy_generation (
    id BIGINT PRIMARY KEY CHECK (id = 1),
    generation BIGINT NOT NULL
);
INSERT INTO policy_generation (id, generation) VALUES (1, 0);

-- There is no exception without an end: expires_at is NOT NULL, and the
-- approver is never the requester.
CREATE TABLE policy_exceptions (
    id TEXT PRIMARY KEY,
    policy_id TEXT NOT NULL,
    subject_kind TEXT NOT NULL CHECK (subject_kind IN ('user', 'group')),
    subject TEXT NOT NULL,
    reason TEXT NOT NULL,
    requested_by TEXT NOT NULL,
    approved_by TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    revoked_at BIGINT,
    CHECK (approved_by <> requested_by)
);
CREATE INDEX policy_exceptions_expiry ON policy_exceptions(expires_at);

CREATE TABLE break_glass_accounts (
    user_id TEXT PRIMARY KEY REFERENCES users(id) ON DELETE CASCADE,
    test_interval_days BIGINT NOT NULL,
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

-- Every break-glass sign-in (kind 'use') and every recorded test ('test').
CREATE TABLE break_glass_signins (
    id BIGSERIAL PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    at BIGINT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('use', 'test')),
    note TEXT,
    recorded_by TEXT NOT NULL
);
CREATE INDEX break_glass_signins_user ON break_glass_signins(user_id, at);

CREATE TABLE policy_alerts (
    id BIGSERIAL PRIMARY KEY,
    at BIGINT NOT NULL,
    kind TEXT NOT NULL,
    severity TEXT NOT NULL,
    target TEXT NOT NULL,
    details_json TEXT NOT NULL,
    acknowledged_at BIGINT
);
CREATE INDEX policy_alerts_at ON policy_alerts(at);

CREATE TABLE rollout_waves (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    position BIGINT NOT NULL,
    body_json TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

-- The conditional-access decision of each sign-in (applied + report-only).
ALTER TABLE signins ADD COLUMN policy_json TEXT;
