"""WebAuthn through a real browser: headless Chromium with its virtual
authenticator (the CDP WebAuthn domain), driving crates/latchkey-http/static/webauthn.js
against a real `latchkey serve`.

The page is opened at http://localhost:PORT (the server derives RP ID
`localhost` from its loopback URL), so the browser itself builds the client
data and enforces origin rules.
"""
from __future__ import annotations

import os
import shutil

import pytest

import lk

playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright not installed (tests/requirements.txt)")

CHROMIUM = os.environ.get("LATCHKEY_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM:
        pytest.fail("chromium not found: scripts/test.sh installs it (apt-get install chromium)", pytrace=False)
    with playwright_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"], headless=True)
        yield b
        b.close()


class Page:
    """A page on the server's origin with webauthn.js loaded and a virtual authenticator."""

    def __init__(self, browser, srv: lk.Server, **authenticator):
        self.ctx = browser.new_context()
        self.page = self.ctx.new_page()
        self.page.goto(f"http://localhost:{srv.port}/healthz")
        self.page.add_script_tag(url="/static/webauthn.js")
        self.cdp = self.ctx.new_cdp_session(self.page)
        self.cdp.send("WebAuthn.enable", {"enableUI": False})
        self.authenticator_id = None
        self.add_authenticator(**authenticator)

    def add_authenticator(self, **opts):
        if self.authenticator_id:
            self.cdp.send("WebAuthn.removeVirtualAuthenticator", {"authenticatorId": self.authenticator_id})
        options = {"protocol": "ctap2", "transport": "usb", "hasResidentKey": False,
                   "hasUserVerification": False, "isUserVerified": False,
                   "automaticPresenceSimulation": True, **opts}
        self.authenticator_id = self.cdp.send("WebAuthn.addVirtualAuthenticator", {"options": options})["authenticatorId"]
        return self.authenticator_id

    def credentials(self):
        return self.cdp.send("WebAuthn.getCredentials", {"authenticatorId": self.authenticator_id})["credentials"]

    def js(self, expr: str, arg=None):
        """Evaluate an async function; returns {ok, value} or {ok: False, error, problem}."""
        return self.page.evaluate(
            """async ([f, arg]) => {
                 try { return {ok: true, value: await (eval(f))(arg)}; }
                 catch (e) { return {ok: false, error: String(e), name: e.name, problem: e.problem || null}; }
               }""",
            [expr, arg],
        )

    def close(self):
        self.ctx.close()


PASSKEY = {"transport": "internal", "hasResidentKey": True, "hasUserVerification": True, "isUserVerified": True}


def user_with_password(srv, name):
    lk.create_user(srv, name)
    pw = lk.strong_password()
    lk.set_password(srv, name, pw)
    return pw


def tap_session(srv, name) -> str:
    tap = lk.issue_tap(srv, name)["pass"]
    done = lk.expect(lk.tap_signin(srv, name, tap), 200)
    return done["session_token"]


def test_passkey_registration_then_usernameless_signin(server, browser):
    pw = user_with_password(server, "wa-pat")
    session = tap_session(server, "wa-pat")
    page = Page(browser, server, **PASSKEY)
    try:
        r = page.js("(a) => LatchkeyWebAuthn.register(a.u, 'passkey', 'Laptop', {token: a.t})",
                    {"u": "wa-pat", "t": session})
        assert r["ok"], r
        cred = r["value"]
        assert cred["credential_kind"] == "passkey" and cred["label"] == "Laptop", cred
        stored = page.credentials()
        assert len(stored) == 1 and stored[0]["isResidentCredential"], stored

        # Usernameless: the browser offers the discoverable passkey.
        r = page.js("() => LatchkeyWebAuthn.signInWithPasskey()")
        assert r["ok"], r
        done = r["value"]
        assert done["state"] == "complete", done
        assert done["acr"] == "phishing_resistant", done
        assert "user" in done["amr"] and "mfa" in done["amr"], done
        assert "pwd" not in done["amr"], done
        me = lk.expect(server.api("GET", "/session", token=done["session_token"]), 200)
        assert me["username"] == "wa-pat", me

        # Username first, no password: the same passkey.
        flow = lk.expect(lk.start_signin(server, "wa-pat"), 200)
        r = page.js("(f) => LatchkeyWebAuthn.signInPasswordless(f)", flow["flow_id"])
        assert r["ok"] and r["value"]["acr"] == "phishing_resistant", r

        # After the password, the passkey also serves as the second factor.
        flow = lk.expect(lk.start_signin(server, "wa-pat", pw), 200)
        assert flow["state"] == "second_factor_required" and "webauthn" in flow["allowed_methods"], flow
        r = page.js("(f) => LatchkeyWebAuthn.signInSecondFactor(f)", flow["flow_id"])
        assert r["ok"] and r["value"]["acr"] == "phishing_resistant", r
    finally:
        page.close()


def test_security_key_after_password_and_cloned_key_refused(server, browser):
    pw = user_with_password(server, "wa-sam")
    page = Page(browser, server)  # a USB security key without user verification
    try:
        r = page.js("(u) => LatchkeyWebAuthn.register(u, 'security_key', 'YubiKey', {token: window.ADMIN})"
                    .replace("window.ADMIN", repr(server.admin_token)), "wa-sam")
        assert r["ok"], r
        assert r["value"]["credential_kind"] == "security_key", r

        def sign_in():
            flow = lk.expect(lk.start_signin(server, "wa-sam", pw), 200)
            return page.js("(f) => LatchkeyWebAuthn.signInSecondFactor(f)", flow["flow_id"])

        r = sign_in()
        assert r["ok"], r
        assert r["value"]["acr"] == "phishing_resistant", r
        assert r["value"]["amr"] == ["pwd", "hwk", "mfa"], r

        # Without the password the key alone is not enough (no user verification).
        r = page.js("() => LatchkeyWebAuthn.signInWithPasskey()")
        assert not r["ok"], r

        # Clone: the same private key with an older signature counter.
        [c] = page.credentials()
        assert c["signCount"] >= 1, c
        assert sign_in()["ok"]
        page.cdp.send("WebAuthn.removeCredential", {"authenticatorId": page.authenticator_id,
                                                    "credentialId": c["credentialId"]})
        page.cdp.send("WebAuthn.addCredential", {"authenticatorId": page.authenticator_id,
                                                 "credential": {**c, "signCount": c["signCount"]}})
        r = sign_in()
        assert not r["ok"], r
        assert r["problem"]["type"] == "urn:latchkey:problem:webauthn-counter-regression", r
        events = lk.audit_events(server)
        assert any(e["action"] == "webauthn.counter_regression" and e["target"] == "user:wa-sam"
                   for e in events), [e["action"] for e in events][-10:]
    finally:
        page.close()


def test_bad_webauthn_bodies_are_4xx(server):
    user_with_password(server, "wa-bad")
    start = lk.expect(server.api("POST", "/users/wa-bad/methods/webauthn/register/start",
                                 {"kind": "security_key"}), 200)
    assert start["publicKey"]["rp"]["id"] == "localhost", start
    for cred in [{}, {"id": "AA", "rawId": "AA", "type": "public-key",
                      "response": {"attestationObject": "AAAA", "clientDataJSON": "e30"}}, "x", [1]]:
        lk.assert_problem(server.api("POST", "/users/wa-bad/methods/webauthn/register/finish",
                                     {"ceremony_id": start["ceremony_id"], "credential": cred}), (400, 404, 422))
    flow = lk.expect(server.api("POST", "/signin/passkey/start", None, token=None), 200)
    for a in [{}, {"id": "AA", "rawId": "AA", "type": "public-key",
                   "response": {"authenticatorData": "AAAA", "clientDataJSON": "e30", "signature": "AA"}}]:
        lk.assert_problem(lk.verify(server, flow["flow_id"], {"method": "webauthn", "assertion": a}),
                          (400, 401, 409))
