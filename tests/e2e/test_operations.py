"""Operations against a real `latchkey serve`: a password spray from one source
raises an alert seen in the API, the CLI and the webhook sink; the sign-in log
is queryable; /metrics parses with the reference Prometheus text parser."""
from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
from prometheus_client.parser import text_string_to_metric_families

import lk
from lk import assert_problem, expect

SPRAY_IP = "203.0.113.66"


class _Hook(BaseHTTPRequestHandler):
    received: list = []

    def do_POST(self):  # noqa: N802 (http.server naming)
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        type(self).received.append(json.loads(body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def webhook():
    _Hook.received = []
    httpd = HTTPServer(("127.0.0.1", 0), _Hook)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{httpd.server_port}/hook", _Hook.received
    httpd.shutdown()


def _wait_for(fn, timeout=15.0, what="condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = fn()
        if v:
            return v
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for {what}")


def _metrics(srv) -> dict:
    r = srv.get_raw("/metrics")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain"), r.headers
    families = {f.name: f for f in text_string_to_metric_families(r.text)}
    return families


def _sample(families, family, sample_name, **labels) -> float:
    f = families.get(family)
    if f is None:
        return 0.0
    total = 0.0
    for s in f.samples:
        if s.name == sample_name and all(s.labels.get(k) == v for k, v in labels.items()):
            total += s.value
    return total


def test_spray_from_one_source_is_an_alert_in_api_cli_and_webhook(make_server, monkeypatch, webhook):
    url, received = webhook
    monkeypatch.setenv("LATCHKEY_ALERT_WEBHOOK", url)
    monkeypatch.setenv("LATCHKEY_DETECTION_INTERVAL_SECS", "2")
    srv = make_server("ops")
    assert srv.get_raw("/healthz").status_code == 200
    assert srv.get_raw("/readyz").status_code == 200
    before = _metrics(srv)

    names = [f"spray{i:02d}" for i in range(12)]
    users = lk.provision(srv, names, totp=False)
    # A relying party (its own token scope) relays the end user's address: one source, many users.
    rp = srv.create_api_token("portal", scope="relying_party")
    for n in names:
        r = srv.api("POST", "/signin", {"username": n, "password": "Winter2026!", "context": {"ip": SPRAY_IP}},
                    token=rp)
        assert_problem(r, 401, "invalid-credentials")

    def spray_alert():
        alerts = expect(srv.api("GET", "/operations/alerts?status=open"), 200)
        return [a for a in alerts if a["kind"] == "password_spray" and a["target"] == f"ip:{SPRAY_IP}"]

    alert = _wait_for(spray_alert, what="the password_spray alert")[0]
    assert alert["severity"] == "high"
    assert alert["details"]["users"] >= 10  # raised as soon as the threshold (10 users) is reached

    # The CLI sees the same alert and the sign-in log.
    args = ("--data", str(srv.data_dir), *srv.db_args())
    cp = srv.cli("alerts", "list", "--json", *args)
    assert cp.returncode == 0, cp.stderr
    assert any(a["id"] == alert["id"] and a["kind"] == "password_spray" for a in json.loads(cp.stdout))
    cp = srv.cli("alerts", "list", *args)
    assert cp.returncode == 0 and "password_spray" in cp.stdout and f"ip:{SPRAY_IP}" in cp.stdout, cp.stdout
    cp = srv.cli("signins", "--user", "spray03", "--json", *args)
    assert cp.returncode == 0, cp.stderr
    rows = json.loads(cp.stdout)["signins"]
    assert [(r["result"], r["reason"], r["source_ip"], r["methods_tried"]) for r in rows] == [
        ("failure", "invalid_credentials", SPRAY_IP, ["password"])]
    cp = srv.cli("signins", "--result", "failure", "--limit", "5", *args)
    assert cp.returncode == 0 and "RESULT" in cp.stdout and "more: --cursor" in cp.stderr, cp.stdout + cp.stderr

    # The API: filters and a page cursor.
    page = expect(srv.api("GET", "/signins?result=failure&limit=5"), 200)
    assert len(page["signins"]) == 5 and page["next_cursor"]
    page2 = expect(srv.api("GET", f"/signins?result=failure&limit=5&cursor={page['next_cursor']}"), 200)
    assert {r["id"] for r in page2["signins"]}.isdisjoint({r["id"] for r in page["signins"]})
    assert_problem(srv.api("GET", "/signins?result=maybe"), 400)
    assert_problem(srv.api("GET", "/signins", token=None), 401)

    # The webhook got it, once.
    got = _wait_for(lambda: [a for a in received if a["kind"] == "password_spray"], what="the webhook POST")
    assert got[0]["id"] == alert["id"] and got[0]["target"] == f"ip:{SPRAY_IP}" and got[0]["source"] == "latchkey"

    # Acknowledge through the API; the user's timeline shows their account's history.
    acked = expect(srv.api("POST", f"/alerts/{alert['id']}/acknowledge"), 200)
    assert acked["status"] == "acknowledged"
    timeline = expect(srv.api("GET", "/users/spray00/timeline"), 200)
    assert {"user.create", "password.set"} <= {e["action"] for e in timeline}

    # Metrics, parsed by prometheus_client.
    after = _metrics(srv)
    fails = (_sample(after, "latchkey_signins", "latchkey_signins_total", result="failure", method="password")
             - _sample(before, "latchkey_signins", "latchkey_signins_total", result="failure", method="password"))
    assert fails == 12, fails
    assert _sample(after, "latchkey_http_request_duration_seconds", "latchkey_http_request_duration_seconds_count",
                   route="/api/v1/signin", status="401") >= 12
    assert _sample(after, "latchkey_alerts", "latchkey_alerts", kind="password_spray", severity="high",
                   status="acknowledged") == 1
    assert users  # provisioned with passwords
