"""OpenID Connect provider end to end, with a client library nobody here wrote
(Authlib): register a client, run the code flow with PKCE against a real
`latchkey serve`, validate the ID token against /oauth2/jwks, step-up, and
the negative cases (redirect URI, PKCE verifier, code reuse, refresh reuse).
Expired codes are covered in Rust with a ManualClock (tests/oidc.rs)."""
from __future__ import annotations

import json
from urllib.parse import parse_qs, urlsplit

import pytest
from authlib.common.security import generate_token
from authlib.integrations.base_client.errors import OAuthError
from authlib.integrations.requests_client import OAuth2Session
from authlib.jose import JsonWebKey, jwt
from authlib.oidc.core import CodeIDToken

import lk
from lk import assert_problem, expect

REDIRECT = "http://127.0.0.1:9/callback"
LOGOUT_TO = "http://127.0.0.1:9/signed-out"
USERS = ["ana", "ben", "cyd", "dee", "eli", "fox", "gil"]


@pytest.fixture(scope="module")
def users(server):
    return lk.provision(server, USERS)


@pytest.fixture(scope="module")
def meta(server):
    doc = expect(server.get_raw("/.well-known/openid-configuration"), 200)
    assert doc["issuer"] == server.url
    return doc


def register(server, kind="public") -> dict:
    body = {"name": f"e2e {kind}", "type": kind, "redirect_uris": [REDIRECT],
            "post_logout_redirect_uris": [LOGOUT_TO]}
    doc = expect(server.api("POST", "/oidc/clients", body), 201)
    assert doc["client_id"] and (doc.get("client_secret") is not None) == (kind == "confidential")
    return doc


def session_token(server, user: lk.User, client_id: str) -> str:
    """Sign in through the JSON API (password + TOTP), as the web UI would."""
    flow = lk.second_factor_flow(server, user, application=client_id)
    code, _ = user.auth.fresh_code()
    done = expect(lk.verify(server, flow["flow_id"], {"method": "totp", "code": code}), 200)
    assert done["state"] == "complete" and done["session_token"], done
    return done["session_token"]


def oauth(client: dict, meta: dict, **kw) -> OAuth2Session:
    auth = "client_secret_basic" if client.get("client_secret") else "none"
    return OAuth2Session(client["client_id"], client.get("client_secret"), scope="openid profile",
                         redirect_uri=REDIRECT, code_challenge_method="S256",
                         token_endpoint_auth_method=auth, **kw)


def authorize(server, sess: OAuth2Session, meta: dict, token: str | None, **params):
    """Start an authorization with Authlib; follow it with the browser cookie; return
    (Location, verifier, nonce, state)."""
    verifier = generate_token(64)
    nonce = generate_token(20)
    url, state = sess.create_authorization_url(meta["authorization_endpoint"], code_verifier=verifier,
                                               nonce=nonce, **params)
    cookies = {"lk_session": token} if token else {}
    r = server.http.get(url, cookies=cookies, allow_redirects=False, timeout=lk.HTTP_TIMEOUT)
    assert r.status_code == 302, lk.describe(r)
    return r.headers["location"], verifier, nonce, state


def validate_id_token(server, meta, client, id_token, nonce):
    keys = JsonWebKey.import_key_set(expect(server.get_raw("/oauth2/jwks"), 200))
    claims = jwt.decode(id_token, keys, claims_cls=CodeIDToken,
                        claims_options={"iss": {"essential": True, "value": meta["issuer"]}},
                        claims_params={"nonce": nonce, "client_id": client["client_id"]})
    claims.validate(leeway=5)
    return claims


def code_flow(server, meta, client, user, **params):
    token = session_token(server, user, client["client_id"])
    sess = oauth(client, meta)
    loc, verifier, nonce, state = authorize(server, sess, meta, token, **params)
    assert loc.startswith(REDIRECT), loc
    q = parse_qs(urlsplit(loc).query)
    assert q["state"] == [state] and q["iss"] == [meta["issuer"]]
    tok = sess.fetch_token(meta["token_endpoint"], authorization_response=loc, code_verifier=verifier)
    return sess, tok, nonce, token


def test_code_flow_with_pkce_validated_by_authlib(server, users, meta):
    client = register(server, "public")
    sess, tok, nonce, _ = code_flow(server, meta, client, users["ana"])
    claims = validate_id_token(server, meta, client, tok["id_token"], nonce)
    assert claims["acr"] == "mfa"
    assert claims["amr"] == ["pwd", "otp", "mfa"]
    assert claims["preferred_username"] == "ana" and claims["auth_time"] <= claims["iat"]
    info = sess.get(meta["userinfo_endpoint"]).json()
    assert info["sub"] == claims["sub"] and info["preferred_username"] == "ana"


def test_confidential_client_registered_with_the_cli(server, users, meta):
    cp = server.cli("oidc", "client", "add", "--name", "Portal", "--type", "confidential",
                    "--redirect-uri", REDIRECT, "--json", "--data", str(server.data_dir))
    assert cp.returncode == 0, cp.stderr
    client = json.loads(cp.stdout)
    assert client["client_secret"].startswith("lk_cs_")
    _, tok, nonce, _ = code_flow(server, meta, client, users["ben"])
    assert validate_id_token(server, meta, client, tok["id_token"], nonce)["acr"] == "mfa"
    bad = dict(client, client_secret="lk_cs_wrong")
    with pytest.raises(OAuthError) as e:
        oauth(bad, meta).refresh_token(meta["token_endpoint"], refresh_token=tok["refresh_token"])
    assert e.value.error == "invalid_client"


def test_phishing_resistant_request_for_totp_user_fails_after_forced_sign_in(server, users, meta):
    client = register(server, "public")
    user = users["cyd"]
    recovery = lk.generate_recovery_codes(server, "cyd")["codes"]
    token = session_token(server, user, client["client_id"])
    sess = oauth(client, meta)
    loc, _, _, state = authorize(server, sess, meta, token, acr_values="phishing_resistant")
    assert loc.startswith("/signin?"), f"step-up must send the browser to sign in: {loc}"
    q = parse_qs(urlsplit(loc).query)
    assert q["acr"] == ["phishing_resistant"] and q["prompt"] == ["login"]
    nxt = q["next"][0]
    assert nxt.startswith("/oauth2/authorize?") and not nxt.startswith("//")
    # The forced fresh sign-in (a recovery code: this user has nothing phishing-resistant).
    import time
    time.sleep(1.1)  # a session from the same second as the redirect counts as fresh
    flow = lk.second_factor_flow(server, user, application=client["client_id"])
    done = expect(lk.verify(server, flow["flow_id"], {"method": "recovery_code", "code": recovery[0]}), 200)
    r = server.http.get(server.url + nxt, cookies={"lk_session": done["session_token"]}, allow_redirects=False,
                        timeout=lk.HTTP_TIMEOUT)
    assert r.status_code == 302, lk.describe(r)
    back = r.headers["location"]
    assert back.startswith(REDIRECT), back
    err = parse_qs(urlsplit(back).query)
    assert err["error"] == ["unmet_authentication_requirements"] and err["state"] == [state]
    assert "code" not in err


def test_redirect_uri_mismatch_is_an_error_page_not_a_redirect(server, users, meta):
    client = register(server, "public")
    token = session_token(server, users["dee"], client["client_id"])
    sess = OAuth2Session(client["client_id"], scope="openid", redirect_uri=REDIRECT + "/other",
                         code_challenge_method="S256")
    url, _ = sess.create_authorization_url(meta["authorization_endpoint"], code_verifier=generate_token(64))
    r = server.http.get(url, cookies={"lk_session": token}, allow_redirects=False, timeout=lk.HTTP_TIMEOUT)
    assert_problem(r, 400, "invalid-request")
    assert "location" not in r.headers
    # PKCE verifier mismatch at the token endpoint.
    sess = oauth(client, meta)
    loc, _verifier, _, _ = authorize(server, sess, meta, token)
    with pytest.raises(OAuthError) as e:
        sess.fetch_token(meta["token_endpoint"], authorization_response=loc, code_verifier=generate_token(64))
    assert e.value.error == "invalid_grant"


def test_code_reuse_revokes_the_whole_grant(server, users, meta):
    client = register(server, "public")
    token = session_token(server, users["eli"], client["client_id"])
    sess = oauth(client, meta)
    loc, verifier, _, _ = authorize(server, sess, meta, token)
    first = sess.fetch_token(meta["token_endpoint"], authorization_response=loc, code_verifier=verifier)
    with pytest.raises(OAuthError) as e:
        oauth(client, meta).fetch_token(meta["token_endpoint"], authorization_response=loc, code_verifier=verifier)
    assert e.value.error == "invalid_grant"
    with pytest.raises(OAuthError) as e:
        oauth(client, meta).refresh_token(meta["token_endpoint"], refresh_token=first["refresh_token"])
    assert e.value.error == "invalid_grant", "the refresh token from the first exchange must stop working"
    r = server.http.get(meta["userinfo_endpoint"], headers={"Authorization": f"Bearer {first['access_token']}"},
                        timeout=lk.HTTP_TIMEOUT)
    assert r.status_code == 401


def test_refresh_rotation_and_reuse_detection(server, users, meta):
    client = register(server, "public")
    _, tok, _, _ = code_flow(server, meta, client, users["fox"])
    rotated = oauth(client, meta).refresh_token(meta["token_endpoint"], refresh_token=tok["refresh_token"])
    assert rotated["refresh_token"] != tok["refresh_token"]
    with pytest.raises(OAuthError) as e:
        oauth(client, meta).refresh_token(meta["token_endpoint"], refresh_token=tok["refresh_token"])
    assert e.value.error == "invalid_grant"
    with pytest.raises(OAuthError):
        oauth(client, meta).refresh_token(meta["token_endpoint"], refresh_token=rotated["refresh_token"])


def test_rp_initiated_logout(server, users, meta):
    client = register(server, "public")
    _, tok, _, session = code_flow(server, meta, client, users["gil"])
    r = server.http.get(meta["end_session_endpoint"], params={"id_token_hint": tok["id_token"],
                        "post_logout_redirect_uri": "http://127.0.0.1:9/elsewhere"},
                        cookies={"lk_session": session}, allow_redirects=False, timeout=lk.HTTP_TIMEOUT)
    assert_problem(r, 400)
    r = server.http.get(meta["end_session_endpoint"], params={"id_token_hint": tok["id_token"],
                        "post_logout_redirect_uri": LOGOUT_TO, "state": "bye"},
                        cookies={"lk_session": session}, allow_redirects=False, timeout=lk.HTTP_TIMEOUT)
    assert r.status_code == 302 and r.headers["location"] == LOGOUT_TO + "?state=bye", lk.describe(r)
    assert_problem(server.api("GET", "/session", token=session), 401)
