"""OpenID Connect through a real browser (issue #9): a relying party runs inside
the test (a tiny `http.server` with a /callback), Authlib builds the
authorization request (PKCE S256 + nonce + state), headless Chromium follows
it to Latchkey's /signin pages and signs in by filling the real form fields
(username → password → TOTP code). The RP then exchanges the code with Authlib
and validates the ID token against /oauth2/jwks.

The second test asks for acr_values=phishing_resistant: the browser is sent to
a forced fresh sign-in, the TOTP-only user signs in with password + TOTP, and
the RP must receive error=unmet_authentication_requirements at its callback.
"""
from __future__ import annotations

import os
import re
import shutil
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest
from authlib.common.security import generate_token
from authlib.integrations.requests_client import OAuth2Session
from authlib.jose import JsonWebKey, jwt
from authlib.oidc.core import CodeIDToken

import lk
from lk import expect

playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright not installed (tests/requirements.txt)")

CHROMIUM = os.environ.get("LATCHKEY_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
NAV_TIMEOUT_MS = 20_000


# --------------------------------------------------------------------------- the relying party

class RelyingParty:
    """A minimal RP: records every query that reaches GET /callback."""

    def __init__(self):
        self.calls: list[dict[str, list[str]]] = []
        rp = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server API)
                parts = urlsplit(self.path)
                if parts.path != "/callback":
                    self.send_error(404)
                    return
                rp.calls.append(parse_qs(parts.query, keep_blank_values=True))
                body = b"<!doctype html><title>RP callback</title><h1>relying party callback</h1>"
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *a):  # keep pytest output clean
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.redirect_uri = f"http://127.0.0.1:{self.port}/callback"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def rp():
    r = RelyingParty()
    yield r
    r.close()


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM:
        pytest.fail("chromium not found: scripts/test.sh installs it (apt-get install chromium)", pytrace=False)
    with playwright_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"], headless=True)
        yield b
        b.close()


@pytest.fixture(scope="module")
def meta(server):
    doc = expect(server.get_raw("/.well-known/openid-configuration"), 200)
    assert doc["issuer"] == server.url, doc
    return doc


@pytest.fixture(scope="module")
def client(server, rp):
    """A public client registered through the admin API, redirecting to the in-test RP."""
    body = {"name": "e2e browser RP", "type": "public", "redirect_uris": [rp.redirect_uri]}
    doc = expect(server.api("POST", "/oidc/clients", body), 201)
    assert doc["client_id"] and doc.get("client_secret") is None, doc
    return doc


@pytest.fixture(scope="module")
def user(server):
    return lk.provision(server, ["bo-oidc"])["bo-oidc"]


# --------------------------------------------------------------------------- helpers

def oauth(client: dict, rp: RelyingParty) -> OAuth2Session:
    return OAuth2Session(client["client_id"], scope="openid profile", redirect_uri=rp.redirect_uri,
                         code_challenge_method="S256", token_endpoint_auth_method="none")


def start(sess: OAuth2Session, meta: dict, **params) -> tuple[str, str, str, str]:
    """Authlib builds the authorization URL: (url, state, nonce, code_verifier)."""
    verifier = generate_token(64)
    nonce = generate_token(20)
    url, state = sess.create_authorization_url(meta["authorization_endpoint"], code_verifier=verifier,
                                               nonce=nonce, **params)
    q = parse_qs(urlsplit(url).query)
    assert q["code_challenge_method"] == ["S256"] and q["code_challenge"] and q["nonce"] == [nonce], url
    return url, state, nonce, verifier


def where(page) -> str:
    """The page's URL, heading and alerts, for assertion messages."""
    try:
        h1 = page.locator("h1").first.inner_text(timeout=2000)
    except Exception:
        h1 = "?"
    try:
        alerts = page.locator("[role=alert]").all_inner_texts()
    except Exception:
        alerts = []
    console = getattr(page, "_lk_console", [])[-5:]
    return f"url={page.url!r} h1={h1!r} alerts={alerts!r} browser console={console!r}"


def sign_in_in_browser(page, srv: lk.Server, user: lk.User, rp: RelyingParty):
    """On Latchkey's /signin page: username → password → TOTP, as a person would.
    Returns when the browser has left Latchkey for the RP (or fails with what it shows)."""
    # A browser sent to 127.0.0.1 is moved to localhost, where passkeys work.
    origin = srv.url.replace("://127.0.0.1:", "://localhost:")
    page.wait_for_url(re.compile(re.escape(origin) + r"/signin\?"), timeout=NAV_TIMEOUT_MS)
    assert page.locator("h1").first.inner_text() == "Sign in", where(page)
    page.fill("input#username[name=username]", user.username)
    page.get_by_role("button", name="Next").click()

    page.wait_for_url(re.compile(re.escape(origin) + r"/signin/continue\?"), timeout=NAV_TIMEOUT_MS)
    assert page.locator("h1").first.inner_text() == "Enter your password", where(page)
    page.fill("input#password[name=password]", user.password)
    page.get_by_role("button", name="Sign in").click()

    page.wait_for_url(re.compile(re.escape(origin) + r"/signin/continue\?"), timeout=NAV_TIMEOUT_MS)
    assert page.locator("h1").first.inner_text() == "Enter the code from your authenticator app", where(page)
    assert page.locator("input[type=hidden][name=method]").get_attribute("value") == "totp", where(page)
    code, _ = user.auth.fresh_code()  # a step never used before: no replay
    page.fill("input#code[name=code]", code)
    page.get_by_role("button", name="Sign in").click()
    try:
        page.wait_for_url(rp.redirect_uri + "?*", timeout=NAV_TIMEOUT_MS)
    except playwright_api.TimeoutError:
        pytest.fail(f"the browser did not come back to the relying party after password + TOTP: {where(page)}",
                    pytrace=False)


def new_page(browser):
    ctx = browser.new_context()
    ctx.set_default_timeout(NAV_TIMEOUT_MS)
    page = ctx.new_page()
    page._lk_console = []  # what Chromium logs (e.g. CSP violations), for failure messages
    page.on("console", lambda m: page._lk_console.append(f"{m.type}: {m.text}"))
    return ctx, page


# --------------------------------------------------------------------------- tests

def test_browser_code_flow_password_totp_id_token_validated(server, browser, rp, client, meta, user):
    ctx, page = new_page(browser)
    try:
        sess = oauth(client, rp)
        url, state, nonce, verifier = start(sess, meta)
        before = len(rp.calls)
        page.goto(url)
        # No session yet: Latchkey sends the browser to its sign-in page.
        assert urlsplit(page.url).path == "/signin", where(page)
        nxt = parse_qs(urlsplit(page.url).query)["next"][0]
        assert nxt.startswith("/oauth2/authorize?"), page.url
        sign_in_in_browser(page, server, user, rp)

        assert len(rp.calls) == before + 1, rp.calls
        q = rp.calls[-1]
        assert "error" not in q, q
        assert q["state"] == [state] and q["iss"] == [meta["issuer"]] and len(q["code"]) == 1, q
        assert page.url.startswith(rp.redirect_uri + "?"), page.url

        # The RP (Authlib) exchanges the code with its PKCE verifier.
        tok = sess.fetch_token(meta["token_endpoint"], authorization_response=page.url, code_verifier=verifier)
        assert tok["token_type"].lower() == "bearer" and tok["id_token"], tok

        keys = JsonWebKey.import_key_set(expect(server.get_raw("/oauth2/jwks"), 200))
        claims = jwt.decode(tok["id_token"], keys, claims_cls=CodeIDToken,
                            claims_options={"iss": {"essential": True, "value": meta["issuer"]}},
                            claims_params={"nonce": nonce, "client_id": client["client_id"]})
        claims.validate(leeway=5)  # signature above; iss, aud, exp, iat, nonce here
        assert claims["iss"] == server.url
        aud = claims["aud"] if isinstance(claims["aud"], list) else [claims["aud"]]
        assert aud == [client["client_id"]], claims
        assert claims["nonce"] == nonce, claims
        assert "pwd" in claims["amr"] and "otp" in claims["amr"], claims
        assert claims["acr"] == "mfa", claims
        assert claims["preferred_username"] == user.username, claims
        assert claims["auth_time"] <= claims["iat"], claims

        info = sess.get(meta["userinfo_endpoint"]).json()
        assert info["sub"] == claims["sub"] and info["preferred_username"] == user.username, info
    finally:
        ctx.close()


def test_browser_phishing_resistant_request_for_totp_user_fails_at_the_rp(server, browser, rp, client, meta,
                                                                         user):
    ctx, page = new_page(browser)
    try:
        # First an ordinary sign-in, so the browser holds an MFA (not phishing-resistant) session.
        sess = oauth(client, rp)
        url, state, _, _ = start(sess, meta)
        page.goto(url)
        sign_in_in_browser(page, server, user, rp)
        assert "code" in rp.calls[-1] and rp.calls[-1]["state"] == [state], rp.calls[-1]
        assert any(c["name"] == "lk_session" for c in ctx.cookies(server.url.replace("://127.0.0.1:", "://localhost:"))), ctx.cookies()

        # Now the RP asks for a phishing-resistant sign-in.
        sess = oauth(client, rp)
        url, state, _, _ = start(sess, meta, acr_values="phishing_resistant")
        before = len(rp.calls)
        page.goto(url)
        # The existing session is too weak: a forced, fresh sign-in that names the strength.
        assert urlsplit(page.url).path == "/signin", where(page)
        q = parse_qs(urlsplit(page.url).query)
        assert q["acr"] == ["phishing_resistant"] and q["prompt"] == ["login"], page.url
        assert q["next"][0].startswith("/oauth2/authorize?"), page.url
        assert "phishing-resistant" in page.locator("main, body").first.inner_text(), where(page)
        assert len(rp.calls) == before, "nothing reaches the RP before the user signs in again"

        # The TOTP-only user can only do password + TOTP: the RP must get the OIDC error.
        sign_in_in_browser(page, server, user, rp)
        assert len(rp.calls) == before + 1, rp.calls
        back = rp.calls[-1]
        assert back.get("error") == ["unmet_authentication_requirements"], back
        assert back["state"] == [state] and back["iss"] == [meta["issuer"]], back
        assert "code" not in back, back
    finally:
        ctx.close()
