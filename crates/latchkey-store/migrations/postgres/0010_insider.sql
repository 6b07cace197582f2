-- Insider rules: every API token names the human behind it, approvals of
-- privileged changes compare humans, and the audit chain is keyed.

-- The person an API token acts for. Tokens created before this have none:
-- they keep working but approve nothing.
ALTER TABLE api_tokens ADD COLUMN owner_user_id TEXT;

-- tap_requests becomes the one table of privileged change requests: a pass,
-- a password, a method added or removed, a device ended, a helpdesk case's
-- removals, a policy exception. `subject` pins what was approved (a method
-- id, a device, a canonical JSON of an exception); `result_id` what was
-- made with it. Humans are compared by user id, never by actor string.
ALTER TABLE tap_requests ADD COLUMN kind TEXT NOT NULL DEFAULT 'tap';
ALTER TABLE tap_requests ADD COLUMN subject TEXT NOT NULL DEFAULT '';
ALTER TABLE tap_requests ADD COLUMN requester_user_id TEXT;
ALTER TABLE tap_requests ADD COLUMN approver_user_id TEXT;

-- Which scheme chained each audit event: 'sha256' (unkeyed, before this
-- migration) or 'hmac-sha256:<key id>' (keyed by a key derived from the
-- master key), so verification covers old and new events alike.
ALTER TABLE audit_events ADD COLUMN scheme TEXT NOT NULL DEFAULT 'sha256';
