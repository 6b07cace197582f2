-- Operations (issue 8): a complete sign-in log, alert handling, detection
-- and alert-delivery cursors.

-- Sign-in log: named location, device, the methods tried (on failures the
-- step that failed), and the sign-in risk fed to conditional access.
ALTER TABLE signins ADD COLUMN location TEXT;
ALTER TABLE signins ADD COLUMN device_id TEXT;
ALTER TABLE signins ADD COLUMN methods_tried_json TEXT;
ALTER TABLE signins ADD COLUMN risk TEXT;
CREATE INDEX signins_source ON signins(source_ip, at);

-- Alert handling: open -> acknowledged -> resolved.
ALTER TABLE policy_alerts ADD COLUMN status TEXT NOT NULL DEFAULT 'open';
ALTER TABLE policy_alerts ADD COLUMN handled_by TEXT;
ALTER TABLE policy_alerts ADD COLUMN handled_at INTEGER;
ALTER TABLE policy_alerts ADD COLUMN resolution TEXT;
CREATE INDEX policy_alerts_kind_target ON policy_alerts(kind, target, at);
-- Risk at sign-in reads recent alerts about one user or source.
CREATE INDEX policy_alerts_target ON policy_alerts(target, at);

-- Named cursors (last sign-in id examined by the detection engine, last
-- alert id delivered to each sink), advanced by compare-and-swap so several
-- nodes never process the same rows twice.
CREATE TABLE ops_cursors (
    name TEXT PRIMARY KEY,
    position INTEGER NOT NULL
);
