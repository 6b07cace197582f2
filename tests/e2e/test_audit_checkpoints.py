"""Security review item 7 through the CLI: signed checkpoints of the audit
chain's head, kept outside the data folder, reveal a chain that was truncated
(tail deleted, head moved back) even though the chain alone still verifies."""
from __future__ import annotations

import json
import sqlite3
import time

import lk
from lk import expect


def _verify(srv: lk.Server, *extra: str):
    cp = srv.cli("audit", "verify", "--data", str(srv.data_dir), *srv.db_args(), *extra)
    doc = None
    if "--json" in extra:
        try:
            doc = json.loads(cp.stdout)
        except ValueError:
            doc = None
    return cp, doc


def test_checkpoints_reveal_a_truncated_chain(make_server, tmp_path, monkeypatch):
    outside = tmp_path / "anchor"
    outside.mkdir()
    served = outside / "served.jsonl"
    # `serve` appends a checkpoint every second while the head moves.
    monkeypatch.setenv("LATCHKEY_AUDIT_CHECKPOINT_FILE", str(served))
    monkeypatch.setenv("LATCHKEY_AUDIT_CHECKPOINT_INTERVAL", "1")
    srv = make_server("ckpt")
    lk.provision(srv, ["tara", "uli"])
    head = expect(srv.api("GET", "/audit/verify"), 200)["length"]
    deadline = time.time() + 15
    while time.time() < deadline:
        lines = served.read_text().splitlines() if served.exists() else []
        if lines and json.loads(lines[-1])["seq"] >= head:
            break
        time.sleep(0.2)
    else:
        raise AssertionError(f"serve wrote no checkpoint of seq {head}: {served.read_text() if served.exists() else 'no file'}")
    srv.stop()

    # A file inside the data folder is refused: it would fall with the database.
    inside = srv.cli("audit", "checkpoint", "--file", str(srv.data_dir / "cp.jsonl"),
                     "--data", str(srv.data_dir), *srv.db_args())
    assert inside.returncode != 0 and "inside the data folder" in inside.stderr, inside

    manual = outside / "manual.jsonl"
    cp = srv.cli("audit", "checkpoint", "--file", str(manual), "--data", str(srv.data_dir), *srv.db_args())
    assert cp.returncode == 0, f"{cp.stdout} {cp.stderr}"
    for f in (served, manual):
        cp, doc = _verify(srv, "--checkpoints", str(f), "--json")
        assert cp.returncode == 0 and doc and doc["intact"] is True and doc["chain"]["ok"] is True, (cp.stdout, cp.stderr)
        assert doc["chain"]["keyed_from"] == 1 and doc["chain"]["unkeyed"] == 0, doc

    # Delete the tail and move the head back to what is left.
    con = sqlite3.connect(srv.data_dir / "latchkey.db")
    try:
        con.execute("DELETE FROM audit_events WHERE seq > 4")
        con.execute("UPDATE audit_head SET seq = 4, hash = (SELECT hash FROM audit_events WHERE seq = 4) WHERE id = 1")
        con.commit()
    finally:
        con.close()

    cp, doc = _verify(srv, "--json")
    assert cp.returncode == 0 and doc and doc["ok"] is True, "the chain alone cannot see the truncation"
    cp, doc = _verify(srv, "--checkpoints", str(manual), "--json")
    assert cp.returncode == 2, f"a truncated chain must exit 2, not {cp.returncode}: {cp.stdout}"
    assert doc["intact"] is False and doc["findings"][0]["status"] == "truncated", doc
    assert doc["findings"][0]["chain_length"] == 4, doc
    plain, _ = _verify(srv, "--checkpoints", str(manual))
    assert plain.returncode == 2 and "REWRITTEN or TRUNCATED" in plain.stdout, plain.stdout
    assert "CHECKPOINT MISMATCH" in plain.stdout, plain.stdout
