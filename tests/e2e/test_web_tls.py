"""`latchkey serve --tls-cert/--tls-key`: https with rustls, Secure cookies on the web UI."""
from __future__ import annotations

import re
import shutil
import subprocess
import threading
from pathlib import Path

import pytest
import requests

import lk

LISTEN_HTTPS_RE = re.compile(r"listening on (https://127\.0\.0\.1:\d+)")


def make_cert(d: Path) -> tuple[Path, Path]:
    if not shutil.which("openssl"):
        pytest.fail("the openssl command is needed to make a test certificate", pytrace=False)
    cert, key = d / "cert.pem", d / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
        check=True, capture_output=True, timeout=60,
    )
    return cert, key


def start(args: list[str], data: Path) -> tuple[subprocess.Popen, list[str], threading.Event]:
    proc = subprocess.Popen([lk.latchkey_bin(), "serve", "--data", str(data), "--listen", "127.0.0.1:0",
                             "--stop-on-stdin-close", *args],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    ready = threading.Event()

    def read():
        for line in proc.stdout:
            lines.append(line)
            if "Sign in at:" in line:  # printed after the listening line, on first start
                ready.set()
        ready.set()

    threading.Thread(target=read, daemon=True).start()
    return proc, lines, ready


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.stdin.close()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_https_serves_the_web_ui_with_secure_cookies(tmp_path):
    cert, key = make_cert(tmp_path)
    proc, lines, ready = start(["--tls-cert", str(cert), "--tls-key", str(key)], tmp_path / "data")
    try:
        assert ready.wait(60), "no 'Sign in at:' line:\n" + "".join(lines)
        m = next((LISTEN_HTTPS_RE.search(l) for l in lines if LISTEN_HTTPS_RE.search(l)), None)
        assert m, "server exited:\n" + "".join(lines)
        base = m.group(1)
        pages = base.replace("://127.0.0.1:", "://localhost:")  # browsers refuse passkeys at an IP address
        assert any(f"Sign in at: {pages}/signin" in l for l in lines), "".join(lines)
        r = requests.get(f"{base}/signin", verify=str(cert), timeout=15)
        assert r.status_code == 200, r.text
        assert r.headers["content-security-policy"].startswith("default-src 'self'")
        csrf = r.headers["set-cookie"]
        assert "lk_csrf=" in csrf and "Secure" in csrf and "HttpOnly" in csrf, csrf
        assert requests.get(f"{base}/healthz", verify=str(cert), timeout=15).json()["status"] == "ok"
        # Plain http to the https port gets no page.
        with pytest.raises(requests.exceptions.RequestException):
            requests.get(base.replace("https://", "http://") + "/signin", timeout=5).raise_for_status()
    finally:
        stop(proc)


def test_a_missing_certificate_fails_fast_and_names_the_file(tmp_path):
    missing = tmp_path / "nope.pem"
    r = subprocess.run([lk.latchkey_bin(), "serve", "--data", str(tmp_path / "d"), "--listen", "127.0.0.1:0",
                        "--tls-cert", str(missing), "--tls-key", str(missing)],
                       capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert r.returncode != 0
    assert str(missing) in r.stderr, r.stderr


def test_tls_flags_come_in_pairs(tmp_path):
    r = subprocess.run([lk.latchkey_bin(), "serve", "--data", str(tmp_path / "d"), "--tls-cert", "x.pem"],
                       capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert r.returncode != 0 and "--tls-key" in r.stderr, r.stderr
