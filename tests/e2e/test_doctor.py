"""`latchkey doctor` (finding 3 of the security review): with fewer than two
active administrators a privileged change request waits for nobody, and the
operator is told so; an admin token without an owner approves nothing; a
broken audit chain is an error (exit 1)."""
from __future__ import annotations

import json
import sqlite3

import lk
from lk import expect


def _doctor(srv: lk.Server):
    cp = srv.cli("doctor", "--json", "--data", str(srv.data_dir), *srv.db_args())
    try:
        doc = json.loads(cp.stdout)
    except ValueError:
        raise AssertionError(f"doctor --json printed no JSON: {cp.stdout!r} {cp.stderr!r}")
    return cp.returncode, {f["code"]: f for f in doc}


def test_doctor_warns_with_fewer_than_two_admins(make_server):
    srv = make_server("doctor")
    # Only the bootstrap administrator: requests would wait for nobody.
    rc, found = _doctor(srv)
    assert rc == 0, found
    assert found["fewer_than_two_admins"]["level"] == "warning"
    assert "break-glass" in found["fewer_than_two_admins"]["message"]
    # The test's token was made without --owner.
    assert found["admin_tokens_without_owner"]["level"] == "warning"
    # The API says the same.
    api = expect(srv.api("GET", "/doctor"), 200)
    assert {f["code"] for f in api} == set(found), api
    # The human-readable form names it too.
    cp = srv.cli("doctor", "--data", str(srv.data_dir), *srv.db_args())
    assert cp.returncode == 0 and "warning:" in cp.stdout and "administrator" in cp.stdout, cp.stdout

    # A second administrator (added by the local operator) ends the warning.
    srv.operator("user", "add", "second.admin", "--display-name", "Second admin", "--role", "admin")
    rc, found = _doctor(srv)
    assert rc == 0 and "fewer_than_two_admins" not in found, found

    # A tampered audit event is an error: exit 1.
    con = sqlite3.connect(srv.data_dir / "latchkey.db")
    with con:
        con.execute("UPDATE audit_events SET target = 'user:nobody' WHERE seq = 2")
    con.close()
    rc, found = _doctor(srv)
    assert rc == 1, found
    assert found["audit_chain_broken"]["level"] == "error", found
