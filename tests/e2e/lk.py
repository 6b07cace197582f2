"""Helpers for Latchkey's end-to-end tests.

`Server` runs the real `latchkey` binary (``$LATCHKEY_BIN`` or
``target/debug/latchkey``) on a temporary data directory and talks to its
HTTP API.  The rest are small, strict helpers written against the API
contract: every helper asserts the exact status code it expects and puts the
server's full response in the assertion message when it gets something else.
"""
from __future__ import annotations

import base64
import hashlib
import json
import os
import random
import re
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable
from urllib.parse import urlsplit, urlunsplit

import pyotp
import pytest
import requests

REPO_ROOT = Path(__file__).resolve().parents[2]
PROBLEM_PREFIX = "urn:latchkey:problem:"
HTTP_TIMEOUT = 15          # seconds, every HTTP request
START_TIMEOUT = 60         # seconds to wait for "Latchkey listening on ..."
STOP_GRACE = 8             # seconds to wait for exit after stdin is closed
CLI_TIMEOUT = 60
PERIOD = 30                # TOTP step (the contract's default)

ADMIN = object()           # token=ADMIN (default): use the server's admin API token
NOAUTH = None              # token=None: send no Authorization header

# The contract's line is exactly "Latchkey listening on http://127.0.0.1:PORT"; test_bootstrap checks the
# exact text. To find the URL the harness also accepts a version word ("Latchkey 0.1.0 listening on ..."),
# so one wording slip does not hide every other result.
LISTEN_RE = re.compile(r"Latchkey(?: \S+)? listening on (http://127\.0\.0\.1:(\d+))\s*$")
LISTEN_EXACT = "Latchkey listening on {url}"
FIRST_START_LINE = "First start: created administrator 'admin'."
BOOTSTRAP_RE = re.compile(
    r"^  One-time bootstrap pass \(Temporary Access Pass, expires (?P<expires>[^)]+)\): (?P<pass>\S+)\s*$"
)
SIGNIN_AT_RE = re.compile(r"^  Sign in at: (?P<url>\S+)\s*$")

# Total seconds spent sleeping for a fresh TOTP step (reported at the end of the run).
TOTP_WAIT_SECONDS = [0.0]


# --------------------------------------------------------------------------- binary

def latchkey_bin() -> str:
    path = os.environ.get("LATCHKEY_BIN") or str(REPO_ROOT / "target" / "debug" / "latchkey")
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        pytest.fail(
            f"latchkey binary not found at {path}: run `cargo build --workspace --bins` "
            "or set LATCHKEY_BIN",
            pytrace=False,
        )
    return path


# --------------------------------------------------------------------------- responses

def describe(resp: requests.Response) -> str:
    """One line with everything needed to report a contract failure."""
    req = resp.request
    body = resp.text
    if len(body) > 3000:
        body = body[:3000] + f"...(truncated, {len(resp.text)} chars)"
    sent = ""
    if req is not None and req.body is not None:
        raw = req.body if isinstance(req.body, (bytes, bytearray)) else str(req.body).encode()
        sent = raw[:300].decode("utf-8", "replace") + ("...(truncated)" if len(raw) > 300 else "")
        sent = f" sent={sent!r}"
    hdrs = {k: v for k, v in resp.headers.items() if k.lower() in ("content-type", "retry-after", "www-authenticate", "location")}
    return (f"{req.method if req is not None else '?'} {req.url if req is not None else '?'}{sent} "
            f"-> HTTP {resp.status_code} headers={hdrs} body={body!r}")


def expect(resp: requests.Response, status: int) -> Any:
    """Assert the status code and return the JSON body (None for 204)."""
    assert resp.status_code == status, f"expected HTTP {status}: {describe(resp)}"
    if status == 204:
        assert not resp.content, f"204 with a body: {describe(resp)}"
        return None
    ctype = resp.headers.get("content-type", "")
    assert "json" in ctype, f"expected a JSON body: {describe(resp)}"
    try:
        return resp.json()
    except ValueError:
        pytest.fail(f"body is not JSON: {describe(resp)}")


def _as_tuple(x) -> tuple:
    if x is None:
        return ()
    if isinstance(x, (str, int)):
        return (x,)
    return tuple(x)


def assert_problem(resp: requests.Response, status, slug=None) -> dict:
    """Assert an RFC 9457 problem response: status (int or several), optional slug (str or several)."""
    statuses = _as_tuple(status)
    assert resp.status_code in statuses, (
        f"expected HTTP {'/'.join(map(str, statuses))} problem"
        f"{' ' + '/'.join(_as_tuple(slug)) if slug else ''}: {describe(resp)}"
    )
    ctype = resp.headers.get("content-type", "")
    assert ctype.split(";")[0].strip().lower() == "application/problem+json", (
        f"error without Content-Type application/problem+json: {describe(resp)}"
    )
    try:
        body = resp.json()
    except ValueError:
        pytest.fail(f"problem body is not JSON: {describe(resp)}")
    assert isinstance(body, dict), f"problem body is not an object: {describe(resp)}"
    missing = [k for k in ("type", "title", "status", "detail") if k not in body]
    assert not missing, f"problem body lacks {missing}: {describe(resp)}"
    assert body["status"] == resp.status_code, f"problem.status != HTTP status: {describe(resp)}"
    assert isinstance(body["type"], str) and body["type"].startswith(PROBLEM_PREFIX), (
        f"problem.type does not start with {PROBLEM_PREFIX}: {describe(resp)}"
    )
    if slug:
        wanted = [PROBLEM_PREFIX + s for s in _as_tuple(slug)]
        assert body["type"] in wanted, f"expected problem type {wanted}: {describe(resp)}"
    return body


def problem_slug(resp: requests.Response) -> str | None:
    try:
        t = resp.json().get("type", "")
    except Exception:
        return None
    return t[len(PROBLEM_PREFIX):] if isinstance(t, str) and t.startswith(PROBLEM_PREFIX) else t


def parse_rfc3339(value: str) -> datetime:
    assert isinstance(value, str), f"timestamp is not a string: {value!r}"
    v = value.strip()
    if v.endswith("Z") or v.endswith("z"):
        v = v[:-1] + "+00:00"
    # Python 3.11 handles up to microseconds; trim longer fractions (nanoseconds).
    m = re.match(r"^(.*T\d\d:\d\d:\d\d)(\.\d+)?(.*)$", v)
    assert m, f"not an RFC 3339 timestamp: {value!r}"
    frac = (m.group(2) or "")[:7]
    dt = datetime.fromisoformat(m.group(1) + frac + m.group(3))
    assert dt.tzinfo is not None, f"RFC 3339 timestamp without offset: {value!r}"
    return dt


def now_utc() -> datetime:
    return datetime.now(timezone.utc)


# --------------------------------------------------------------------------- TOTP

class Authenticator:
    """A TOTP app for one secret; never hands out the same time step twice."""

    def __init__(self, secret: str, digits: int = 6, algorithm: str = "SHA1", period: int = PERIOD):
        self.secret = secret
        self.digits = digits
        self.period = period
        self.totp = pyotp.TOTP(secret, digits=digits, digest=getattr(hashlib, algorithm.lower()), interval=period)
        self.last_step: int | None = None

    def code_at_step(self, step: int) -> str:
        return self.totp.generate_otp(step)

    def current_step(self) -> int:
        return int(time.time() // self.period)

    def fresh_code(self, min_remaining: float = 6.0) -> tuple[str, int]:
        """A code for a step later than any this authenticator used before, with at
        least `min_remaining` seconds left in it. Sleeps until such a step starts."""
        while True:
            now = time.time()
            step = int(now // self.period)
            remaining = (step + 1) * self.period - now
            if (self.last_step is None or step > self.last_step) and remaining >= min_remaining:
                self.last_step = step
                return self.code_at_step(step), step
            pause = max(0.05, (step + 1) * self.period + 0.3 - now)
            TOTP_WAIT_SECONDS[0] += pause
            time.sleep(pause)

    def wrong_code(self) -> str:
        """A well-formed code that is valid for no step within +-5 steps of now."""
        step = self.current_step()
        near = {self.code_at_step(s) for s in range(step - 5, step + 6)}
        rng = random.Random()
        while True:
            c = "".join(rng.choice("0123456789") for _ in range(self.digits))
            if c not in near:
                return c


# --------------------------------------------------------------------------- server

@dataclass
class Bootstrap:
    password: str
    expires_at: str
    signin_url: str
    lines: list[str]


_ALL_SERVERS: list["Server"] = []


def servers_touched_since(t: float) -> list["Server"]:
    return [s for s in _ALL_SERVERS if s.is_running() or (s.stopped_at or 0) >= t]


class Server:
    """One `latchkey serve` process (restartable on the same data dir)."""

    def __init__(self, data_dir: Path, name: str = "server", database_url: str | None = None,
                 secret_key: str | None = None, log_dir: Path | None = None):
        self.bin = latchkey_bin()
        self.name = name
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.database_url = database_url
        self.secret_key = secret_key
        self.log_dir = Path(log_dir or self.data_dir.parent)
        self.proc: subprocess.Popen | None = None
        self.url: str | None = None
        self.port: int | None = None
        self.lines: list[str] = []          # stdout of all starts, in order
        self.start_index = 0                # index in self.lines where the current start begins
        self.starts = 0
        self.bootstrap: Bootstrap | None = None
        self.admin_token: str | None = None
        self.stopped_at: float | None = None
        self.exit_codes: list[int | None] = []
        self.exited_on_stdin_close: bool | None = None
        self._cond = threading.Condition()
        self._reader: threading.Thread | None = None
        self._stderr_path: Path | None = None
        self.http = requests.Session()
        _ALL_SERVERS.append(self)

    # -- process -----------------------------------------------------------

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        # Only what this harness decides may reach the server (not a developer's shell settings).
        for k in ("LATCHKEY_SECRET_KEY", "LATCHKEY_DATA", "LATCHKEY_DATABASE_URL", "LATCHKEY_LISTEN",
                  "LATCHKEY_PUBLIC_URL"):
            env.pop(k, None)
        if self.secret_key:
            env["LATCHKEY_SECRET_KEY"] = self.secret_key
        env.setdefault("RUST_BACKTRACE", "1")
        env.setdefault("NO_COLOR", "1")
        return env

    def db_args(self) -> list[str]:
        return ["--database-url", self.database_url] if self.database_url else []

    def is_running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _read_stdout(self, proc: subprocess.Popen, out_path: Path) -> None:
        with open(out_path, "a", encoding="utf-8", errors="replace") as out:
            for raw in iter(proc.stdout.readline, b""):
                line = raw.decode("utf-8", "replace").rstrip("\r\n")
                out.write(line + "\n")
                out.flush()
                with self._cond:
                    self.lines.append(line)
                    self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def current_lines(self) -> list[str]:
        with self._cond:
            return list(self.lines[self.start_index:])

    def wait_for_line(self, pattern: re.Pattern | str, timeout: float) -> re.Match | str:
        """Wait for a stdout line of the current start matching `pattern` (regex or exact text)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for line in self.lines[self.start_index:]:
                    if isinstance(pattern, str):
                        if line == pattern:
                            return line
                    else:
                        m = pattern.search(line)
                        if m:
                            return m
                remaining = deadline - time.monotonic()
                exited = self.proc is None or self.proc.poll() is not None
                if remaining <= 0 or (exited and not (self._reader and self._reader.is_alive())):
                    why = "exited with code %s" % (self.proc.poll() if self.proc else None) if exited else f"timed out after {timeout}s"
                    pytest.fail(
                        f"[{self.name}] waiting for stdout line {getattr(pattern, 'pattern', pattern)!r}: {why}\n"
                        + self.log_tail(),
                        pytrace=False,
                    )
                self._cond.wait(min(remaining, 0.5))

    def start(self, expect_bootstrap: bool | None = None, timeout: float = START_TIMEOUT,
              create_token: bool = True) -> "Server":
        """Start `latchkey serve`; wait for the listening line.
        expect_bootstrap=True: also wait for and parse the bootstrap-pass lines.
        create_token: create an admin API token with the CLI (stored in self.admin_token)."""
        assert not self.is_running(), "already running"
        self.starts += 1
        with self._cond:
            self.start_index = len(self.lines)
        out_path = self.log_dir / f"{self.name}.stdout.log"
        self._stderr_path = self.log_dir / f"{self.name}.stderr.{self.starts}.log"
        cmd = [self.bin, "serve", "--data", str(self.data_dir), "--listen", "127.0.0.1:0",
               *self.db_args(), "--stop-on-stdin-close"]
        with open(out_path, "a") as out:
            out.write(f"===== start #{self.starts}: {' '.join(cmd)}\n")
        stderr_f = open(self._stderr_path, "wb")
        try:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr_f,
                                         env=self.env(), cwd=str(self.data_dir.parent))
        finally:
            stderr_f.close()
        self.stopped_at = None
        self._reader = threading.Thread(target=self._read_stdout, args=(self.proc, out_path), daemon=True)
        self._reader.start()
        m = self.wait_for_line(LISTEN_RE, timeout)
        self.url = m.group(1)
        self.port = int(m.group(2))
        self.http = requests.Session()
        self.bootstrap = None
        if expect_bootstrap:
            self.wait_for_line(SIGNIN_AT_RE, timeout)
            self.bootstrap = self.parse_bootstrap()
            assert self.bootstrap is not None, f"[{self.name}] bootstrap lines not found:\n" + self.log_tail()
        if create_token:
            self.admin_token = self.create_api_token(f"e2e-{self.name}-{self.starts}-{uuid.uuid4().hex[:6]}")
        return self

    def parse_bootstrap(self) -> Bootstrap | None:
        lines = self.current_lines()
        if FIRST_START_LINE not in lines:
            return None
        i = lines.index(FIRST_START_LINE)
        block = lines[i:i + 3]
        m = BOOTSTRAP_RE.match(block[1]) if len(block) > 1 else None
        s = SIGNIN_AT_RE.match(block[2]) if len(block) > 2 else None
        assert m and s, f"[{self.name}] malformed bootstrap block {block!r}"
        return Bootstrap(password=m.group("pass"), expires_at=m.group("expires"), signin_url=s.group("url"), lines=block)

    def stop(self) -> int | None:
        """Close stdin (the server must exit: --stop-on-stdin-close), then terminate/kill as a fallback."""
        proc = self.proc
        if proc is None:
            return None
        if proc.poll() is None:
            try:
                proc.stdin.close()
            except OSError:
                pass
            try:
                proc.wait(timeout=STOP_GRACE)
                self.exited_on_stdin_close = True
            except subprocess.TimeoutExpired:
                self.exited_on_stdin_close = False
                proc.terminate()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=10)
        else:
            try:
                proc.stdin.close()
            except OSError:
                pass
        if self._reader:
            self._reader.join(timeout=5)
        self.exit_codes.append(proc.returncode)
        self.stopped_at = time.time()
        self.http.close()
        return proc.returncode

    def restart(self, **kw) -> "Server":
        self.stop()
        return self.start(**kw)

    # -- diagnostics -------------------------------------------------------

    def log_tail(self, n: int = 120) -> str:
        with self._cond:
            out = self.lines[-n:]
        err = ""
        if self._stderr_path and self._stderr_path.exists():
            err_lines = self._stderr_path.read_text("utf-8", "replace").splitlines()
            err = "\n".join(err_lines[-n:])
        state = "running" if self.is_running() else f"exited ({self.proc.returncode if self.proc else 'never started'})"
        return (f"--- {self.name}: {state}; data dir {self.data_dir}; logs in {self.log_dir}\n"
                f"--- stdout (last {n} lines):\n" + "\n".join(out) +
                f"\n--- stderr {self._stderr_path} (last {n} lines):\n{err}\n")

    # -- CLI -----------------------------------------------------------------

    def cli(self, *args: str, timeout: float = CLI_TIMEOUT) -> subprocess.CompletedProcess:
        return subprocess.run([self.bin, *args], stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              env=self.env(), timeout=timeout, cwd=str(self.data_dir.parent))

    def operator(self, *args: str) -> subprocess.CompletedProcess:
        """Run a CLI command as the local operator against this server's database; it must succeed."""
        cp = self.cli(*args, "--data", str(self.data_dir), *self.db_args())
        assert cp.returncode == 0, (f"[{self.name}] `latchkey {' '.join(args)}` exited {cp.returncode}\n"
                                    f"stdout: {cp.stdout}\nstderr: {cp.stderr}")
        return cp

    def create_api_token(self, name: str, scope: str | None = None) -> str:
        """An API token made with the CLI: admin-scoped, or with `scope` (e.g. relying_party)."""
        scope_args = ("--scope", scope) if scope else ()
        cp = self.cli("admin", "api-token", "create", "--name", name, *scope_args, "--data", str(self.data_dir),
                      *self.db_args(), "--json")
        assert cp.returncode == 0, (f"[{self.name}] `latchkey admin api-token create` exited {cp.returncode}\n"
                                    f"stdout: {cp.stdout}\nstderr: {cp.stderr}")
        try:
            doc = json.loads(cp.stdout)
        except ValueError:
            pytest.fail(f"[{self.name}] api-token create --json printed no JSON: stdout={cp.stdout!r} stderr={cp.stderr!r}")
        assert doc.get("name") == name, f"api-token create: unexpected name in {doc!r}"
        assert doc.get("scopes") == [scope or "admin"], f"api-token create: unexpected scopes in {doc!r}"
        token = doc.get("token")
        assert isinstance(token, str) and token.startswith("lk_at_"), f"api-token create: bad token in {doc!r}"
        return token

    def audit_verify_cli(self) -> tuple[subprocess.CompletedProcess, dict | None]:
        cp = self.cli("audit", "verify", "--data", str(self.data_dir), *self.db_args(), "--json")
        try:
            doc = json.loads(cp.stdout)
        except ValueError:
            doc = None
        return cp, doc

    # -- HTTP ------------------------------------------------------------------

    def api(self, method: str, path: str, json: Any = None, token: Any = ADMIN, *,
            data: bytes | str | None = None, headers: dict | None = None,
            timeout: float = HTTP_TIMEOUT) -> requests.Response:
        """Request {url}/api/v1{path}. token=ADMIN (default) uses the admin API token,
        token=None sends no Authorization header, any other string is sent as a bearer token."""
        assert self.url, "server not started"
        h = dict(headers or {})
        if token is ADMIN:
            assert self.admin_token, "no admin token"
            token = self.admin_token
        if token:
            h.setdefault("Authorization", f"Bearer {token}")
        return self.http.request(method, f"{self.url}/api/v1{path}", json=json, data=data, headers=h,
                                 timeout=timeout)

    def get_raw(self, path: str, **kw) -> requests.Response:
        return self.http.get(f"{self.url}{path}", timeout=HTTP_TIMEOUT, **kw)


# --------------------------------------------------------------------------- domain helpers

def strong_password() -> str:
    return "e2e-Pass-" + uuid.uuid4().hex[:16]


@dataclass
class User:
    username: str
    password: str | None = None
    auth: Authenticator | None = None
    totp_method_id: str | None = None
    extra: dict = field(default_factory=dict)


def create_user(srv: Server, username: str, token=ADMIN, **fields) -> dict:
    body = {"username": username, "display_name": fields.pop("display_name", username.title()), **fields}
    doc = expect(srv.api("POST", "/users", body, token=token), 201)
    assert doc.get("username") == username, f"created user echoes another username: {doc!r}"
    return doc


def set_password(srv: Server, username: str, password: str, token=ADMIN) -> None:
    expect(srv.api("PUT", f"/users/{username}/password", {"password": password}, token=token), 204)


def methods(srv: Server, username: str, token=ADMIN) -> list[dict]:
    doc = expect(srv.api("GET", f"/users/{username}/methods", token=token), 200)
    assert isinstance(doc, list), f"methods is not a list: {doc!r}"
    return doc


def enroll_totp(srv: Server, username: str, token=ADMIN, **opts) -> tuple[dict, Authenticator]:
    doc = expect(srv.api("POST", f"/users/{username}/methods/totp", opts or {}, token=token), 201)
    for k in ("id", "secret", "otpauth_uri", "qr_svg_url"):
        assert k in doc, f"TOTP enrolment response lacks {k!r}: {doc!r}"
    auth = Authenticator(doc["secret"], digits=opts.get("digits", 6), algorithm=opts.get("algorithm", "SHA1"))
    return doc, auth


def confirm_totp(srv: Server, username: str, method_id: str, code: str, token=ADMIN) -> requests.Response:
    return srv.api("POST", f"/users/{username}/methods/totp/{method_id}/confirm", {"code": code}, token=token)


def provision(srv: Server, usernames: Iterable[str], totp: bool = True) -> dict[str, User]:
    """Create users with a password and (optionally) a confirmed TOTP method.
    All confirmations use one TOTP step, so a later sign-in needs at most one wait for everyone."""
    users: dict[str, User] = {}
    pending = []
    for name in usernames:
        create_user(srv, name)
        pw = strong_password()
        set_password(srv, name, pw)
        u = User(name, pw)
        if totp:
            doc, auth = enroll_totp(srv, name, label="e2e phone")
            u.auth, u.totp_method_id = auth, doc["id"]
            pending.append(u)
        users[name] = u
    if pending:
        # One step with plenty of time left for all confirmations.
        code, step = pending[0].auth.fresh_code(min_remaining=max(8.0, 2.0 * len(pending)))
        for u in pending:
            u.auth.last_step = step
            doc = expect(confirm_totp(srv, u.username, u.totp_method_id, u.auth.code_at_step(step)), 200)
            assert doc.get("state") == "active", f"confirmed TOTP method not active: {doc!r}"
    return users


def start_signin(srv: Server, username: str, password: str | None = None, **extra) -> requests.Response:
    body: dict[str, Any] = {"username": username}
    if password is not None:
        body["password"] = password
    body.update(extra)
    return srv.api("POST", "/signin", body, token=None)


def verify(srv: Server, flow_id: str, body: dict) -> requests.Response:
    return srv.api("POST", f"/signin/{flow_id}/verify", body, token=None)


def second_factor_flow(srv: Server, user: User, **extra) -> dict:
    """POST /signin with the correct password; expect second_factor_required."""
    doc = expect(start_signin(srv, user.username, user.password, **extra), 200)
    assert doc.get("state") == "second_factor_required", f"after a correct password: {doc!r}"
    assert doc.get("flow_id"), f"no flow_id: {doc!r}"
    assert not doc.get("session_token"), f"a password alone must not yield a session: {doc!r}"
    return doc


def signin_with_totp(srv: Server, user: User, code: str | None = None) -> tuple[dict, str]:
    """Full password + TOTP sign-in; returns (completed body, code used)."""
    flow = second_factor_flow(srv, user)
    if code is None:
        code, _ = user.auth.fresh_code()
    done = expect(verify(srv, flow["flow_id"], {"method": "totp", "code": code}), 200)
    assert done.get("state") == "complete", f"TOTP verify did not complete: {done!r}"
    return done, code


def issue_tap(srv: Server, username: str, token=ADMIN, lifetime_minutes: int = 60, single_use: bool = True,
              method: str = "in_person_id", note: str = "e2e: checked badge") -> dict:
    body = {"lifetime_minutes": lifetime_minutes, "single_use": single_use,
            "verification": {"method": method, "note": note}}
    doc = expect(srv.api("POST", f"/users/{username}/temporary-access-passes", body, token=token), 201)
    for k in ("id", "pass", "expires_at"):
        assert k in doc, f"TAP response lacks {k!r}: {doc!r}"
    return doc


def tap_signin(srv: Server, username: str, tap: str) -> requests.Response:
    """POST /signin without password, then verify temporary_access_pass. Returns the verify response."""
    start = expect(start_signin(srv, username), 200)
    assert start.get("state") == "started", f"sign-in without password: {start!r}"
    assert "temporary_access_pass" in (start.get("allowed_methods") or []), f"TAP not allowed: {start!r}"
    return verify(srv, start["flow_id"], {"method": "temporary_access_pass", "pass": tap})


def generate_recovery_codes(srv: Server, username: str, token=ADMIN) -> dict:
    doc = expect(srv.api("POST", f"/users/{username}/methods/recovery-codes", None, token=token), 201)
    codes = doc.get("codes")
    assert isinstance(codes, list) and len(codes) == 10, f"expected 10 recovery codes: {doc!r}"
    assert len(set(codes)) == 10 and all(isinstance(c, str) and c for c in codes), f"bad codes: {codes!r}"
    return doc


def audit_events(srv: Server, token=ADMIN, limit: int = 50) -> list[dict]:
    """All audit events, following next_after pagination."""
    events: list[dict] = []
    after = 0
    for _ in range(10_000):
        doc = expect(srv.api("GET", f"/audit?after={after}&limit={limit}", token=token), 200)
        batch = doc.get("events")
        assert isinstance(batch, list), f"audit page without events list: {doc!r}"
        events.extend(batch)
        nxt = doc.get("next_after")
        if not batch or nxt is None or nxt == after:
            break
        after = nxt
    return events


def with_database(url: str, dbname: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + dbname, parts.query, parts.fragment))


def b32_variants(secret: str) -> list[bytes]:
    """Byte patterns under which a base32 TOTP secret could leak into a file."""
    s = secret.strip().replace(" ", "")
    unpadded = s.rstrip("=")
    raw = base64.b32decode(unpadded.upper() + "=" * (-len(unpadded) % 8))
    out = {s.encode(), unpadded.encode(), unpadded.lower().encode(), unpadded.upper().encode(),
           raw, raw.hex().encode(), raw.hex().upper().encode(), base64.b64encode(raw).rstrip(b"=")}
    return sorted(out)


def race(calls):
    """Run the callables at the same moment; return their results in order."""
    barrier = threading.Barrier(len(calls))
    results = [None] * len(calls)

    def run(i, fn):
        barrier.wait(timeout=30)
        try:
            results[i] = fn()
        except Exception as e:  # surfaced by the caller's assertions
            results[i] = e

    threads = [threading.Thread(target=run, args=(i, fn)) for i, fn in enumerate(calls)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    return results
