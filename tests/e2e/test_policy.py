"""Conditional access against a real `latchkey serve`: block, report-only, what-if, analyzer, CLI."""
from __future__ import annotations

import json

import lk
from lk import assert_problem, expect


def _policy(pid, state, grant, **assignments):
    a = {"applications": {"include": ["*"]}}
    a.update(assignments or {"users": {"include": ["*"]}})
    return {"id": pid, "name": pid, "state": state, "assignments": a, "grant": grant}


def test_block_report_only_and_what_if(server):
    users = lk.provision(server, ["cora", "dave"])
    block = _policy("block-cora", "enabled", ["block"], users={"include": ["cora"]})
    # The analyzer refuses a policy that locks cora out, and names her.
    r = server.api("POST", "/policies", {"policy": block})
    doc = assert_problem(r, 409, "policy-lockout")
    assert "cora" in doc["detail"]
    expect(server.api("POST", "/policies", {"policy": block, "force": True}), 201)
    expect(server.api("POST", "/policies",
                      {"policy": _policy("watch-all", "report_only", [{"require_strength": "phishing_resistant"}])}),
           201)

    assert_problem(lk.start_signin(server, "cora", users["cora"].password), 403, "access-blocked")
    done, _ = lk.signin_with_totp(server, users["dave"])  # report-only never blocks
    assert done["acr"] == "mfa"

    d = expect(server.api("POST", "/policies/what-if", {"username": "dave", "application": "mail"}), 200)
    assert d["outcome"] == "allow" and d["applied"] == []
    assert d["report_only"][0]["policy_id"] == "watch-all"
    d = expect(server.api("POST", "/policies/what-if", {"username": "cora"}), 200)
    assert d["outcome"] == "block"


def test_cli_check_what_if_and_export(server, tmp_path):
    lk.provision(server, ["erin"], totp=False)
    proposal = tmp_path / "lockout.json"
    proposal.write_text(json.dumps({"policies": [_policy("all-pr", "enabled", ["require_compliant_device"])]}))
    args = ("--data", str(server.data_dir), *server.db_args())
    cp = server.cli("policy", "check", str(proposal), *args)
    assert cp.returncode == 1, cp.stdout + cp.stderr
    assert "erin" in cp.stdout and "compliant device" in cp.stdout, cp.stdout

    cp = server.cli("policy", "what-if", "--user", "erin", "--app", "mail", "--ip", "192.0.2.1", "--json", *args)
    assert cp.returncode == 0, cp.stderr
    assert json.loads(cp.stdout)["outcome"] in ("allow", "block")

    cp = server.cli("policy", "export", "--format", "yaml", *args)
    assert cp.returncode == 0, cp.stderr
    assert "policies:" in cp.stdout
