"""Latchkey's own outbound clients speak https: the SMS webhook adapter reaching a
provider, and the `latchkey-authenticator` CLI reaching a Latchkey served over TLS.
Both trust the system's CA store (here: SSL_CERT_FILE names a test CA), as real
deployments with public or corporate CAs do."""
from __future__ import annotations

import json
import re
import ssl
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import requests

import lk
from test_push import authenticator_bin
from test_web_tls import LISTEN_HTTPS_RE, start, stop


def make_ca_and_cert(d):
    """A test CA and a server certificate it signed (for 127.0.0.1). TLS clients such as
    rustls refuse a self-signed CA certificate presented as the server's own."""
    def run(*args):
        subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)

    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    ca, ca_key = d / "ca.pem", d / "ca-key.pem"
    cert, key, csr, ext = d / "cert.pem", d / "key.pem", d / "cert.csr", d / "ext.cnf"
    run("req", "-x509", *ec, "-keyout", str(ca_key), "-out", str(ca), "-days", "1", "-subj", "/CN=Latchkey test CA")
    run("req", *ec, "-keyout", str(key), "-out", str(csr), "-subj", "/CN=localhost")
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n")
    run("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key), "-CAcreateserial",
        "-out", str(cert), "-days", "1", "-extfile", str(ext))
    return ca, cert, key


def https_receiver(cert, key):
    received: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            received.append({"path": self.path, "body": body.decode()})
            self.send_response(200)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(cert), str(key))
    httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd, received


def test_sms_webhook_and_cli_authenticator_over_https(tmp_path, monkeypatch):
    ca, cert, key = make_ca_and_cert(tmp_path)
    httpd, received = https_receiver(cert, key)
    monkeypatch.setenv("SSL_CERT_FILE", str(ca))
    monkeypatch.setenv("LATCHKEY_SMS_GATEWAY", "webhook")
    monkeypatch.setenv("LATCHKEY_SMS_WEBHOOK_URL", f"https://127.0.0.1:{httpd.server_address[1]}/sms")
    data = tmp_path / "data"
    proc, lines, ready = start(["--tls-cert", str(cert), "--tls-key", str(key)], data)
    try:
        assert ready.wait(60), "no 'Sign in at:' line:\n" + "".join(lines)
        m = next((LISTEN_HTTPS_RE.search(l) for l in lines if LISTEN_HTTPS_RE.search(l)), None)
        assert m, "server exited:\n" + "".join(lines)
        base = m.group(1)
        token = json.loads(subprocess.run(
            [lk.latchkey_bin(), "admin", "api-token", "create", "--name", "https-e2e", "--json", "--data", str(data)],
            capture_output=True, text=True, timeout=60, check=True, stdin=subprocess.DEVNULL).stdout)["token"]
        s = requests.Session()
        s.headers["authorization"] = f"Bearer {token}"

        def api(method, path, body=None):
            # verify per request: a REQUESTS_CA_BUNDLE in the environment would beat the session's.
            return s.request(method, f"{base}/api/v1{path}", json=body, timeout=30, verify=str(ca))

        r = api("POST", "/users", {"username": "tess", "display_name": "Tess"})
        assert r.status_code == 201, r.text
        # Registering a phone sends its code through the https webhook.
        r = api("POST", "/users/tess/methods/phone", {"kind": "sms", "phone": "+44 20 7946 0018"})
        assert r.status_code == 201, r.text + "\n" + "".join(lines[-5:])
        assert len(received) == 1 and received[0]["path"] == "/sms", received
        sent = json.loads(received[0]["body"])
        assert sent["to"] == "+442079460018", sent
        code = re.search(r"\b(\d{6,8})\b", sent["message"] if "message" in sent else json.dumps(sent)).group(1)
        method_id = r.json()["method"]["id"]
        r = api("POST", f"/users/tess/methods/phone/{method_id}/confirm", {"code": code})
        assert r.status_code == 200, r.text

        # The CLI authenticator enrolls against the https server.
        r = api("POST", "/users/tess/methods/push/enrollments", {"label": "https CLI"})
        assert r.status_code == 201, r.text
        url = r.json()["enrollment_url"]
        assert url.startswith(base + "/authenticator#enroll="), url
        cp = subprocess.run([authenticator_bin(), "--key-file", str(tmp_path / "device.json"), "enroll", "--url", url],
                            capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
        assert cp.returncode == 0, f"stdout: {cp.stdout}\nstderr: {cp.stderr}"
        methods = api("GET", "/users/tess/methods").json()
        assert {m["kind"] for m in methods} >= {"sms", "push"}, methods
    finally:
        stop(proc)
        httpd.shutdown()
