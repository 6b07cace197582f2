"""Who may speak for the end user's address, and smart lock-out, against the real
binary (issue "Hold against insiders and outages", findings 10 and 11).

Every request here comes from 127.0.0.1; a relying party (a token with the
`relying_party` scope, made with the CLI) relays other addresses."""
from __future__ import annotations

import lk
from lk import assert_problem, expect

SOURCE_THRESHOLD = 20  # the per-source lock's default


def test_an_mdm_token_does_not_set_the_signin_source(server):
    mdm = server.create_api_token("intune-e2e", scope="mdm")
    rp = server.create_api_token("portal-e2e", scope="relying_party")
    # A spray from this host through the mdm token, naming a new address each time.
    for i in range(SOURCE_THRESHOLD):
        r = server.api("POST", "/signin", {"username": f"mdmspray{i}", "password": "Winter2026!",
                                            "context": {"ip": f"198.51.100.{i}"}}, token=mdm)
        assert_problem(r, 401, "invalid-credentials")
    r = server.api("POST", "/signin", {"username": "mdmspray99", "password": "Winter2026!",
                                        "context": {"ip": "198.51.100.99"}}, token=mdm)
    assert_problem(r, 429, "too-many-attempts")
    rows = expect(server.api("GET", "/signins?user=mdmspray0"), 200)["signins"]
    assert [row["source_ip"] for row in rows] == ["127.0.0.1"], rows

    # The relying party's word counts: its end user's address is the source.
    r = server.api("POST", "/signin", {"username": "rpuser0", "password": "Winter2026!",
                                        "context": {"ip": "192.0.2.10"}}, token=rp)
    assert_problem(r, 401, "invalid-credentials")
    rows = expect(server.api("GET", "/signins?user=rpuser0"), 200)["signins"]
    assert [row["source_ip"] for row in rows] == ["192.0.2.10"], rows


def test_unfamiliar_failures_do_not_lock_out_a_familiar_source(server):
    rp = server.create_api_token("portal-lock-e2e", scope="relying_party")
    user = lk.provision(server, ["smartlock"])["smartlock"]
    office, attacker, elsewhere = "10.1.1.1", "198.51.100.200", "192.0.2.200"

    def start(ip: str, password: str):
        return server.api("POST", "/signin", {"username": user.username, "password": password,
                                              "context": {"ip": ip}}, token=rp)

    # A successful sign-in from the office makes it familiar.
    flow = expect(start(office, user.password), 200)
    code, _ = user.auth.fresh_code()
    done = expect(server.api("POST", f"/signin/{flow['flow_id']}/verify",
                             {"method": "totp", "code": code, "context": {"ip": office}}, token=rp), 200)
    assert done["state"] == "complete", done

    for _ in range(5):
        assert_problem(start(attacker, "not-the-password"), 401, "invalid-credentials")
    # Guessing stays stopped from anywhere unfamiliar, the right password included ...
    assert_problem(start(attacker, user.password), 429, "too-many-attempts")
    assert_problem(start(elsewhere, user.password), 429, "too-many-attempts")
    # ... and the user signs in from the office.
    doc = expect(start(office, user.password), 200)
    assert doc["state"] == "second_factor_required", doc
