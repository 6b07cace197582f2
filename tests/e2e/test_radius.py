"""RADIUS end to end with real clients: FreeRADIUS's `radclient` (when
installed) and pyrad. Password, then Access-Challenge answered with a pyotp
code → Access-Accept. Wrong shared secret and missing Message-Authenticator
get no answer at all (silently discarded, RFC 2865 §3 / RFC 3579 §3.2);
a replayed code gets Access-Reject."""
from __future__ import annotations

import re
import shutil
import subprocess

import pytest
import pyrad.packet
from pyrad.client import Client, Timeout
from pyrad.dictionary import Dictionary

import lk

SECRET = "e2e-radius-shared-secret"
RADIUS_RE = re.compile(r"RADIUS listening on udp://127\.0\.0\.1:(\d+)")
DICTIONARY = """
ATTRIBUTE User-Name 1 string
ATTRIBUTE User-Password 2 string encrypt=1
ATTRIBUTE Reply-Message 18 string
ATTRIBUTE State 24 octets
ATTRIBUTE Calling-Station-Id 31 string
ATTRIBUTE Proxy-State 33 octets
ATTRIBUTE Message-Authenticator 80 octets
"""


class RadiusServer(lk.Server):
    def env(self):
        env = super().env()
        env["LATCHKEY_RADIUS_LISTEN"] = "127.0.0.1:0"
        return env


@pytest.fixture(scope="module")
def radius(tmp_path_factory):
    d = tmp_path_factory.mktemp("radius")
    srv = RadiusServer(d / "data", name="radius", log_dir=d)
    srv.start(expect_bootstrap=True)
    port = int(srv.wait_for_line(RADIUS_RE, 30).group(1))
    doc = lk.expect(srv.api("POST", "/radius/clients", {"name": "vpn", "ip": "127.0.0.1", "secret": SECRET}), 201)
    assert doc["name"] == "vpn" and "secret" not in doc
    (d / "dictionary").write_text(DICTIONARY)
    users = lk.provision(srv, ["ray", "sue", "tom", "uma"])
    yield srv, port, str(d / "dictionary"), users
    srv.stop()


def client(port, dictionary, secret=SECRET, enforce_ma=True) -> Client:
    c = Client(server="127.0.0.1", authport=port, secret=secret.encode(), dict=Dictionary(dictionary),
               enforce_ma=enforce_ma)
    c.timeout, c.retries = 2, 1
    return c


def access_request(c: Client, user: str, password: str, state: bytes | None = None, ma: bool = True):
    # pyrad adds a Message-Authenticator unless told not to.
    req = c.CreateAuthPacket(code=pyrad.packet.AccessRequest, User_Name=user, message_authenticator=ma)
    req["User-Password"] = req.PwCrypt(password)
    if state is not None:
        req["State"] = state
    if ma:
        req.add_message_authenticator()
    assert (80 in req.keys() or req.message_authenticator) == ma
    return req


def test_pyrad_password_then_totp_challenge_accepts_and_replay_rejects(radius):
    srv, port, dictionary, users = radius
    u = users["ray"]
    c = client(port, dictionary)
    reply = c.SendPacket(access_request(c, u.username, u.password))
    assert reply.code == pyrad.packet.AccessChallenge
    assert "authenticator app" in reply["Reply-Message"][0]
    state = reply["State"][0]
    code, _ = u.auth.fresh_code()
    reply = c.SendPacket(access_request(c, u.username, code, state))
    assert reply.code == pyrad.packet.AccessAccept
    # The same code again, in a new challenge: replay.
    reply = c.SendPacket(access_request(c, u.username, u.password))
    assert reply.code == pyrad.packet.AccessChallenge
    reply = c.SendPacket(access_request(c, u.username, code, reply["State"][0]))
    assert reply.code == pyrad.packet.AccessReject
    # Wrong password.
    reply = c.SendPacket(access_request(c, u.username, "wrong password"))
    assert reply.code == pyrad.packet.AccessReject


def test_wrong_secret_and_missing_message_authenticator_get_no_answer(radius):
    srv, port, dictionary, users = radius
    u = users["sue"]
    bad = client(port, dictionary, secret="not-the-shared-secret!")
    with pytest.raises(Timeout):
        bad.SendPacket(access_request(bad, u.username, u.password))
    c = client(port, dictionary)
    with pytest.raises(Timeout):
        c.SendPacket(access_request(c, u.username, u.password, ma=False))
    # The server is still answering correctly formed requests.
    assert c.SendPacket(access_request(c, u.username, u.password)).code == pyrad.packet.AccessChallenge


@pytest.mark.skipif(shutil.which("radclient") is None, reason="radclient (freeradius-utils) not installed")
def test_radclient_password_then_challenge(radius):
    srv, port, _, users = radius
    u = users["tom"]

    def radclient(attrs: str, secret: str = SECRET) -> subprocess.CompletedProcess:
        return subprocess.run(["radclient", "-x", "-r", "1", "-t", "3", f"127.0.0.1:{port}", "auth", secret],
                              input=attrs, capture_output=True, text=True, timeout=20)

    first = radclient(f'User-Name = "{u.username}"\nUser-Password = "{u.password}"\nMessage-Authenticator = 0x00\n')
    assert "Access-Challenge" in first.stdout, first.stdout + first.stderr
    m = re.search(r"State = (0x[0-9a-fA-F]+)", first.stdout)
    assert m, first.stdout
    code, _ = u.auth.fresh_code()
    second = radclient(f'User-Name = "{u.username}"\nUser-Password = "{code}"\nState = {m.group(1)}\n'
                       f'Message-Authenticator = 0x00\n')
    assert "Access-Accept" in second.stdout, second.stdout + second.stderr
    wrong = radclient(f'User-Name = "{u.username}"\nUser-Password = "{u.password}"\nMessage-Authenticator = 0x00\n',
                      secret="not-the-shared-secret!")
    assert "Access-Challenge" not in wrong.stdout and "Access-Accept" not in wrong.stdout
    assert wrong.returncode != 0, "no reply to a request under the wrong secret"
