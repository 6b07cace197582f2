"""Fixtures for Latchkey's end-to-end tests (see lk.py for the helpers)."""
from __future__ import annotations

import os
import secrets
import subprocess
import time
import uuid
from pathlib import Path

import pytest

import lk

PG_SKIP_REASON = ("LATCHKEY_TEST_POSTGRES_URL not set — PostgreSQL suite skipped "
                  "(run: eval \"$(bash scripts/postgres.sh)\")")


# --------------------------------------------------------------------------- reporting

def pytest_runtest_setup(item):
    item._lk_started = time.time()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.failed:
        since = getattr(item, "_lk_started", 0)
        for srv in lk.servers_touched_since(since):
            rep.sections.append((f"latchkey server {srv.name}", srv.log_tail()))


def pytest_report_header(config):
    b = os.environ.get("LATCHKEY_BIN") or str(lk.REPO_ROOT / "target" / "debug" / "latchkey")
    pg = os.environ.get("LATCHKEY_TEST_POSTGRES_URL")
    return [f"latchkey binary: {b}{'' if os.path.exists(b) else ' (MISSING)'}",
            f"postgres: {pg if pg else 'NOT SET — ' + PG_SKIP_REASON}"]


def pytest_terminal_summary(terminalreporter):
    waited = lk.TOTP_WAIT_SECONDS[0]
    terminalreporter.write_line(f"latchkey e2e: {waited:.1f}s spent waiting for fresh TOTP steps")
    if not os.environ.get("LATCHKEY_TEST_POSTGRES_URL"):
        terminalreporter.write_line("!" * 80)
        terminalreporter.write_line("!! " + PG_SKIP_REASON)
        terminalreporter.write_line("!" * 80)


# --------------------------------------------------------------------------- servers

class ServerFactory:
    def __init__(self, base: Path):
        self.base = base
        self.servers: list[lk.Server] = []

    def __call__(self, name: str = "A", data_dir: Path | None = None, start: bool = True,
                 expect_bootstrap: bool | None = True, **kw) -> lk.Server:
        d = Path(data_dir) if data_dir else self.base / f"{name}-{uuid.uuid4().hex[:6]}" / "data"
        srv = lk.Server(d, name=name, log_dir=d.parent, **kw)
        self.servers.append(srv)
        if start:
            srv.start(expect_bootstrap=expect_bootstrap)
        return srv

    def stop_all(self):
        for s in reversed(self.servers):
            try:
                s.stop()
            except Exception as e:  # never mask the test's own result
                print(f"error stopping {s.name}: {e!r}")


@pytest.fixture
def make_server(tmp_path):
    """Factory: make_server(name, data_dir=None, start=True, expect_bootstrap=True,
    database_url=None, secret_key=None) -> started lk.Server. All stopped at teardown."""
    f = ServerFactory(tmp_path)
    yield f
    f.stop_all()


@pytest.fixture(scope="module")
def module_server_factory(tmp_path_factory):
    f = ServerFactory(tmp_path_factory.mktemp("lkmod"))
    yield f
    f.stop_all()


@pytest.fixture(scope="module")
def server(module_server_factory) -> lk.Server:
    """One SQLite-backed server shared by a module (tests use their own users)."""
    return module_server_factory("srv", expect_bootstrap=True)


# --------------------------------------------------------------------------- PostgreSQL

def _psql(url: str, sql: str) -> None:
    cp = subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", url, "-c", sql],
                        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
    assert cp.returncode == 0, f"psql {sql!r} failed ({cp.returncode}): {cp.stderr}"


@pytest.fixture
def pg_url():
    """A fresh, empty PostgreSQL database for this test; dropped afterwards.
    Skips (loudly) when LATCHKEY_TEST_POSTGRES_URL is not set."""
    base = os.environ.get("LATCHKEY_TEST_POSTGRES_URL")
    if not base:
        pytest.skip(PG_SKIP_REASON)
    name = f"lk_e2e_{uuid.uuid4().hex[:12]}"
    _psql(base, f'CREATE DATABASE "{name}"')
    try:
        yield lk.with_database(base, name)
    finally:
        try:
            _psql(base, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        except Exception as e:
            print(f"could not drop {name}: {e}")


@pytest.fixture
def shared_secret_key() -> str:
    return secrets.token_hex(32)
