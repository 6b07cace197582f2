"""Outages one client can cause by holding sockets: the server must stay up
for everybody else (docs/threat-model-outage.md)."""
from __future__ import annotations

import functools
import http.client
import json
import resource
import socket
import subprocess
import time
from pathlib import Path

import pytest

# The server's hard open-files limit in these tests; the client opens more
# sockets than that from one address.
SERVER_NOFILE = 512
ANSWER_WITHIN = 1.0  # seconds


def _start_with_nofile(srv, monkeypatch, nofile: int, **start):
    """Start `srv` with its soft AND hard open-files limits set to `nofile`."""
    def lower():
        resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

    with monkeypatch.context() as m:
        m.setattr(subprocess, "Popen", functools.partial(subprocess.Popen, preexec_fn=lower))
        srv.start(**start)
    limits = Path(f"/proc/{srv.proc.pid}/limits").read_text()
    line = next(l for l in limits.splitlines() if l.startswith("Max open files"))
    assert line.split()[3:5] == [str(nofile), str(nofile)], line


def _raise_own_nofile(need: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < need:
        pytest.skip(f"this test needs {need} open files; the hard limit here is {hard}")
    if soft != resource.RLIM_INFINITY and soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))


def _request(port: int, method: str, path: str, body: dict | None = None,
             source: str = "127.0.0.2") -> tuple[int, bytes, float]:
    """One request from `source` (another loopback address); (status, body, seconds)."""
    t0 = time.monotonic()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=ANSWER_WITHIN,
                                      source_address=(source, 0))
    try:
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"} if data else {}
        conn.request(method, path, body=data, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read(), time.monotonic() - t0
    finally:
        conn.close()


def _closed_by_peer(s: socket.socket) -> bool:
    s.setblocking(False)
    try:
        return s.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except (BlockingIOError, TimeoutError):
        return False
    except ConnectionResetError:
        return True


def test_idle_sockets_cannot_take_the_server_offline(make_server, monkeypatch):
    attackers = SERVER_NOFILE + 200
    _raise_own_nofile(attackers + 256)
    srv = make_server("idle", start=False)
    _start_with_nofile(srv, monkeypatch, SERVER_NOFILE, expect_bootstrap=True, create_token=False)

    held: list[socket.socket] = []
    try:
        # More idle sockets than the server has descriptors, all from 127.0.0.1.
        for _ in range(attackers):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            s.settimeout(5)
            s.connect(("127.0.0.1", srv.port))
            held.append(s)

        # Everybody else still gets answers, promptly.
        status, body, took = _request(srv.port, "GET", "/healthz")
        assert status == 200 and took < ANSWER_WITHIN, (status, body, took)
        status, body, took = _request(srv.port, "POST", "/api/v1/signin", {"username": "someone"})
        assert 200 <= status < 500 and took < ANSWER_WITHIN, (status, body, took)

        # The flood was capped per address, not merely outlasted: the server
        # closed the sockets past its per-address cap at once.
        time.sleep(0.2)
        still_open = sum(not _closed_by_peer(s) for s in held)
        assert 0 < still_open <= 256, f"{still_open} of {attackers} idle sockets still open"
        assert srv.is_running()

        # Stopping still works with idle connections open.
        t0 = time.monotonic()
        assert srv.stop() == 0
        assert srv.exited_on_stdin_close and time.monotonic() - t0 < 5
    finally:
        for s in held:
            s.close()


def test_silent_connections_are_closed_after_the_header_read_timeout(make_server, monkeypatch):
    monkeypatch.setenv("LATCHKEY_HEADER_READ_TIMEOUT_SECS", "1")
    srv = make_server("silent", start=False)
    srv.start(expect_bootstrap=True, create_token=False)
    with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as silent, \
            socket.create_connection(("127.0.0.1", srv.port), timeout=5) as slow:
        # Trickling a request head does not keep a connection either.
        slow.sendall(b"GET /healthz HTTP/1.1\r\n")
        t0 = time.monotonic()
        assert silent.recv(1) == b"", "the server closes a connection that sends nothing"
        took = time.monotonic() - t0
        assert 0.5 < took < 3, took
        deadline = time.monotonic() + 3
        while not _closed_by_peer(slow):
            assert time.monotonic() < deadline, "a half-sent request head kept its connection"
            try:
                slow.sendall(b"X")
            except (BrokenPipeError, ConnectionResetError):
                break
            time.sleep(0.2)
    status, _, _ = _request(srv.port, "GET", "/healthz", source="127.0.0.1")
    assert status == 200
