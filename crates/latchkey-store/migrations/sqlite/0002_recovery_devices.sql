-- Devices, helpdesk recovery cases and two-person approval of passes.

CREATE TABLE devices (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    platform TEXT NOT NULL,
    ownership TEXT NOT NULL,
    managed INTEGER NOT NULL DEFAULT 0,
    compliant INTEGER NOT NULL DEFAULT 0,
    external_id TEXT,
    state TEXT NOT NULL DEFAULT 'active',
    registered_at INTEGER NOT NULL,
    compliance_updated_at INTEGER,
    state_changed_at INTEGER,
    last_seen_at INTEGER
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
    opened_at INTEGER NOT NULL,
    deadline INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
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
    lifetime_minutes INTEGER NOT NULL,
    single_use INTEGER NOT NULL,
    starts_in_minutes INTEGER NOT NULL,
    state TEXT NOT NULL,
    decided_by TEXT,
    decided_at INTEGER,
    tap_id TEXT,
    created_at INTEGER NOT NULL
);
