"""Push approval with number matching, end to end: a real `latchkey serve` and the real
`latchkey-authenticator` CLI (enroll, SSE listen, signed answers); plus SMS through the
development outbox."""
from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import time
from pathlib import Path

import pytest

import lk
from lk import assert_problem, expect


def authenticator_bin() -> str:
    path = os.environ.get("LATCHKEY_AUTHENTICATOR_BIN") or str(
        Path(lk.latchkey_bin()).with_name("latchkey-authenticator"))
    if not os.access(path, os.X_OK):
        pytest.fail(f"latchkey-authenticator not found at {path}: run `cargo build --workspace --bins`",
                    pytrace=False)
    return path


class Device:
    """The CLI authenticator with its own key file."""

    def __init__(self, key_file: Path):
        self.key_file = key_file

    def run(self, *args: str, timeout: float = 40) -> subprocess.CompletedProcess:
        return subprocess.run([authenticator_bin(), "--key-file", str(self.key_file), *args],
                              stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)

    def listen(self, *args: str) -> subprocess.Popen:
        return subprocess.Popen([authenticator_bin(), "--key-file", str(self.key_file), "listen", "--once",
                                 "--timeout", "30", *args],
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(p: subprocess.Popen) -> str:
    out, err = p.communicate(timeout=40)
    assert p.returncode == 0, f"authenticator exited {p.returncode}\nstdout: {out}\nstderr: {err}"
    return out


def make_user(srv: lk.Server, name: str) -> lk.User:
    lk.create_user(srv, name)
    pw = lk.strong_password()
    lk.set_password(srv, name, pw)
    return lk.User(name, pw)


def enroll(srv: lk.Server, name: str, tmp_path: Path) -> Device:
    doc = expect(srv.api("POST", f"/users/{name}/methods/push/enrollments", {"label": "e2e CLI"}), 201)
    assert doc["enrollment_url"].startswith(srv.url + "/authenticator#enroll=lk_pe_"), doc
    d = Device(tmp_path / f"{name}-device.json")
    cp = d.run("enroll", "--url", doc["enrollment_url"])
    assert cp.returncode == 0, f"enroll failed: {cp.stdout}{cp.stderr}"
    assert f"Enrolled for {name}" in cp.stdout
    mode = stat.S_IMODE(d.key_file.stat().st_mode)
    assert mode == 0o600, f"key file mode {oct(mode)}"
    # The token was single use.
    cp = d.run("--key-file", str(tmp_path / "other.json"), "enroll", "--url", doc["enrollment_url"])
    assert cp.returncode != 0
    kinds = [m["kind"] for m in lk.methods(srv, name)]
    assert "push" in kinds, kinds
    return d


def push_flow(srv: lk.Server, user: lk.User) -> tuple[str, int]:
    flow = lk.second_factor_flow(srv, user)
    assert "push" in flow["allowed_methods"], flow
    doc = expect(srv.api("POST", f"/signin/{flow['flow_id']}/push", {}, token=None), 200)
    assert doc["status"] == "pending" and 10 <= doc["number"] <= 99, doc
    return flow["flow_id"], doc["number"]


def verify_push(srv: lk.Server, flow_id: str):
    return lk.verify(srv, flow_id, {"method": "push"})


def wait_push_status(srv: lk.Server, flow_id: str, want: str, timeout: float = 20) -> dict:
    end = time.time() + timeout
    while True:
        doc = expect(srv.api("GET", f"/signin/{flow_id}/push", token=None), 200)
        if doc["status"] == want or time.time() > end:
            assert doc["status"] == want, doc
            return doc
        time.sleep(0.2)


def test_cli_enrolls_and_approves_with_the_right_number(server, tmp_path):
    u = make_user(server, "pia")
    d = enroll(server, "pia", tmp_path)
    flow_id, number = push_flow(server, u)
    assert_problem(verify_push(server, flow_id), 409, "push-pending")
    out = finish(d.listen("--number", str(number)))
    assert "Sign-in request for pia" in out and "from:" in out and "time:" in out, out
    assert "Answer sent: approved" in out, out
    done = expect(verify_push(server, flow_id), 200)
    assert done["state"] == "complete" and done["acr"] == "mfa", done
    assert "push" in done["methods"] and done["session_token"], done


def test_wrong_number_and_wrong_key_are_refused(server, tmp_path):
    u = make_user(server, "quin")
    d = enroll(server, "quin", tmp_path)
    flow_id, number = push_flow(server, u)
    # A key file whose private key is not the enrolled one: the server refuses the signature.
    forged = tmp_path / "forged.json"
    doc = json.loads(d.key_file.read_text())
    doc["private_key"] = "11" * 32
    forged.write_text(json.dumps(doc))
    out = finish(Device(forged).listen("--number", str(number)))
    assert "Answer refused" in out and "401" in out, out
    assert_problem(verify_push(server, flow_id), 409, "push-pending")
    # The enrolled device typing the wrong number ends the prompt.
    wrong = 10 if number == 99 else number + 1
    out = finish(d.listen("--number", str(wrong)))
    assert "Answer sent: wrong_number" in out, out
    assert_problem(verify_push(server, flow_id), 401, "push-not-approved")


def test_this_wasnt_me_raises_an_alert(server, tmp_path):
    u = make_user(server, "remy")
    d = enroll(server, "remy", tmp_path)
    flow_id, _ = push_flow(server, u)
    out = finish(d.listen("--report"))
    assert "Answer sent: reported" in out, out
    assert_problem(verify_push(server, flow_id), 401, "push-not-approved")
    alerts = expect(server.api("GET", "/alerts"), 200)
    items = alerts if isinstance(alerts, list) else alerts.get("alerts", alerts.get("items", []))
    assert any(a.get("kind") == "push_reported" and a.get("target") == "user:remy" for a in items), alerts


def test_a_burst_of_prompts_is_cut_off(server, tmp_path):
    u = make_user(server, "sid")
    d = enroll(server, "sid", tmp_path)
    for _ in range(3):
        flow_id, number = push_flow(server, u)
        assert "approved" in finish(d.listen("--number", str(number)))
        expect(verify_push(server, flow_id), 200)
    flow = lk.second_factor_flow(server, u)
    r = server.api("POST", f"/signin/{flow['flow_id']}/push", {}, token=None)
    body = assert_problem(r, 429, "too-many-attempts")
    assert body.get("retry_after", 0) > 0, body


def test_late_approval_is_refused(make_server, tmp_path, monkeypatch):
    monkeypatch.setenv("LATCHKEY_PUSH_PROMPT_SECONDS", "10")
    srv = make_server("short")
    u = make_user(srv, "tess")
    d = enroll(srv, "tess", tmp_path)
    flow_id, number = push_flow(srv, u)
    # Read the prompt while it is fresh, answer after it expired.
    pending = d.run("prompts")
    assert pending.returncode == 0 and '"challenge"' in pending.stdout, pending.stdout + pending.stderr
    time.sleep(11)
    assert_problem(verify_push(srv, flow_id), 401, "push-not-approved")
    assert wait_push_status(srv, flow_id, "expired")["status"] == "expired"


def test_sms_through_the_development_outbox(server):
    u = make_user(server, "uli")
    doc = expect(server.api("POST", "/users/uli/methods/phone", {"kind": "sms", "phone": "+44 20 7946 0018"}), 201)
    assert doc["code"]["development_only"] is True and "7946" not in doc["code"]["to"], doc
    outbox = server.data_dir / "outbox-messages.jsonl"

    def last_code() -> str:
        line = outbox.read_text().strip().splitlines()[-1]
        return re.search(r"\b(\d{6,8})\b", json.loads(line)["body"]).group(1)

    expect(server.api("POST", f"/users/uli/methods/phone/{doc['method']['id']}/confirm", {"code": last_code()}), 200)
    flow = lk.second_factor_flow(server, u)
    assert "sms" in flow["allowed_methods"], flow
    sent = expect(server.api("POST", f"/signin/{flow['flow_id']}/phone-code", {"method": "sms"}, token=None), 200)
    assert sent["to"].startswith("+4") and sent["to"].endswith("18"), sent
    code = last_code()
    done = expect(lk.verify(server, flow["flow_id"], {"method": "sms", "code": code}), 200)
    assert done["state"] == "complete" and done["acr"] == "mfa", done
    # Replay on a new sign-in (after its own code was sent) fails.
    flow = lk.second_factor_flow(server, u)
    expect(server.api("POST", f"/signin/{flow['flow_id']}/phone-code", {"method": "sms"}, token=None), 200)
    if last_code() != code:
        assert_problem(lk.verify(server, flow["flow_id"], {"method": "sms", "code": code}), 401, "invalid-code")
    assert "DEVELOPMENT ONLY" in "\n".join(server.lines), server.log_tail()
