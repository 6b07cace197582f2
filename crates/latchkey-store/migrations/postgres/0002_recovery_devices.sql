-- Devices, helpdesk recovery cases and two-person approval of passes.

CREATE TABLE devices (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    platform TEXT NOT NULL,
    ownership TEXT NOT NULL,
    managed BIGINT NOT NULL DEFAULT 0,
    compliant BIGINT NOT NULL DEFAULT 0,
    external_id TEXT,
    state TEXT NOT NULL DEFAULT 'active',
    registered_at BIGINT NOT NULL,
    compliance_updated_at BIGINT,
    state_changed_at BIGINT,
    last_seen_at BIGINT
);
CREATE INDEX devices_user ON devices(user_id);

ALTER TABLE sessions ADD COLUMN device_id TEXT;

CREATE TABLE helpdesk_cases (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    scenario TEXT NOT NULL,
    state TEXT NOT NULL,
    case_json TEXT NOT NULL,
    opened_by TEXT NOT NULL,
    opened_at BIGINT NOT NULL,
    deadline BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX helpdesk_cases_user ON helpdesk_cases(user_id);
CREATE INDEX helpdesk_cases_state ON helpdesk_cases(state, deadline);

-- A pass for a privileged user needs a second person: the request exists
-- first, a different helpdesk member approves, then the requester issues.
CREATE TABLE tap_requests (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    requested_by TEXT NOT NULL,
    verification_json TEXT NOT NULL,
    lifetime_minutes BIGINT NOT NULL,
    single_use BIGINT NOT NULL,
    starts_in_minutes BIGINT NOT NULL,
    state TEXT NOT NULL,
    decided_by TEXT,
    decided_at BIGINT,
    tap_id TEXT,
    created_at BIGINT NOT NULL
);
