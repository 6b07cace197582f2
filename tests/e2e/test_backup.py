"""Backup and restore (issue #17): `latchkey backup` copies the live SQLite
database while the server serves, the API and console write server-side
copies (admin only), and `latchkey restore` puts a copy into an empty data
folder after verifying its audit chain, recording what was lost. PostgreSQL
uses pg_dump/pg_restore as the README says; that procedure runs here too."""
from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import subprocess
import uuid
from pathlib import Path

import pytest

import lk
from lk import assert_problem, expect

NAME_RE = re.compile(r"-audit-(\d+)-([0-9a-f]{16})\.db$")


def _json(cp: subprocess.CompletedProcess, what: str) -> dict:
    assert cp.returncode == 0, f"{what} exited {cp.returncode}\nstdout: {cp.stdout}\nstderr: {cp.stderr}"
    return json.loads(cp.stdout)


def _restore(srv: lk.Server, file: Path, data: Path) -> subprocess.CompletedProcess:
    return srv.cli("restore", str(file), "--data", str(data), "--json")


def test_backup_while_serving_then_restore_records_the_lost_range(make_server, tmp_path):
    srv = make_server("live")
    for name in ("bk.ann", "bk.ben"):
        lk.create_user(srv, name)
    out = tmp_path / "backups"
    out.mkdir()
    # The CLI copies the database the running server is writing.
    cp = srv.cli("backup", "--out", str(out), "--data", str(srv.data_dir))
    assert cp.returncode == 0, cp.stderr
    assert "key file" in cp.stdout and "not in the backup" in cp.stdout, cp.stdout
    files = list(out.glob("*.db"))
    assert len(files) == 1, files
    backup = files[0]
    m = NAME_RE.search(backup.name)
    assert m, f"the audit head is not in the name: {backup.name}"
    head_seq = int(m.group(1))
    assert oct(backup.stat().st_mode & 0o777) == oct(0o600)
    assert not list(out.glob(".*partial")), "no partial file is left behind"
    # The copy's head is the head the server had at that moment; the
    # backup itself is audited after it.
    events = lk.audit_events(srv)
    created = [e for e in events if e["action"] == "backup.created"]
    assert created and created[-1]["details"]["audit_head_seq"] == head_seq
    assert created[-1]["details"]["file"] == backup.name

    # A change after the backup: lost by the restore.
    lk.create_user(srv, "bk.after")

    # Restore needs the key in place first.
    target = tmp_path / "restored" / "data"
    cp = _restore(srv, backup, target)
    assert cp.returncode != 0 and "secret.key" in cp.stderr, cp.stderr
    target.mkdir(parents=True, exist_ok=True)
    shutil.copy2(srv.data_dir / "secret.key", target / "secret.key")
    os.chmod(target / "secret.key", 0o600)
    r = _json(_restore(srv, backup, target), "restore")
    assert r["audit_head_seq"] == head_seq
    assert r["lost_after_seq"] == head_seq
    assert r["event_seq"] == head_seq + 1

    # A second restore into the now-used folder is refused.
    cp = _restore(srv, backup, target)
    assert cp.returncode != 0 and "not empty" in cp.stderr, cp.stderr

    back = make_server("restored", data_dir=target, expect_bootstrap=False)
    expect(back.api("GET", "/users/bk.ann"), 200)
    expect(back.api("GET", "/users/bk.ben"), 200)
    assert_problem(back.api("GET", "/users/bk.after"), 404)
    cp, doc = back.audit_verify_cli()
    assert cp.returncode == 0 and doc and doc["ok"], (cp.stdout, cp.stderr)
    restored = [e for e in lk.audit_events(back) if e["action"] == "restored"]
    assert len(restored) == 1, restored
    d = restored[0]["details"]
    assert restored[0]["seq"] == head_seq + 1
    assert d["lost"]["after_seq"] == head_seq and d["backup"] == backup.name
    assert lk.parse_rfc3339(d["lost"]["from"]) <= lk.parse_rfc3339(d["lost"]["until"])


def test_restore_refuses_a_backup_whose_chain_is_broken(make_server, tmp_path):
    srv = make_server("tamper")
    lk.create_user(srv, "bk.victim")
    out = tmp_path / "b"
    out.mkdir()
    b = _json(srv.cli("backup", "--out", str(out / "nightly.db"), "--data", str(srv.data_dir), "--json"),
              "backup")
    backup = Path(b["file"])
    assert backup.name.startswith("nightly-audit-"), backup.name
    with sqlite3.connect(backup) as db:
        db.execute("UPDATE audit_events SET actor = 'someone-else' WHERE seq = 1")
    target = tmp_path / "t" / "data"
    target.mkdir(parents=True)
    shutil.copy2(srv.data_dir / "secret.key", target / "secret.key")
    cp = _restore(srv, backup, target)
    assert cp.returncode != 0 and "does not verify" in cp.stderr, cp.stderr
    assert not (target / "latchkey.db").exists(), "a refused restore leaves no database behind"


def test_backup_api_writes_server_side_for_admins_only(make_server):
    srv = make_server("api")
    assert_problem(srv.api("POST", "/backups", token=None), 401)
    cp = srv.cli("admin", "api-token", "create", "--name", "mdm-only", "--scope", "mdm",
                 "--data", str(srv.data_dir), "--json")
    mdm = _json(cp, "api-token create")["token"]
    assert_problem(srv.api("POST", "/backups", token=mdm), 403)
    doc = expect(srv.api("POST", "/backups"), 201)
    f = Path(doc["file"])
    assert f.parent == srv.data_dir / "backups" and f.is_file(), doc
    assert NAME_RE.search(f.name) and int(NAME_RE.search(f.name).group(1)) == doc["audit_head_seq"]
    assert "key file" in doc["key_file"]
    with sqlite3.connect(f"file:{f}?mode=ro", uri=True) as db:
        assert db.execute("SELECT seq FROM audit_head").fetchone()[0] == doc["audit_head_seq"]


def test_postgres_pg_dump_procedure(make_server, pg_url, shared_secret_key, tmp_path):
    """The README's PostgreSQL procedure: pg_dump -Fc, pg_restore into an
    empty database, start on it with the same key."""
    if not (shutil.which("pg_dump") and shutil.which("pg_restore")):
        pytest.skip("PostgreSQL backup procedure SKIPPED: pg_dump/pg_restore are not on PATH")
    srv = make_server("pg-live", database_url=pg_url, secret_key=shared_secret_key)
    for name in ("pg.ann", "pg.ben"):
        lk.create_user(srv, name)
    dump = tmp_path / "latchkey.dump"
    cp = subprocess.run(["pg_dump", "--format=custom", "--file", str(dump), pg_url],
                        capture_output=True, text=True, timeout=120)
    assert cp.returncode == 0, cp.stderr
    head_before = lk.audit_events(srv)[-1]["seq"]
    srv.stop()

    base = os.environ["LATCHKEY_TEST_POSTGRES_URL"]
    name = f"lk_e2e_restore_{uuid.uuid4().hex[:10]}"
    subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", base, "-c", f'CREATE DATABASE "{name}"'],
                   check=True, capture_output=True, timeout=60)
    target = lk.with_database(base, name)
    try:
        cp = subprocess.run(["pg_restore", "--no-owner", "--exit-on-error", "--dbname", target, str(dump)],
                            capture_output=True, text=True, timeout=120)
        assert cp.returncode == 0, cp.stderr
        back = make_server("pg-restored", database_url=target, secret_key=shared_secret_key,
                           expect_bootstrap=False)
        expect(back.api("GET", "/users/pg.ann"), 200)
        expect(back.api("GET", "/users/pg.ben"), 200)
        cp, doc = back.audit_verify_cli()
        assert cp.returncode == 0 and doc and doc["ok"] and doc["length"] >= head_before, (cp.stdout, cp.stderr)
        back.stop()
    finally:
        subprocess.run(["psql", "-X", "-q", base, "-c", f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'],
                       capture_output=True, timeout=60)
