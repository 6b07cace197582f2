"""`latchkey bench --scenario http`, tiny: the report's shape and the server's end, not its speed."""
from __future__ import annotations

import json
import os
import socket
import subprocess
from urllib.parse import urlsplit

import pytest

import lk

FLOWS = 24


def run_bench(tmp_path, *extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LATCHKEY_")}
    cp = subprocess.run(
        [lk.latchkey_bin(), "bench", "--scenario", "http", "--json", "--users", "40",
         "--flows", str(FLOWS), "--duration-secs", "1", "--warmup-secs", "0", "--concurrency", "4", *extra],
        cwd=tmp_path, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
    assert cp.returncode == 0, f"bench failed ({cp.returncode}):\n{cp.stderr[-3000:]}"
    return json.loads(cp.stdout)


def check_report(doc: dict, backend: str) -> None:
    assert doc["backend"] == backend
    assert doc["parameters"]["scenario"] == "http"
    assert doc["parameters"]["flows"] == FLOWS
    h = doc["http"]
    for run in ("second_step", "full_signin"):
        r = h[run]
        assert r["errors"] == 0, r["first_error"]
        assert r["concurrency"] == 4
        assert r["ops"] > 0, f"{run}: nothing completed"
        assert 0 < r["p50_ms"] <= r["p95_ms"] <= r["p99_ms"] <= r["max_ms"]
        assert r["ops_per_sec"] > 0
    second = h["second_step"]
    # Each prepared flow is verified at most once.
    assert second["ops"] <= second["flows_prepared"] == FLOWS
    assert second["ended_by"] in ("flows used up", "duration")
    assert h["check_totp_in_process_per_sec"] == doc["totp"]["ops_per_sec"] > 0
    assert h["argon2_bound_per_sec"] == doc["argon2"]["verify_parallel"]["ops_per_sec"] > 0
    aims = h["aims"]
    s = aims["second_step_vs_check_totp"]
    assert s["aim_fraction"] == 0.4 and s["aim_p99_ms_below"] == 20.0
    assert s["fraction"] == pytest.approx(second["ops_per_sec"] / h["check_totp_in_process_per_sec"], rel=0.01)
    assert s["p99_ms"] == second["p99_ms"]
    assert s["result"] in ("PASS", "MISS")
    f = aims["full_signin_vs_argon2_bound"]
    assert f["aim_fraction"] == 0.9
    assert f["fraction"] == pytest.approx(h["full_signin"]["ops_per_sec"] / h["argon2_bound_per_sec"], rel=0.01)
    assert f["result"] in ("PASS", "MISS")

    # The server was a loopback child process, and it is gone with the bench.
    url = urlsplit(h["server"]["base_url"])
    assert url.hostname == "127.0.0.1"
    with pytest.raises(OSError):
        socket.create_connection((url.hostname, url.port), timeout=2).close()


def test_bench_http_sqlite(tmp_path):
    check_report(run_bench(tmp_path), "sqlite")


@pytest.mark.postgres
def test_bench_http_postgres(tmp_path, pg_url):
    check_report(run_bench(tmp_path, "--database-url", pg_url), "postgres")
