"""First start: the bootstrap Temporary Access Pass for the first administrator."""
from __future__ import annotations

import time
from datetime import timedelta

import lk
from lk import assert_problem, expect


def test_first_start_prints_the_bootstrap_pass(make_server):
    srv = make_server("boot")
    b = srv.bootstrap
    assert b is not None
    lines = srv.current_lines()
    listen = [l for l in lines if lk.LISTEN_RE.search(l)]
    assert listen == [lk.LISTEN_EXACT.format(url=srv.url)], f"listening line is not exactly the contract's: {listen!r}"
    assert lk.FIRST_START_LINE in lines
    # On loopback the pages are named at localhost: browsers refuse passkeys at an IP address.
    pages = srv.url.replace("://127.0.0.1:", "://localhost:")
    assert b.signin_url == f"{pages}/signin", f"sign-in URL {b.signin_url!r} vs listening URL {srv.url!r}"
    exp = lk.parse_rfc3339(b.expires_at)
    now = lk.now_utc()
    assert now < exp <= now + timedelta(hours=8, minutes=5), f"bootstrap pass expiry {b.expires_at} not within 8 h"
    assert len(b.password) >= 12, f"bootstrap pass suspiciously short: {b.password!r}"
    admin = expect(srv.api("GET", "/users/admin"), 200)
    assert admin.get("privileged") is True, f"bootstrap admin not privileged: {admin!r}"
    ms = lk.methods(srv, "admin")
    assert any(m.get("kind") == "temporary_access_pass" for m in ms), f"admin has no TAP method: {ms!r}"


def test_admin_signs_in_with_the_bootstrap_pass_and_enrols_totp(make_server):
    srv = make_server("boot")
    tap = srv.bootstrap.password

    start = expect(lk.start_signin(srv, "admin"), 200)
    assert start.get("state") == "started", start
    assert sorted(start.get("allowed_methods", [])) == ["password", "temporary_access_pass"], start
    done = expect(lk.verify(srv, start["flow_id"], {"method": "temporary_access_pass", "pass": tap}), 200)
    assert done.get("state") == "complete", done
    assert done.get("acr") == "passwordless_mfa", f"acr after TAP sign-in: {done!r}"
    assert done.get("methods") == ["temporary_access_pass"], f"methods after TAP sign-in: {done!r}"
    token = done.get("session_token")
    assert token, done

    sess = expect(srv.api("GET", "/session", token=token), 200)
    assert sess.get("username") == "admin" and sess.get("acr") == "passwordless_mfa", sess

    # The TAP session may register security info for its own user.
    enrol = expect(srv.api("POST", "/users/admin/methods/totp", {"label": "admin phone"}, token=token), 201)
    auth = lk.Authenticator(enrol["secret"])
    code, _ = auth.fresh_code(min_remaining=3)
    confirmed = expect(srv.api("POST", f"/users/admin/methods/totp/{enrol['id']}/confirm", {"code": code},
                               token=token), 200)
    assert confirmed.get("state") == "active", confirmed

    # Single use: the same pass is refused now.
    r = lk.tap_signin(srv, "admin", tap)
    assert_problem(r, 401)


def test_second_start_prints_no_new_pass(make_server):
    srv = make_server("boot")
    first_pass = srv.bootstrap.password
    srv.stop()
    assert srv.exited_on_stdin_close, "server did not exit after its stdin closed (--stop-on-stdin-close)"
    srv.start(expect_bootstrap=False)
    # Give a late bootstrap print every chance to appear before checking its absence.
    expect(srv.api("GET", "/users/admin"), 200)
    time.sleep(1.5)
    lines = srv.current_lines()
    assert lk.FIRST_START_LINE not in lines, f"second start created the admin again: {lines!r}"
    assert not any("bootstrap pass" in l.lower() or "temporary access pass" in l.lower() for l in lines), \
        f"second start printed a pass: {lines!r}"
    assert not any(first_pass in l for l in lines)
    users = [u for u in [expect(srv.api("GET", "/users/admin"), 200)]]
    assert users[0]["username"] == "admin"
    # The first pass was never used, so it is still valid after the restart (stored in the database).
    done = expect(lk.tap_signin(srv, "admin", first_pass), 200)
    assert done.get("acr") == "passwordless_mfa", done
