"""There is no way to switch MFA off for a user: not in the documented API,
not in the CLI. Recovery goes through Temporary Access Passes instead."""
from __future__ import annotations

import re
import subprocess

import lk

FORBIDDEN = re.compile(r"disable[-_ ]?(mfa|2fa|second|factor|method)|bypass|skip[-_ ]?mfa|mfa[-_ ]?(off|exempt)|"
                       r"without[-_ ]?mfa|password[-_ ]?only", re.I)


def test_documented_api_has_no_operation_that_disables_mfa(server):
    doc = lk.expect(server.get_raw("/openapi.json"), 200)
    seen = 0
    for path, ops in doc["paths"].items():
        assert not FORBIDDEN.search(path), path
        for method, op in ops.items():
            seen += 1
            text = " ".join(str(op.get(k, "")) for k in ("operationId", "summary", "description"))
            assert not FORBIDDEN.search(text), f"{method.upper()} {path}: {text}"
    assert seen > 20, "the OpenAPI document should describe the whole API"
    # The schemas have no such switch either (e.g. a `mfa_enabled` field).
    for name, schema in doc.get("components", {}).get("schemas", {}).items():
        for prop in (schema.get("properties") or {}):
            assert not re.search(r"mfa_(enabled|disabled|required)|bypass", prop, re.I), f"{name}.{prop}"


def _help_tree(binary: str, args: list[str], out: dict, depth: int = 0) -> None:
    cp = subprocess.run([binary, *args, "--help"], capture_output=True, text=True, timeout=30)
    assert cp.returncode == 0, cp.stderr
    out[" ".join(args)] = cp.stdout
    if depth > 4:
        return
    section = cp.stdout.split("Commands:", 1)
    if len(section) < 2:
        return
    for line in section[1].split("Options:", 1)[0].splitlines():
        m = re.match(r"^\s{2}([a-z][a-z0-9-]*)\s", line)
        if m and m.group(1) != "help":
            _help_tree(binary, [*args, m.group(1)], out, depth + 1)


def test_cli_has_no_command_or_flag_that_disables_mfa():
    tree: dict[str, str] = {}
    _help_tree(lk.latchkey_bin(), [], tree)
    assert any(k.startswith("helpdesk case") for k in tree), sorted(tree)
    for cmd, text in tree.items():
        assert not FORBIDDEN.search(text), f"`latchkey {cmd} --help` mentions: {FORBIDDEN.search(text).group(0)}"
