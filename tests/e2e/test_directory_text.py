"""Display names, departments and group names are plain, bounded text: no
NUL, no escapes, no text-direction tricks, no 60,000-character names
(security review finding 14)."""
from __future__ import annotations

import uuid

import pytest

import lk

BAD_TEXT = {
    "nul": "Ada\x00Lovelace",
    "newline": "Ada\nLovelace",
    "escape": "Ada \x1b[31mLovelace",
    "right-to-left override": "gro\u202enimda",
    "isolate": "Ada \u2066Lovelace\u2069",
    "right-to-left mark": "Ada\u200f Lovelace",
}


def _name() -> str:
    return f"dt-{uuid.uuid4().hex[:8]}"


@pytest.mark.parametrize("field,value", [
    *(("display_name", v) for v in BAD_TEXT.values()),
    *(("department", v) for v in BAD_TEXT.values()),
    ("display_name", "x" * 201),
    ("display_name", "x" * 60_000),
    ("department", "x" * 101),
    ("groups", ["x" * 101]),
    ("groups", ["ops\u202e"]),
], ids=lambda v: repr(v)[:24])
def test_bad_directory_text_is_refused_on_create_and_update(server, field, value):
    name = _name()
    body = {"username": name, "display_name": "Fine Name", field: value}
    p = lk.assert_problem(server.api("POST", "/users", body), 400, "invalid-request")
    assert {"groups": "group name"}.get(field, field) in p["detail"], p
    lk.create_user(server, name, display_name="Fine Name")
    p = lk.assert_problem(server.api("PATCH", f"/users/{name}", {field: value}), 400, "invalid-request")
    doc = lk.expect(server.api("GET", f"/users/{name}"), 200)
    assert doc["display_name"] == "Fine Name" and not doc.get("department"), doc


def test_plain_text_in_any_script_is_kept(server):
    name = _name()
    lk.create_user(server, name, display_name="  محمد علي  ", department="Forschung & Entwicklung",
                   groups=["vpn-users"])
    doc = lk.expect(server.api("GET", f"/users/{name}"), 200)
    assert doc["display_name"] == "محمد علي"
    doc = lk.expect(server.api("PATCH", f"/users/{name}", {"display_name": "Zoë " + "é" * 196}), 200)
    assert doc["display_name"].endswith("é" * 196)
