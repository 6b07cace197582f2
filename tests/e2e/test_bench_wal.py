"""`latchkey bench --scenario wal`, small: the WAL stays bounded while sign-in
log rows pour in beside TOTP checks (issue #17 runs it with one million rows
for docs/performance.md; this run writes enough to pass the checkpoint
threshold several times)."""
from __future__ import annotations

import json
import os
import subprocess

import lk

ROWS = 150_000
LIMIT = 64 << 20


def test_wal_stays_under_64_mib_while_the_sign_in_log_grows(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("LATCHKEY_")}
    cp = subprocess.run(
        [lk.latchkey_bin(), "bench", "--scenario", "wal", "--json", "--signins", str(ROWS), "--users", "2000",
         "--concurrency", "4"],
        cwd=tmp_path, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300)
    assert cp.returncode == 0, f"bench failed ({cp.returncode}):\n{cp.stderr[-3000:]}"
    w = json.loads(cp.stdout)["wal"]
    assert w["rows"] == ROWS
    assert w["totp_errors"] == 0, w["first_error"]
    assert w["totp_checks"] > 0, "no sign-in ran beside the writer"
    # The rows alone are several times the 16 MiB checkpoint threshold, so
    # the WAL would have grown past the limit without the checkpoints.
    assert 0 < w["largest_wal_bytes"] < LIMIT, w
