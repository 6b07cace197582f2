"""Process lifecycle, CLI and discovery endpoints."""
from __future__ import annotations

import re

import lk
from lk import assert_problem, expect


def _get_either(srv: lk.Server, name: str):
    """The contract lists /healthz and /openapi.json with the API; accept them at the root or under /api/v1."""
    tried = []
    for path in (f"/api/v1/{name}", f"/{name}"):
        r = srv.get_raw(path)
        tried.append(lk.describe(r))
        if r.status_code == 200:
            return r
    raise AssertionError(f"{name} not served:\n" + "\n".join(tried))


def test_healthz(make_server):
    srv = make_server("smoke")
    r = _get_either(srv, "healthz")
    assert r.status_code == 200


def test_openapi_describes_the_api(make_server):
    srv = make_server("smoke")
    r = _get_either(srv, "openapi.json")
    doc = r.json()
    assert str(doc.get("openapi", "")).startswith("3.1"), f"not OpenAPI 3.1: openapi={doc.get('openapi')!r}"
    have = set()
    for path, item in (doc.get("paths") or {}).items():
        norm = re.sub(r"\{[^}]+\}", "{}", path)
        norm = norm[len("/api/v1"):] if norm.startswith("/api/v1") else norm
        for method in item:
            have.add(f"{method.upper()} {norm}")
    want = ["POST /users", "GET /users/{}", "PUT /users/{}/password", "GET /users/{}/methods",
            "POST /users/{}/methods/totp", "POST /users/{}/methods/totp/{}/confirm",
            "POST /users/{}/methods/recovery-codes", "POST /users/{}/temporary-access-passes",
            "POST /signin", "POST /signin/{}/verify", "GET /session", "DELETE /session",
            "DELETE /users/{}/lockout", "GET /audit", "GET /audit/verify", "GET /users/{}/notifications"]
    missing = [w for w in want if w not in have]
    assert not missing, f"openapi.json lacks {missing}; it has {sorted(have)}"


def test_server_exits_when_stdin_closes(make_server):
    srv = make_server("smoke")
    code = srv.stop()
    assert srv.exited_on_stdin_close, "server ignored EOF on stdin despite --stop-on-stdin-close"
    assert code == 0, f"exit code after stdin close: {code}\n{srv.log_tail()}"


def test_api_token_cli_while_running(make_server):
    srv = make_server("smoke")
    second = srv.create_api_token("another-automation")
    assert second != srv.admin_token
    expect(srv.api("GET", "/users/admin", token=second), 200)
    assert_problem(srv.api("GET", "/users/admin", token=second + "x"), 401)


def test_restart_keeps_data_and_tokens(make_server):
    srv = make_server("smoke")
    lk.create_user(srv, "persisted")
    token = srv.admin_token
    srv.restart(expect_bootstrap=False)
    got = expect(srv.api("GET", "/users/persisted", token=token), 200)
    assert got["username"] == "persisted"
