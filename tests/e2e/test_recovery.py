"""Issue 6 end to end: the lost-phone runbook from case open to close, over HTTP,
with a helpdesk agent's own session, pyotp codes and the audit chain checked."""
from __future__ import annotations

import lk
from lk import expect, assert_problem


def _session_for(srv: lk.Server, user: lk.User) -> str:
    done, _ = lk.signin_with_totp(srv, user)
    return done["session_token"]


def test_lost_phone_runbook_end_to_end(server):
    srv = server
    # A helpdesk agent with their own MFA, and Alice with a phone-bound authenticator.
    # The agent's credentials are set before the role is granted: once privileged,
    # someone else's change to them needs a second approver.
    lk.create_user(srv, "hd.lost")
    lk.create_user(srv, "alice.lost", department="Finance")
    users = {}
    for name in ("hd.lost", "alice.lost"):
        pw = lk.strong_password()
        lk.set_password(srv, name, pw)
        users[name] = lk.User(name, pw)
    for u in users.values():
        doc, auth = lk.enroll_totp(srv, u.username, label="old phone")
        u.auth, u.totp_method_id = auth, doc["id"]
    code, step = users["hd.lost"].auth.fresh_code(min_remaining=10)
    for u in users.values():
        u.auth.last_step = step
        expect(lk.confirm_totp(srv, u.username, u.totp_method_id, u.auth.code_at_step(step)), 200)
    # Granting a role over the API waits for a second administrator; the
    # local operator (the CLI on the server) grants it directly.
    srv.operator("user", "update", "hd.lost", "--role", "helpdesk")
    hd, alice = users["hd.lost"], users["alice.lost"]
    phone = expect(srv.api("POST", "/users/alice.lost/devices",
                           {"name": "Alice's iPhone", "platform": "ios", "ownership": "byod"}), 201)
    expect(srv.api("PUT", f"/users/alice.lost/methods/{alice.totp_method_id}/device", {"device_id": phone["id"]}), 204)
    hd_token = _session_for(srv, hd)

    # Friday evening: Alice lost the phone. The agent opens a lost-phone case.
    case = expect(srv.api("POST", "/helpdesk/cases", {"username": "alice.lost", "scenario": "lost-phone"},
                          token=hd_token), 201)
    cid = case["id"]
    assert case["state"] == "open" and case["next_step"] == "verify_identity" and not case["overdue"]
    assert [s["step"] for s in case["steps"]] == ["verify_identity", "issue_tap", "deliver_tap",
                                                  "confirm_registration", "remove_old_methods",
                                                  "confirm_sign_in", "close"]

    def step(body, token=hd_token):
        return srv.api("POST", f"/helpdesk/cases/{cid}/steps", body, token=token)

    # Order is enforced, identity first, and it cannot be skipped.
    assert_problem(step({"step": "issue_tap"}), 409, "invalid-state")
    assert_problem(step({"step": "verify_identity"}), 400, "invalid-request")
    assert_problem(srv.api("POST", f"/helpdesk/cases/{cid}/skip", {"step": "verify_identity", "reason": "urgent"},
                           token=hd_token), 400, "invalid-request")
    case = expect(step({"step": "verify_identity",
                        "verification": {"method": "callback", "note": "called back +1 555 0100 on file"}}), 200)
    assert case["next_step"] == "issue_tap"

    # The pass is issued by the step itself and shown once.
    case = expect(step({"step": "issue_tap", "lifetime_minutes": 120}), 200)
    tap = case["tap"]
    assert tap and tap["pass"] and tap["single_use"] is True
    assert case["next_step"] == "deliver_tap"
    again = expect(srv.api("GET", f"/helpdesk/cases/{cid}", token=hd_token), 200)
    assert again["tap"] is None, "the pass is never shown again"

    # Never by email.
    assert_problem(step({"step": "deliver_tap", "channel": "email"}), 400, "invalid-request")
    expect(step({"step": "deliver_tap", "channel": "phone_call", "note": "read aloud"}), 200)

    # Nothing registered yet: the runbook will not pretend otherwise.
    assert_problem(step({"step": "confirm_registration"}), 409, "invalid-state")

    # Alice signs in with the pass (no password) and registers a new authenticator.
    done = expect(lk.tap_signin(srv, "alice.lost", tap["pass"]), 200)
    assert done["state"] == "complete" and done["acr"] == "passwordless_mfa"
    alice_tap_session = done["session_token"]
    doc, new_auth = lk.enroll_totp(srv, "alice.lost", token=alice_tap_session, label="new phone")
    new_code, new_step = new_auth.fresh_code()
    new_auth.last_step = new_step
    expect(lk.confirm_totp(srv, "alice.lost", doc["id"], new_code, token=alice_tap_session), 200)
    subjects = [n["subject"] for n in expect(srv.api("GET", "/users/alice.lost/notifications"), 200)]
    assert any("Temporary Access Pass" in s for s in subjects), subjects
    assert any("new sign-in method" in s.lower() for s in subjects), subjects

    # The pass ended when used.
    assert_problem(lk.tap_signin(srv, "alice.lost", tap["pass"]), 401, "invalid-pass")

    expect(step({"step": "confirm_registration"}), 200)
    # The old phone is marked lost: its authenticator is revoked in the same step.
    case = expect(step({"step": "remove_old_methods", "lost_device_ids": [phone["id"]]}), 200)
    ids = [m["id"] for m in lk.methods(srv, "alice.lost")]
    assert alice.totp_method_id not in ids and doc["id"] in ids
    devices = expect(srv.api("GET", "/users/alice.lost/devices"), 200)
    assert [d["state"] for d in devices if d["id"] == phone["id"]] == ["lost"]

    # A normal sign-in (password + the new authenticator) must happen before the case closes.
    assert_problem(step({"step": "confirm_sign_in"}), 409, "invalid-state")
    alice.auth = new_auth
    finished, _ = lk.signin_with_totp(srv, alice)
    assert finished["acr"] == "mfa"
    case = expect(step({"step": "confirm_sign_in"}), 200)
    case = expect(step({"step": "close", "note": "user confirmed access on Monday"}), 200)
    assert case["state"] == "closed" and case["next_step"] is None
    assert all(s["status"] == "done" for s in case["steps"]), case["steps"]
    assert all(s["actor"] == "user:hd.lost" for s in case["steps"])

    # The audit chain shows every step, unbroken.
    events = lk.audit_events(srv)
    mine = [e for e in events if e["target"] == "user:alice.lost"]
    actions = [e["action"] for e in mine]
    for a in ("case.open", "tap.issue", "tap.use", "method.add", "device.lost", "case.close"):
        assert a in actions, f"{a} missing from {actions}"
    assert actions.count("case.step") == 6, actions
    assert all(tap["pass"] not in str(e["details"]) for e in events), "the pass leaked into the audit log"
    verdict = expect(srv.api("GET", "/audit/verify"), 200)
    assert verdict["ok"] is True and verdict["first_broken"] is None


def test_pass_refusals(server):
    srv = server
    lk.create_user(srv, "hd.refuse")
    lk.create_user(srv, "bob.refuse")
    pw = lk.strong_password()
    lk.set_password(srv, "hd.refuse", pw)
    hd = lk.User("hd.refuse", pw)
    doc, hd.auth = lk.enroll_totp(srv, "hd.refuse")
    code, st = hd.auth.fresh_code()
    hd.auth.last_step = st
    expect(lk.confirm_totp(srv, "hd.refuse", doc["id"], code), 200)
    # Granting a role over the API waits for a second administrator; the
    # local operator (the CLI on the server) grants it directly.
    srv.operator("user", "update", "hd.refuse", "--role", "helpdesk")
    hd_token = _session_for(srv, hd)
    path = "/users/bob.refuse/temporary-access-passes"
    verification = {"method": "video_call", "note": "matched badge photo"}
    assert_problem(srv.api("POST", path, {"lifetime_minutes": 60}, token=hd_token), 400, "invalid-request")
    for minutes in (30, 600):
        assert_problem(srv.api("POST", path, {"lifetime_minutes": minutes, "verification": verification},
                               token=hd_token), 400, "invalid-request")
    assert_problem(srv.api("POST", "/users/hd.refuse/temporary-access-passes",
                           {"lifetime_minutes": 60, "verification": verification}, token=hd_token), 403, "forbidden")
    # A helpdesk agent cannot mint a pass that signs in as an administrator.
    assert_problem(srv.api("POST", "/users/admin/temporary-access-passes",
                           {"lifetime_minutes": 60, "verification": verification}, token=hd_token), 403, "forbidden")
    ok = expect(srv.api("POST", path, {"lifetime_minutes": 60, "verification": verification}, token=hd_token), 201)
    assert ok["single_use"] is True
