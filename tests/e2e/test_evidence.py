"""Evidence reports against a real `latchkey serve`: the CLI in every format
(on the same data directory while the server runs) and the HTTP API."""
from __future__ import annotations

import csv
import io
import json
import shutil
import subprocess
from datetime import datetime, timezone

import lk
from lk import expect


def _seed(srv: lk.Server) -> None:
    # erin and finn with TOTP; gail (Finance) with none, signing in with a
    # pass; hank (helpdesk) privileged without any method.
    users = lk.provision(srv, ["erin", "finn"])
    lk.create_user(srv, "gail", department="Finance")
    lk.create_user(srv, "hank", roles=["helpdesk"])
    tap = lk.issue_tap(srv, "gail")["pass"]
    done = expect(lk.tap_signin(srv, "gail", tap), 200)
    assert done.get("state") == "complete", done
    # A refused attempt: wrong password.
    lk.start_signin(srv, "erin", users["erin"].password + "x")


def _report(srv: lk.Server, fmt: str, tmp_path) -> bytes:
    today = datetime.now(timezone.utc).strftime("%Y-%m-%d")
    out = tmp_path / f"evidence.{fmt}"
    cp = srv.cli("report", "evidence", "--from", today, "--to", today, "--format", fmt, "--out", str(out),
                 "--data", str(srv.data_dir), *srv.db_args())
    assert cp.returncode == 0, f"report evidence --format {fmt} exited {cp.returncode}: {cp.stdout} {cp.stderr}"
    assert "MFA coverage 40.0% of 5 users" in cp.stderr, cp.stderr
    return out.read_bytes()


def test_cli_and_api_report_the_same_figures_in_every_format(make_server, tmp_path):
    srv = make_server("evidence")
    _seed(srv)

    doc = json.loads(_report(srv, "json", tmp_path))
    s = doc["summary"]
    # The bootstrap administrator, erin, finn, gail and hank; erin and finn have TOTP.
    assert (s["users"], s["users_with_mfa"], s["mfa_coverage_pct"]) == (5, 2, 40.0), s
    # Privileged: the bootstrap admin and hank (helpdesk); neither has a security key.
    assert (s["privileged_users"], s["privileged_phishing_resistant"]) == (2, 0), s
    assert s["signins_completed"] == 1, s
    assert doc["enforcement"]["by_acr"] == [{"name": "passwordless_mfa", "count": 1, "pct": 100.0}], doc["enforcement"]
    assert doc["enforcement"]["failed"] == 1, doc["enforcement"]
    assert {"scope": "Finance", "users": 1, "with_mfa": 0, "phishing_resistant": 0, "pct": 0.0} in doc["coverage"]
    assert s["audit_chain_ok"] is True and len(s["audit_head_hash"]) == 64

    rows = list(csv.reader(io.StringIO(_report(srv, "csv", tmp_path).decode())))
    start = rows.index(["# summary"])
    summary = {r[0]: r[1] for r in rows[start + 2:] if len(r) == 2}
    assert summary["mfa_coverage_pct"] == "40.0" and summary["users"] == "5", summary

    html = _report(srv, "html", tmp_path).decode()
    assert "40.0%" in html and "2 of 5 active users" in html and "<svg" in html and "<script" not in html

    pdf = _report(srv, "pdf", tmp_path)
    assert pdf.startswith(b"%PDF-")
    assert b"2 of 5 active users" in pdf and b"page 1 of " in pdf
    if shutil.which("pdftotext"):
        text = subprocess.run(["pdftotext", "-layout", str(tmp_path / "evidence.pdf"), "-"],
                              capture_output=True, text=True, check=True).stdout
        assert "MFA evidence report" in text and "40.0%" in text, text[:2000]

    # The API gives the same figures, and refuses bad input with a problem document.
    today = datetime.now(timezone.utc).strftime("%Y-%m-%d")
    api = expect(srv.api("GET", f"/reports/evidence?from={today}&to={today}"), 200)
    assert api["summary"]["mfa_coverage_pct"] == 40.0 and api["summary"]["users"] == 5
    r = srv.api("GET", f"/reports/evidence?from={today}&to={today}&format=pdf")
    assert r.status_code == 200 and r.headers["content-type"] == "application/pdf" and r.content.startswith(b"%PDF-")
    lk.assert_problem(srv.api("GET", f"/reports/evidence?from={today}&to=2000-01-01"), 400)
    lk.assert_problem(srv.api("GET", f"/reports/evidence?from={today}&to={today}&format=docx"), 400)
    lk.assert_problem(srv.api("GET", f"/reports/evidence?from={today}&to={today}", token=None), 401)

    # The CLI refuses bad input too, without writing anything.
    cp = srv.cli("report", "evidence", "--from", today, "--to", today, "--format", "docx",
                 "--out", str(tmp_path / "x"), "--data", str(srv.data_dir), *srv.db_args())
    assert cp.returncode != 0 and "docx" in cp.stderr and not (tmp_path / "x").exists()
