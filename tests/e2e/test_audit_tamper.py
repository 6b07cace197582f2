"""Audit hash chain tamper detection, and secrets at rest in the SQLite database."""
from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import lk
from lk import expect


def _db_path(srv: lk.Server) -> Path:
    db = srv.data_dir / "latchkey.db"
    assert db.exists(), f"{db} missing; data dir holds {sorted(p.name for p in srv.data_dir.iterdir())}"
    return db


def _some_activity(srv: lk.Server) -> None:
    lk.provision(srv, ["tess"])
    lk.issue_tap(srv, "tess")
    lk.generate_recovery_codes(srv, "tess")


def test_tampered_audit_row_is_detected_by_cli_and_api(make_server):
    srv = make_server("audit")
    _some_activity(srv)
    before = expect(srv.api("GET", "/audit/verify"), 200)
    assert before.get("ok") is True and before.get("first_broken") is None, before
    assert before.get("length", 0) >= 3, before
    srv.stop()

    cp, doc = srv.audit_verify_cli()
    assert cp.returncode == 0, f"audit verify on an intact chain exited {cp.returncode}: {cp.stdout} {cp.stderr}"
    assert doc is not None, f"`audit verify --json` printed no JSON: stdout={cp.stdout!r} stderr={cp.stderr!r}"
    assert doc.get("ok") is True and doc.get("first_broken") is None, doc
    assert doc.get("length") >= before["length"] and doc.get("head_hash"), doc

    con = sqlite3.connect(_db_path(srv))
    try:
        row = con.execute("SELECT details FROM audit_events WHERE seq = 3").fetchone()
        assert row is not None, "no audit_events row with seq 3"
        new = "{}" if row[0] != "{}" else '{"tampered": true}'
        con.execute("UPDATE audit_events SET details = ? WHERE seq = 3", (new,))
        con.commit()
    finally:
        con.close()

    cp, doc = srv.audit_verify_cli()
    assert doc is not None, f"`audit verify --json` printed no JSON: stdout={cp.stdout!r} stderr={cp.stderr!r}"
    assert doc.get("ok") is False, f"tampering not detected by the CLI: {doc}"
    assert (doc.get("first_broken") or {}).get("seq") == 3, f"CLI names the wrong link: {doc}"
    assert (doc.get("first_broken") or {}).get("reason"), f"no reason given: {doc}"
    assert cp.returncode != 0, f"`audit verify` exited 0 on a broken chain: {cp.stdout}"

    # Plain (non-JSON) output also fails.
    plain = srv.cli("audit", "verify", "--data", str(srv.data_dir))
    assert plain.returncode != 0, f"plain `audit verify` exited 0 on a broken chain: {plain.stdout} {plain.stderr}"

    srv.start(expect_bootstrap=False)
    v = expect(srv.api("GET", "/audit/verify"), 200)
    assert v.get("ok") is False and (v.get("first_broken") or {}).get("seq") == 3, f"API after restart: {v}"


def _leaks(srv: lk.Server, needles: dict[str, list[bytes]]) -> list[str]:
    found = []
    files = [p for p in srv.data_dir.rglob("*") if p.is_file() and p.name != "secret.key"]
    assert any(p.name == "latchkey.db" for p in files), f"no latchkey.db among {files}"
    for p in files:
        blob = p.read_bytes()
        for what, variants in needles.items():
            for v in variants:
                if v and v in blob:
                    found.append(f"{what} found in {p.name} as {v[:40]!r}")
    return found


def _code_variants(code: str) -> list[bytes]:
    plain = code.replace("-", "").replace(" ", "")
    return sorted({code.encode(), plain.encode(), plain.lower().encode(), plain.upper().encode()})


def test_secrets_are_not_stored_in_plaintext(make_server):
    srv = make_server("secrets")
    lk.create_user(srv, "sid")
    pw = lk.strong_password()
    lk.set_password(srv, "sid", pw)
    confirmed, auth = lk.enroll_totp(srv, "sid")
    code, _ = auth.fresh_code(min_remaining=3)
    expect(lk.confirm_totp(srv, "sid", confirmed["id"], code), 200)
    pending, _ = lk.enroll_totp(srv, "sid", label="never confirmed")
    rc = lk.generate_recovery_codes(srv, "sid")
    tap = lk.issue_tap(srv, "sid")

    needles: dict[str, list[bytes]] = {
        "confirmed TOTP secret": lk.b32_variants(confirmed["secret"]),
        "pending TOTP secret": lk.b32_variants(pending["secret"]),
        "TAP": [tap["pass"].encode()],
        "bootstrap TAP": [srv.bootstrap.password.encode()],
        "password": [pw.encode()],
    }
    for i, c in enumerate(rc["codes"]):
        needles[f"recovery code #{i}"] = _code_variants(c)

    running = _leaks(srv, needles)       # includes latchkey.db-wal while the server runs
    srv.stop()
    stopped = _leaks(srv, needles)
    assert not running and not stopped, f"plaintext secrets at rest: running={running} stopped={stopped}"


def test_api_token_is_not_stored_in_plaintext(make_server):
    srv = make_server("tokens")
    token = srv.admin_token
    leaks_running = _leaks(srv, {"admin API token": [token.encode(), token.removeprefix("lk_at_").encode()]})
    srv.stop()
    leaks = _leaks(srv, {"admin API token": [token.encode(), token.removeprefix("lk_at_").encode()]})
    assert not leaks_running and not leaks, f"API token stored in plaintext: {leaks_running + leaks}"


def test_audit_events_carry_no_secrets(make_server):
    srv = make_server("auditsecrets")
    lk.create_user(srv, "una")
    pw = lk.strong_password()
    lk.set_password(srv, "una", pw)
    enrol, auth = lk.enroll_totp(srv, "una")
    tap = lk.issue_tap(srv, "una")
    rc = lk.generate_recovery_codes(srv, "una")
    blob = json.dumps(lk.audit_events(srv))
    for what, secret in [("password", pw), ("TOTP secret", enrol["secret"].rstrip("=")), ("TAP", tap["pass"]),
                         ("bootstrap TAP", srv.bootstrap.password), *[("recovery code", c) for c in rc["codes"]]]:
        assert secret not in blob, f"{what} appears in the audit log"
