"""Hostile and malformed input: every answer is a 4xx application/problem+json, never a 5xx."""
from __future__ import annotations

import json
import uuid

import pytest

import lk
from lk import assert_problem, expect

JSON = {"Content-Type": "application/json"}


@pytest.fixture(scope="module")
def people(server):
    """victor: password + TOTP (sign-in target); bob: a non-admin with a TAP session."""
    users = lk.provision(server, ["victor", "mia"])
    lk.create_user(server, "bob")
    tap = lk.issue_tap(server, "bob")
    done = expect(lk.tap_signin(server, "bob", tap["pass"]), 200)
    users["bob"] = lk.User("bob", extra={"session": done["session_token"]})
    return users


def assert_4xx_problem(resp, allowed=None):
    assert resp.status_code < 500, f"server error: {lk.describe(resp)}"
    assert 400 <= resp.status_code < 500, f"expected a 4xx: {lk.describe(resp)}"
    if allowed:
        assert resp.status_code in allowed, f"expected one of {allowed}: {lk.describe(resp)}"
    return assert_problem(resp, resp.status_code)


# ----------------------------------------------------------------------------- bodies

@pytest.mark.parametrize("raw", [
    "{not json",
    "",
    "[]",
    "null",
    '{"username": "x", "display_name": ',
    '"just a string"',
    "\x00\x01\x02",
    '{"username": "ok-name", "display_name": "A"}{"extra": 1}',
])
def test_malformed_json(server, raw):
    r = server.api("POST", "/users", data=raw.encode("utf-8"), headers=JSON)
    assert_4xx_problem(r, allowed=(400, 422))


def test_unknown_and_mistyped_fields(server):
    for body in (
        {"username": "unk1", "display_name": "U", "is_superuser": True},
        {"username": "unk2", "display_name": "U", "roles": "admin"},
        {"username": 42, "display_name": "U"},
        {"username": "unk3"},
        {"display_name": "no username"},
        {"username": "unk4", "display_name": "U", "groups": [1, 2]},
    ):
        r = server.api("POST", "/users", body)
        assert_4xx_problem(r, allowed=(400, 422))
    for name in ("unk1", "unk2", "unk3", "unk4"):
        assert_problem(server.api("GET", f"/users/{name}"), 404, "not-found")


def test_wrong_content_type(server):
    r = server.api("POST", "/users", data="username=x&display_name=y",
                   headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert_4xx_problem(r, allowed=(400, 415, 422))


def test_oversized_body_is_413(server):
    big = {"username": "big", "display_name": "x" * (65 * 1024)}
    r = server.api("POST", "/users", big)
    assert_problem(r, 413)
    r = server.api("POST", "/signin", data=b"{" + b" " * (70 * 1024) + b"}", headers=JSON, token=None)
    assert_problem(r, 413)
    assert_problem(server.api("GET", "/users/big"), 404, "not-found")


def test_body_just_under_the_limit_is_not_413(server):
    body = {"username": "under-limit", "display_name": "y" * (60 * 1024)}
    r = server.api("POST", "/users", body)
    assert r.status_code != 413 and r.status_code < 500, lk.describe(r)


# ----------------------------------------------------------------------------- usernames

BAD_USERNAMES = ["", "A", "Alice", "-alice", ".alice", "_alice", "a" * 65, "al ice", "alice@example.com",
                 "ålice", "al/ice", "..", "alice\n", "al\tice", "ALICE", "al:ice", "al%ice", "алиса"]
GOOD_USERNAMES = ["a", "0", "a" * 64, "a.b-c_d", "9lives", "x-"]


@pytest.mark.parametrize("name", BAD_USERNAMES, ids=[repr(n)[:20] for n in BAD_USERNAMES])
def test_bad_usernames_are_invalid_request(server, name):
    r = server.api("POST", "/users", {"username": name, "display_name": "Bad"})
    assert_problem(r, 400, "invalid-request")


def test_good_usernames_are_accepted(server):
    for name in GOOD_USERNAMES:
        expect(server.api("POST", "/users", {"username": name, "display_name": "Good"}), 201)
        expect(server.api("GET", f"/users/{name}"), 200)


@pytest.mark.parametrize("path", ["/users/Alice", "/users/..%2F..%2Fetc", "/users/%00", "/users/" + "a" * 300,
                                  "/users/al%20ice/methods", "/users/%2e%2e/methods"])
def test_odd_paths(server, path):
    r = server.api("GET", path)
    assert_4xx_problem(r, allowed=(400, 404))


# ----------------------------------------------------------------------------- codes

@pytest.mark.parametrize("code", ["12345", "1234567", "abcdef", "12 345"])
def test_malformed_totp_code_is_invalid_request(server, people, code):
    flow = lk.second_factor_flow(server, people["victor"])
    r = lk.verify(server, flow["flow_id"], {"method": "totp", "code": code})
    assert_problem(r, 400, "invalid-request")


@pytest.mark.parametrize("body", [
    {"method": "totp", "code": 123456},
    {"method": "totp"},
    {"method": "carrier-pigeon", "code": "123456"},
    {"method": "totp", "code": "123456", "extra": True},
    {"code": "123456"},
])
def test_malformed_verify_bodies(server, people, body):
    flow = lk.second_factor_flow(server, people["mia"])
    r = lk.verify(server, flow["flow_id"], body)
    assert_4xx_problem(r, allowed=(400, 422))


def test_unknown_flow_is_flow_not_found(server):
    for fid in (str(uuid.uuid4()), "not-a-flow", "0"):
        r = lk.verify(server, fid, {"method": "totp", "code": "123456"})
        assert_problem(r, 404, "flow-not-found")


def test_bad_totp_enrolment_options(server):
    lk.create_user(server, "opts")
    for opts in ({"digits": 5}, {"digits": 9}, {"algorithm": "MD5"}, {"algorithm": "sha1x"}, {"digits": "six"},
                 {"label": "x" * 10_000}):
        r = server.api("POST", "/users/opts/methods/totp", opts)
        assert_4xx_problem(r, allowed=(400, 413, 422))


def test_bad_tap_requests(server):
    lk.create_user(server, "tapper")
    good = {"lifetime_minutes": 60, "single_use": True, "verification": {"method": "callback", "note": "called back"}}
    for patch in ({"lifetime_minutes": 0}, {"lifetime_minutes": -5}, {"lifetime_minutes": 100_000},
                  {"verification": {"method": "telepathy", "note": "x"}}, {"verification": None},
                  {"lifetime_minutes": "sixty"}):
        body = {**good, **patch}
        r = server.api("POST", "/users/tapper/temporary-access-passes", body)
        assert_4xx_problem(r, allowed=(400, 422))
    body = {k: v for k, v in good.items() if k != "verification"}
    assert_4xx_problem(server.api("POST", "/users/tapper/temporary-access-passes", body), allowed=(400, 422))
    expect(server.api("POST", "/users/tapper/temporary-access-passes", good), 201)


def test_weak_passwords(server):
    lk.create_user(server, "weakling")
    for pw in ("", "short", "x" * 11):
        assert_problem(server.api("PUT", "/users/weakling/password", {"password": pw}), 400, "weak-password")
    assert_4xx_problem(server.api("PUT", "/users/weakling/password", {"password": 123456789012}), allowed=(400, 422))
    assert_problem(server.api("PUT", "/users/nobody-here/password", {"password": "long-enough-pw"}), 404,
                   "not-found")


# ----------------------------------------------------------------------------- authn / authz

@pytest.mark.parametrize("headers", [
    {},
    {"Authorization": "Bearer lk_at_not-a-real-token"},
    {"Authorization": "Bearer"},
    {"Authorization": "Basic YWRtaW46YWRtaW4="},
    {"Authorization": "lk_at_no-scheme"},
])
def test_missing_or_bad_auth_is_401(server, headers):
    for method, path, body in (("GET", "/users/admin", None),
                               ("POST", "/users", {"username": "sneaky", "display_name": "S"}),
                               ("GET", "/audit", None),
                               ("GET", "/session", None)):
        r = server.api(method, path, body, token=None, headers=headers)
        assert_problem(r, 401)
    assert_problem(server.api("GET", "/users/sneaky"), 404, "not-found")


def test_non_admin_session_is_403(server, people):
    bob = people["bob"].extra["session"]
    me = expect(server.api("GET", "/session", token=bob), 200)
    assert me["username"] == "bob"
    for method, path, body in (("GET", "/users/victor", None),
                               ("POST", "/users", {"username": "bobs-friend", "display_name": "F"}),
                               ("PUT", "/users/victor/password", {"password": "a-new-long-password"}),
                               ("POST", "/users/victor/methods/totp", {}),
                               ("POST", "/users/victor/temporary-access-passes",
                                {"lifetime_minutes": 60, "single_use": True,
                                 "verification": {"method": "callback", "note": "x"}}),
                               ("DELETE", "/users/victor/lockout", None),
                               ("GET", "/audit", None),
                               ("GET", "/audit/verify", None)):
        r = server.api(method, path, body, token=bob)
        assert_problem(r, 403, "forbidden")


def test_unknown_route_and_method(server):
    assert_4xx_problem(server.api("GET", "/no-such-endpoint"), allowed=(404,))
    # Without credentials a 401 is as good an answer as 404/405.
    assert_4xx_problem(server.api("DELETE", "/signin", token=None), allowed=(401, 404, 405))
    assert_4xx_problem(server.api("PUT", "/users/admin", {"display_name": "x"}), allowed=(404, 405))


def test_garbage_never_causes_5xx(server, people):
    """A bounded sweep of odd bodies over the write endpoints."""
    bodies = [None, {}, [], "x", 0, {"a": {"b": {"c": [None] * 50}}}, {"username": None},
              {"username": "\u202e" * 10, "display_name": "\ud7ff"}, {"code": "0" * 1000},
              {"method": "totp", "code": "\u0661\u0662\u0663\u0664\u0665\u0666"},  # Arabic-Indic digits
              {"password": "p" * 5000}, {"lifetime_minutes": 10 ** 30}]
    flow = lk.second_factor_flow(server, people["mia"])
    paths = [("POST", "/users"), ("PUT", "/users/mia/password"), ("POST", "/users/mia/methods/totp"),
             ("POST", "/users/mia/methods/totp/" + str(uuid.uuid4()) + "/confirm"),
             ("POST", "/users/mia/temporary-access-passes"), ("POST", "/signin"),
             ("POST", f"/signin/{flow['flow_id']}/verify")]
    for method, path in paths:
        for body in bodies:
            data = json.dumps(body, ensure_ascii=False).encode("utf-8") if body is not None else b""
            token = None if path.startswith("/signin") else lk.ADMIN
            r = server.api(method, path, data=data, headers=JSON, token=token)
            assert r.status_code < 500, f"5xx for body {body!r}: {lk.describe(r)}"
            if r.status_code >= 400:
                assert_problem(r, r.status_code)
    expect(server.api("GET", "/users/mia"), 200)
