"""Two server processes on one PostgreSQL database: one-time secrets and lockouts hold across nodes.

Needs LATCHKEY_TEST_POSTGRES_URL (see scripts/postgres.sh); each test gets a fresh database.
"""
from __future__ import annotations

import pytest

import lk
from lk import assert_problem, expect

pytestmark = pytest.mark.postgres


@pytest.fixture
def nodes(make_server, pg_url, shared_secret_key):
    """Node A (first start: creates the admin) and node B on the same database and secret key."""
    a = make_server("A", database_url=pg_url, secret_key=shared_secret_key, expect_bootstrap=True)
    b = make_server("B", database_url=pg_url, secret_key=shared_secret_key, expect_bootstrap=False)
    assert b.bootstrap is None
    assert lk.FIRST_START_LINE not in b.current_lines(), "node B ran the first-start bootstrap again"
    return a, b


def test_nodes_share_users_and_tokens(nodes):
    a, b = nodes
    lk.create_user(a, "shared-user")
    got = expect(b.api("GET", "/users/shared-user", token=a.admin_token), 200)
    assert got["username"] == "shared-user"
    assert_problem(b.api("POST", "/users", {"username": "shared-user", "display_name": "Dup"}), 409, "conflict")


def test_totp_code_replayed_on_the_other_node(nodes):
    a, b = nodes
    alice = lk.provision(a, ["alice"])["alice"]
    done, code = lk.signin_with_totp(a, alice)
    assert done.get("acr") == "mfa"
    flow_b = lk.second_factor_flow(b, alice)
    assert_problem(lk.verify(b, flow_b["flow_id"], {"method": "totp", "code": code}), 401, "code-replayed")


def test_session_from_a_is_valid_on_b(nodes):
    a, b = nodes
    lk.create_user(a, "sue")
    tap = lk.issue_tap(a, "sue")
    done = expect(lk.tap_signin(a, "sue", tap["pass"]), 200)
    sess = expect(b.api("GET", "/session", token=done["session_token"]), 200)
    assert sess.get("username") == "sue", sess
    expect(b.api("DELETE", "/session", token=done["session_token"]), 204)
    assert_problem(a.api("GET", "/session", token=done["session_token"]), 401)


def test_totp_code_raced_on_both_nodes_succeeds_once(nodes):
    a, b = nodes
    carl = lk.provision(a, ["carl"])["carl"]
    code, _ = carl.auth.fresh_code(min_remaining=10)
    fa = lk.second_factor_flow(a, carl)
    fb = lk.second_factor_flow(b, carl)
    ra, rb = lk.race([lambda: lk.verify(a, fa["flow_id"], {"method": "totp", "code": code}),
                    lambda: lk.verify(b, fb["flow_id"], {"method": "totp", "code": code})])
    for r in (ra, rb):
        assert not isinstance(r, Exception), r
    statuses = sorted([ra.status_code, rb.status_code])
    assert statuses == [200, 401], f"one code, two nodes at once: A={lk.describe(ra)} B={lk.describe(rb)}"
    loser = ra if ra.status_code == 401 else rb
    assert_problem(loser, 401, "code-replayed")


def test_recovery_code_used_on_a_is_refused_on_b(nodes):
    a, b = nodes
    rob = lk.provision(a, ["rob"])["rob"]
    codes = lk.generate_recovery_codes(a, "rob")["codes"]
    fa = lk.second_factor_flow(a, rob)
    expect(lk.verify(a, fa["flow_id"], {"method": "recovery_code", "code": codes[0]}), 200)
    fb = lk.second_factor_flow(b, rob)
    assert_problem(lk.verify(b, fb["flow_id"], {"method": "recovery_code", "code": codes[0]}), 401,
                   ("invalid-code", "code-replayed"))
    # Another code of the same set still works on B.
    fb2 = lk.second_factor_flow(b, rob)
    expect(lk.verify(b, fb2["flow_id"], {"method": "recovery_code", "code": codes[1]}), 200)


def test_failures_spread_over_both_nodes_still_lock(nodes):
    a, b = nodes
    lena = lk.provision(a, ["lena"])["lena"]
    for i, node in enumerate([a, b, a, b, a]):
        flow = lk.second_factor_flow(node, lena)
        r = lk.verify(node, flow["flow_id"], {"method": "totp", "code": lena.auth.wrong_code()})
        assert_problem(r, 401, "invalid-code")
    for node in (b, a):
        r = lk.start_signin(node, "lena", lena.password)
        assert_problem(r, 429, "too-many-attempts")
        assert (r.headers.get("Retry-After") or "").strip().isdigit(), lk.describe(r)
    # Clearing on one node clears it for both.
    expect(a.api("DELETE", "/users/lena/lockout"), 204)
    lk.second_factor_flow(b, lena)


def test_tap_single_use_across_nodes(nodes):
    a, b = nodes
    lk.create_user(a, "tim")
    tap = lk.issue_tap(a, "tim", single_use=True)
    done = expect(lk.tap_signin(a, "tim", tap["pass"]), 200)
    assert done.get("acr") == "passwordless_mfa", done
    assert_problem(lk.tap_signin(b, "tim", tap["pass"]), 401)
    assert_problem(lk.tap_signin(a, "tim", tap["pass"]), 401)


def test_tap_raced_on_both_nodes_succeeds_once(nodes):
    a, b = nodes
    lk.create_user(a, "tara")
    for round_ in range(3):
        tap = lk.issue_tap(a, "tara", single_use=True)["pass"]
        sa = expect(lk.start_signin(a, "tara"), 200)
        sb = expect(lk.start_signin(b, "tara"), 200)
        ra, rb = lk.race([
            lambda: lk.verify(a, sa["flow_id"], {"method": "temporary_access_pass", "pass": tap}),
            lambda: lk.verify(b, sb["flow_id"], {"method": "temporary_access_pass", "pass": tap}),
        ])
        for r in (ra, rb):
            assert not isinstance(r, Exception), r
        assert sorted([ra.status_code, rb.status_code]) == [200, 401], \
            f"round {round_}: single-use TAP raced on two nodes: A={lk.describe(ra)} B={lk.describe(rb)}"


def test_bootstrap_pass_works_on_either_node(nodes):
    a, b = nodes
    done = expect(lk.tap_signin(b, "admin", a.bootstrap.password), 200)
    assert done.get("acr") == "passwordless_mfa", done
    assert_problem(lk.tap_signin(a, "admin", a.bootstrap.password), 401)
