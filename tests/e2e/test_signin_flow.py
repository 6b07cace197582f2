"""The foundation flow: users, password, TOTP, sign-in, replay, lockout, recovery codes, audit."""
from __future__ import annotations

import re

import pyotp
import pytest

import lk
from lk import assert_problem, expect


@pytest.fixture(scope="module")
def users(server):
    # All TOTP confirmations share one step, so the whole module waits for a fresh step at most once.
    return lk.provision(server, ["alice", "lena", "rita", "pat", "wendy", "rex"])


def _future(ts: str) -> None:
    assert lk.parse_rfc3339(ts) > lk.now_utc(), f"timestamp not in the future: {ts}"


# ----------------------------------------------------------------------------- users & enrolment

def test_create_user_password_and_totp_enrolment(server):
    doc = lk.create_user(server, "olivia", display_name="Olivia Ops", department="Operations",
                         groups=["staff"], roles=[])
    for k in ("id", "username", "display_name", "department", "groups", "roles", "privileged", "state", "created_at"):
        assert k in doc, f"POST /users response lacks {k!r}: {doc!r}"
    assert doc["display_name"] == "Olivia Ops" and doc["department"] == "Operations"
    assert doc["groups"] == ["staff"] and doc["roles"] == []
    assert doc["privileged"] is False and doc["state"] == "active"
    lk.parse_rfc3339(doc["created_at"])

    got = expect(server.api("GET", "/users/olivia"), 200)
    assert got["id"] == doc["id"] and got["username"] == "olivia"

    assert_problem(server.api("POST", "/users", {"username": "olivia", "display_name": "Again"}), 409, "conflict")
    assert_problem(server.api("GET", "/users/no-such-user"), 404, "not-found")

    assert_problem(server.api("PUT", "/users/olivia/password", {"password": "elevenchars"}), 400, "weak-password")
    lk.set_password(server, "olivia", "twelve-chars")  # exactly the minimum length

    ms = lk.methods(server, "olivia")
    pw = [m for m in ms if m.get("kind") == "password"]
    assert len(pw) == 1 and pw[0].get("state") == "active", f"password method after PUT password: {ms!r}"
    for k in ("id", "kind", "label", "state", "registered_at", "last_used_at"):
        assert k in pw[0], f"method lacks {k!r}: {pw[0]!r}"

    enrol, auth = lk.enroll_totp(server, "olivia", label="Olivia's phone")
    assert re.fullmatch(r"[A-Z2-7]+=*", enrol["secret"]), f"secret is not base32: {enrol['secret']!r}"
    assert enrol["otpauth_uri"].startswith("otpauth://totp/"), enrol["otpauth_uri"]
    parsed = pyotp.parse_uri(enrol["otpauth_uri"])
    assert parsed.secret.rstrip("=") == enrol["secret"].rstrip("="), "otpauth_uri carries another secret"

    pending = [m for m in lk.methods(server, "olivia") if m.get("id") == enrol["id"]]
    assert pending and pending[0]["kind"] == "totp" and pending[0]["state"] == "pending", \
        f"unconfirmed TOTP should be pending: {pending!r}"

    r = lk.confirm_totp(server, "olivia", enrol["id"], auth.wrong_code())
    assert_problem(r, 400, "invalid-code")

    code, _ = auth.fresh_code(min_remaining=3)
    confirmed = expect(lk.confirm_totp(server, "olivia", enrol["id"], code), 200)
    assert confirmed.get("id") == enrol["id"] and confirmed.get("state") == "active" \
        and confirmed.get("kind") == "totp", f"confirm response: {confirmed!r}"
    assert confirmed.get("label") == "Olivia's phone", f"label not kept: {confirmed!r}"


def test_qr_svg_url_serves_svg(server):
    lk.create_user(server, "quinn")
    enrol, _ = lk.enroll_totp(server, "quinn")
    url = enrol["qr_svg_url"]
    assert isinstance(url, str) and url, enrol
    full = url if url.startswith("http") else server.url + (url if url.startswith("/") else "/api/v1/" + url)
    r = server.http.get(full, headers={"Authorization": f"Bearer {server.admin_token}"}, timeout=lk.HTTP_TIMEOUT)
    assert r.status_code == 200, lk.describe(r)
    assert "svg" in r.headers.get("content-type", "") and b"<svg" in r.content, lk.describe(r)


@pytest.mark.parametrize("algorithm,digits", [("SHA256", 8), ("SHA512", 7), ("SHA1", 8)])
def test_totp_algorithms_and_digits(server, algorithm, digits):
    name = f"sam-{algorithm.lower()}-{digits}"
    lk.create_user(server, name)
    enrol, auth = lk.enroll_totp(server, name, algorithm=algorithm, digits=digits)
    parsed = pyotp.parse_uri(enrol["otpauth_uri"])
    assert parsed.digits == digits, f"otpauth_uri digits: {enrol['otpauth_uri']}"
    assert f"ALGORITHM={algorithm}" in enrol["otpauth_uri"].upper(), f"otpauth_uri algorithm: {enrol['otpauth_uri']}"
    # A SHA1 code must not confirm a SHA256/512 method (the algorithm is really used).
    if algorithm != "SHA1":
        sha1 = lk.Authenticator(enrol["secret"], digits=digits, algorithm="SHA1")
        wrong = sha1.code_at_step(sha1.current_step())
        if wrong != auth.code_at_step(auth.current_step()):
            assert_problem(lk.confirm_totp(server, name, enrol["id"], wrong), 400, "invalid-code")
    code, _ = auth.fresh_code(min_remaining=3)
    assert len(code) == digits
    doc = expect(lk.confirm_totp(server, name, enrol["id"], code), 200)
    assert doc.get("state") == "active", doc


# ----------------------------------------------------------------------------- sign-in

def test_password_totp_signin_session_and_replay(server, users):
    alice = users["alice"]
    flow = lk.second_factor_flow(server, alice, application="e2e-portal",
                                 context={"ip": "127.0.0.1", "device_id": "e2e-device-1"})
    assert "totp" in flow.get("allowed_methods", []), f"totp not offered: {flow!r}"
    _future(flow["expires_at"])

    code, _ = alice.auth.fresh_code()
    done = expect(lk.verify(server, flow["flow_id"], {"method": "totp", "code": code}), 200)
    assert done.get("state") == "complete", done
    assert {"pwd", "otp"} <= set(done.get("amr", [])), f"amr: {done!r}"
    assert done.get("acr") == "mfa", f"acr: {done!r}"
    assert set(done.get("methods", [])) == {"password", "totp"}, f"methods: {done!r}"
    token = done.get("session_token")
    assert isinstance(token, str) and token, done
    _future(done["expires_at"])

    # The very same code in a new flow is a replay, even though it is still inside its time step.
    flow2 = lk.second_factor_flow(server, alice)
    assert_problem(lk.verify(server, flow2["flow_id"], {"method": "totp", "code": code}), 401, "code-replayed")

    totp = [m for m in lk.methods(server, "alice") if m.get("id") == alice.totp_method_id]
    assert totp and totp[0].get("last_used_at"), f"last_used_at not set after a TOTP sign-in: {totp!r}"
    lk.parse_rfc3339(totp[0]["last_used_at"])

    sess = expect(server.api("GET", "/session", token=token), 200)
    assert sess.get("username") == "alice", sess
    assert {"pwd", "otp"} <= set(sess.get("amr", [])) and sess.get("acr") == "mfa", sess
    lk.parse_rfc3339(sess["authenticated_at"])
    _future(sess["expires_at"])

    # A fresh MFA session may enrol a method for its own user ...
    own = expect(server.api("POST", "/users/alice/methods/totp", {"label": "second phone"}, token=token), 201)
    assert own.get("secret"), own
    # ... but is not an administrator.
    assert_problem(server.api("GET", "/users/lena", token=token), 403, "forbidden")
    assert_problem(server.api("POST", "/users/lena/methods/totp", {}, token=token), 403, "forbidden")
    assert_problem(server.api("POST", "/users", {"username": "eve", "display_name": "Eve"}, token=token),
                   403, "forbidden")

    expect(server.api("DELETE", "/session", token=token), 204)
    assert_problem(server.api("GET", "/session", token=token), 401)


def test_same_code_raced_in_two_flows_succeeds_once(server, users):
    rex = users["rex"]
    code, _ = rex.auth.fresh_code(min_remaining=10)
    f1, f2 = lk.second_factor_flow(server, rex), lk.second_factor_flow(server, rex)
    r1, r2 = lk.race([lambda: lk.verify(server, f1["flow_id"], {"method": "totp", "code": code}),
                      lambda: lk.verify(server, f2["flow_id"], {"method": "totp", "code": code})])
    for r in (r1, r2):
        assert not isinstance(r, Exception), r
    assert sorted([r1.status_code, r2.status_code]) == [200, 401], \
        f"one code in two concurrent flows: {lk.describe(r1)} / {lk.describe(r2)}"
    assert_problem(r1 if r1.status_code == 401 else r2, 401, "code-replayed")


def test_single_use_tap_raced_in_two_flows_succeeds_once(server):
    lk.create_user(server, "rae")
    for round_ in range(3):
        tap = lk.issue_tap(server, "rae")["pass"]
        s1, s2 = expect(lk.start_signin(server, "rae"), 200), expect(lk.start_signin(server, "rae"), 200)
        r1, r2 = lk.race([
            lambda: lk.verify(server, s1["flow_id"], {"method": "temporary_access_pass", "pass": tap}),
            lambda: lk.verify(server, s2["flow_id"], {"method": "temporary_access_pass", "pass": tap})])
        for r in (r1, r2):
            assert not isinstance(r, Exception), r
        assert sorted([r1.status_code, r2.status_code]) == [200, 401], \
            f"round {round_}: {lk.describe(r1)} / {lk.describe(r2)}"


def test_signin_without_password_then_password_then_totp(server, users):
    pat = users["pat"]
    start = expect(lk.start_signin(server, "pat"), 200)
    assert start.get("state") == "started", start
    assert sorted(start.get("allowed_methods", [])) == ["password", "temporary_access_pass"], start
    step = expect(lk.verify(server, start["flow_id"], {"method": "password", "password": pat.password}), 200)
    assert step.get("state") == "second_factor_required", f"after verifying the password: {step!r}"
    assert "totp" in step.get("allowed_methods", []), step
    code, _ = pat.auth.fresh_code()
    done = expect(lk.verify(server, start["flow_id"], {"method": "totp", "code": code}), 200)
    assert done.get("state") == "complete" and done.get("acr") == "mfa", done
    assert {"pwd", "otp"} <= set(done.get("amr", [])), done


def test_unknown_user_without_password_looks_like_a_known_one(server, users):
    known = expect(lk.start_signin(server, "pat"), 200)
    unknown = expect(lk.start_signin(server, "nobody-by-that-name"), 200)
    assert sorted(known) == sorted(unknown), f"known={known!r} unknown={unknown!r}"
    assert unknown.get("state") == "started"
    assert sorted(unknown.get("allowed_methods", [])) == sorted(known.get("allowed_methods", []))


def test_wrong_password_and_unknown_user_are_indistinguishable(server, users):
    wendy = users["wendy"]
    r_known = lk.start_signin(server, wendy.username, "definitely-not-her-password")
    r_unknown = lk.start_signin(server, "ghost-user-4711", "definitely-not-her-password")
    p_known = assert_problem(r_known, 401, "invalid-credentials")
    p_unknown = assert_problem(r_unknown, 401, "invalid-credentials")
    for k in ("type", "title", "status", "detail"):
        assert p_known.get(k) == p_unknown.get(k), \
            f"{k!r} differs: wrong password {lk.describe(r_known)} vs unknown user {lk.describe(r_unknown)}"
    volatile = {"instance", "trace_id", "request_id", "flow_id"}
    assert {k: v for k, v in p_known.items() if k not in volatile} == \
        {k: v for k, v in p_unknown.items() if k not in volatile}, \
        f"bodies differ: {lk.describe(r_known)} vs {lk.describe(r_unknown)}"
    assert r_known.headers.get("content-type") == r_unknown.headers.get("content-type")
    # Wendy can still sign in (one failure is no lock).
    lk.second_factor_flow(server, wendy)


def test_totp_failures_lock_the_user_until_admin_clears(server, users):
    lena = users["lena"]
    opened_before_lock = lk.second_factor_flow(server, lena)
    for i in range(5):
        flow = lk.second_factor_flow(server, lena)
        r = lk.verify(server, flow["flow_id"], {"method": "totp", "code": lena.auth.wrong_code()})
        assert_problem(r, 401, "invalid-code")

    r = lk.start_signin(server, "lena", lena.password)
    assert_problem(r, 429, "too-many-attempts")
    ra = r.headers.get("Retry-After")
    assert ra is not None and ra.strip().isdigit() and int(ra) > 0, f"Retry-After missing/bad: {lk.describe(r)}"

    r = lk.verify(server, opened_before_lock["flow_id"], {"method": "totp", "code": lena.auth.wrong_code()})
    assert_problem(r, 429, "too-many-attempts")
    # Even the right code must not get through while locked.
    right_now = lena.auth.code_at_step(lena.auth.current_step())
    r = lk.verify(server, opened_before_lock["flow_id"], {"method": "totp", "code": right_now})
    assert_problem(r, 429, "too-many-attempts")

    expect(server.api("DELETE", "/users/lena/lockout"), 204)
    done, _ = lk.signin_with_totp(server, lena)
    assert done.get("acr") == "mfa"


def test_password_failures_lock_the_user(server):
    lk.create_user(server, "frank")
    pw = lk.strong_password()
    lk.set_password(server, "frank", pw)
    for _ in range(5):
        assert_problem(lk.start_signin(server, "frank", "not-franks-password"), 401, "invalid-credentials")
    r = lk.start_signin(server, "frank", pw)
    assert_problem(r, 429, "too-many-attempts")
    assert (r.headers.get("Retry-After") or "").strip().isdigit(), f"Retry-After: {lk.describe(r)}"
    expect(server.api("DELETE", "/users/frank/lockout"), 204)
    ok = expect(lk.start_signin(server, "frank", pw), 200)
    assert ok.get("flow_id"), ok


def test_recovery_codes_single_use_and_regeneration(server, users):
    rita = users["rita"]
    first = lk.generate_recovery_codes(server, "rita")
    assert first.get("id"), first
    rc = [m for m in lk.methods(server, "rita") if m.get("kind") == "recovery_codes"]
    assert rc and all(m.get("state") == "active" for m in rc), f"recovery_codes method: {rc!r}"

    def use(code):
        flow = lk.second_factor_flow(server, rita)
        assert "recovery_code" in flow.get("allowed_methods", []), f"recovery_code not offered: {flow!r}"
        return lk.verify(server, flow["flow_id"], {"method": "recovery_code", "code": code})

    done = expect(use(first["codes"][0]), 200)
    assert done.get("state") == "complete" and done.get("acr") == "mfa", done
    assert "pwd" in done.get("amr", []), done
    assert done.get("session_token"), done

    assert_problem(use(first["codes"][0]), 401, ("invalid-code", "code-replayed"))
    expect(use(first["codes"][1]), 200)

    second = lk.generate_recovery_codes(server, "rita")
    assert not set(first["codes"]) & set(second["codes"]), "regenerated set reuses old codes"
    assert_problem(use(first["codes"][2]), 401, ("invalid-code", "code-replayed"))
    expect(use(second["codes"][0]), 200)


def test_tap_verification_methods_and_multi_use(server):
    lk.create_user(server, "tilly")
    for method in ("callback", "manager_attestation", "in_person_id", "video_call"):
        tap = lk.issue_tap(server, "tilly", method=method, note=f"e2e {method}")
        _future(tap["expires_at"])
    exp = lk.parse_rfc3339(lk.issue_tap(server, "tilly", lifetime_minutes=90)["expires_at"])
    delta = (exp - lk.now_utc()).total_seconds()
    assert 85 * 60 < delta <= 91 * 60, f"lifetime_minutes=90 gave expires_at {exp} ({delta:.0f}s from now)"

    single = lk.issue_tap(server, "tilly", single_use=True)
    expect(lk.tap_signin(server, "tilly", single["pass"]), 200)
    assert_problem(lk.tap_signin(server, "tilly", single["pass"]), 401)


def test_multi_use_tap(server):
    lk.create_user(server, "milo")
    body = {"lifetime_minutes": 60, "single_use": False,
            "verification": {"method": "video_call", "note": "e2e: video call"}}
    r = server.api("POST", "/users/milo/temporary-access-passes", body)
    if r.status_code == 403:
        p = assert_problem(r, 403, "forbidden")
        pytest.skip(f"multi-use TAPs refused by the server's policy: {p.get('detail')!r}")
    multi = expect(r, 201)
    for _ in range(2):
        done = expect(lk.tap_signin(server, "milo", multi["pass"]), 200)
        assert done.get("acr") == "passwordless_mfa" and done.get("methods") == ["temporary_access_pass"], done


def test_notifications_for_new_methods_and_taps(server):
    lk.create_user(server, "nora")
    lk.set_password(server, "nora", lk.strong_password())

    def notes():
        doc = expect(server.api("GET", "/users/nora/notifications"), 200)
        assert isinstance(doc, list), doc
        for n in doc:
            for k in ("at", "channel", "subject", "body"):
                assert k in n, f"notification lacks {k!r}: {n!r}"
        return doc

    n0 = len(notes())
    enrol, auth = lk.enroll_totp(server, "nora")
    code, _ = auth.fresh_code(min_remaining=3)
    expect(lk.confirm_totp(server, "nora", enrol["id"], code), 200)
    n1 = len(notes())
    assert n1 > n0, f"no notification for the new TOTP method: {notes()!r}"
    lk.issue_tap(server, "nora")
    n2 = len(notes())
    assert n2 > n1, f"no notification for the TAP: {notes()!r}"
    lk.generate_recovery_codes(server, "nora")
    n3 = len(notes())
    assert n3 > n2, f"no notification for the recovery codes: {notes()!r}"


# ----------------------------------------------------------------------------- audit (runs last)

def test_audit_chain_verifies_and_records_the_actions(server, users):
    events = lk.audit_events(server, limit=7)
    assert events, "no audit events at all"
    seqs = [e["seq"] for e in events]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), f"audit seqs not contiguous: {seqs}"
    for k in ("seq", "at", "actor", "action", "target", "details", "prev_hash", "hash"):
        assert k in events[0], f"audit event lacks {k!r}: {events[0]!r}"
    for prev, cur in zip(events, events[1:]):
        assert cur["prev_hash"] == prev["hash"], f"chain link broken between {prev!r} and {cur!r}"

    page = expect(server.api("GET", "/audit?after=0&limit=2"), 200)
    assert len(page["events"]) == 2 and page.get("next_after") == page["events"][-1]["seq"], page
    page2 = expect(server.api("GET", f"/audit?after={page['next_after']}&limit=2"), 200)
    assert page2["events"][0]["seq"] == page["next_after"] + 1, page2

    v = expect(server.api("GET", "/audit/verify"), 200)
    assert v.get("ok") is True and v.get("first_broken") is None, v
    assert v.get("length") >= len(events) and v.get("head_hash"), v

    import json as _json
    about_alice = [e for e in events if "alice" in _json.dumps(e.get("target")) + _json.dumps(e.get("details"))]
    actions = [e["action"] for e in about_alice]
    want = {
        "user create": r"user.*creat|creat.*user",
        "password set": r"password",
        "method add": r"(method|totp).*(add|enrol|regist|creat|confirm)|(add|enrol|regist|creat|confirm).*(method|totp)",
    }
    for what, pattern in want.items():
        assert any(re.search(pattern, a, re.I) for a in actions), \
            f"no audit action for {what} of alice; actions about alice: {actions}"
