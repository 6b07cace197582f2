"""Leavers end to end: the real server, the real CLI and pyotp. An
administrator disables a user with `latchkey user disable` while the server
runs; the user's session dies at once and the right password gets the
wrong-password answer; enabling brings nothing back; deletion keeps a
tombstone that holds the username."""
from __future__ import annotations

import json

import lk
from lk import assert_problem, expect


def _cli(server, *args):
    return server.cli(*args, "--data", str(server.data_dir), *server.db_args())


def test_disable_enable_delete_through_the_cli_and_api(server):
    users = lk.provision(server, ["leaver1"])
    u = users["leaver1"]
    done, _ = lk.signin_with_totp(server, u)
    session = done["session_token"]
    expect(server.api("GET", "/session", token=session), 200)

    r = _cli(server, "user", "disable", "leaver1", "--reason", "left the company", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["user"]["state"] == "disabled" and out["revoked"]["sessions"] >= 1, out

    assert_problem(server.api("GET", "/session", token=session), 401, "unauthenticated")
    right = lk.start_signin(server, "leaver1", u.password)
    wrong = lk.start_signin(server, "leaver1", "not-the-password-at-all")
    assert_problem(right, 401, "invalid-credentials")
    assert right.json()["detail"] == wrong.json()["detail"]
    doc = expect(server.api("GET", "/users/leaver1"), 200)
    assert doc["state"] == "disabled" and doc["state_reason"] == "left the company", doc

    r = _cli(server, "user", "enable", "leaver1")
    assert r.returncode == 0, r.stderr
    assert_problem(server.api("GET", "/session", token=session), 401, "unauthenticated")
    lk.signin_with_totp(server, u)

    # Deletion needs --yes, then leaves a tombstone that holds the name.
    r = _cli(server, "user", "delete", "leaver1", "--reason", "contract ended")
    assert r.returncode != 0 and "--yes" in r.stderr, r.stderr
    doc = expect(server.api("DELETE", "/users/leaver1", {"reason": "contract ended"}), 200)
    assert doc["user"]["state"] == "deleted" and doc["user"]["has_password"] is False, doc
    assert lk.methods(server, "leaver1") == []
    assert_problem(server.api("POST", "/users", {"username": "leaver1", "display_name": "New"}), 409)
    r = _cli(server, "audit", "verify", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["ok"] is True, r.stdout


def test_a_revoked_pass_signs_nobody_in_through_the_cli_and_api(server):
    lk.provision(server, ["passholder"])
    # Revoked with the CLI while the server runs: the pass is refused.
    tap = lk.issue_tap(server, "passholder")
    r = _cli(server, "helpdesk", "tap", "list", "--user", "passholder", "--json")
    assert r.returncode == 0, r.stderr
    listed = json.loads(r.stdout)
    assert [t["id"] for t in listed] == [tap["id"]] and tap["pass"] not in r.stdout, listed
    r = _cli(server, "helpdesk", "tap", "revoke", tap["id"], "--user", "passholder", "--reason", "wrong caller")
    assert r.returncode == 0, r.stderr
    assert_problem(lk.tap_signin(server, "passholder", tap["pass"]), 401, "invalid-pass")
    r = _cli(server, "helpdesk", "tap", "revoke", tap["id"], "--user", "passholder")
    assert r.returncode != 0 and "already revoked" in r.stderr, r.stderr

    # Revoked over the API after it signed someone in: that session ends.
    tap = lk.issue_tap(server, "passholder")
    done = expect(lk.tap_signin(server, "passholder", tap["pass"]), 200)
    session = done["session_token"]
    expect(server.api("GET", "/session", token=session), 200)
    out = expect(server.api("DELETE", f"/users/passholder/temporary-access-passes/{tap['id']}"), 200)
    assert out["sessions_ended"] == 1, out
    assert_problem(server.api("GET", "/session", token=session), 401, "unauthenticated")
    revokes = [e for e in lk.audit_events(server) if e["action"] == "tap.revoke"]
    assert [e["details"]["reason"] for e in revokes] == ["wrong caller", None], revokes


def test_an_administrators_password_reset_ends_the_users_sessions(server):
    users = lk.provision(server, ["resetme"])
    done, _ = lk.signin_with_totp(server, users["resetme"])
    session = done["session_token"]
    expect(server.api("GET", "/session", token=session), 200)
    lk.set_password(server, "resetme", lk.strong_password())
    assert_problem(server.api("GET", "/session", token=session), 401, "unauthenticated")
