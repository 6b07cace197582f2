-- Smart lock-out (issue 16, finding 11): a sign-in attempt asks whether its
-- user signed in successfully from its source in the last 30 days, to pick
-- the familiar or the unfamiliar lock counter. Only successes matter, so the
-- index holds only them.
CREATE INDEX signins_familiar ON signins(user_id, source_ip, at) WHERE result = 'success';

-- Finding 9: a device id a sign-in named without proof is recorded as such,
-- apart from the proved device.
ALTER TABLE signins ADD COLUMN unproven_device_id TEXT;
