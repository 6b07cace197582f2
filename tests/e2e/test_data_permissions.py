"""The data folder is private to the server's user, whatever the umask
(security review finding 13; docs/threat-model-outage.md)."""
from __future__ import annotations

import functools
import os
import stat
import subprocess

import lk


def _mode(p) -> int:
    return stat.S_IMODE(os.stat(p).st_mode)


def test_data_folder_is_private_under_umask_022_and_an_open_key_file_is_refused(make_server, monkeypatch):
    srv = make_server("perm", start=False)
    with monkeypatch.context() as m:
        m.setattr(subprocess, "Popen", functools.partial(subprocess.Popen, preexec_fn=lambda: os.umask(0o022)))
        srv.start(expect_bootstrap=True, create_token=False)
    lk.expect(srv.get_raw("/healthz"), 200)
    d = srv.data_dir
    assert _mode(d) == 0o700, oct(_mode(d))
    for f in ("latchkey.db", "latchkey.db-wal", "latchkey.db-shm", "secret.key"):
        assert _mode(d / f) == 0o600, (f, oct(_mode(d / f)))
    assert srv.stop() == 0

    key = d / "secret.key"
    os.chmod(key, 0o644)
    cp = subprocess.run([lk.latchkey_bin(), "serve", "--data", str(d), "--listen", "127.0.0.1:0"],
                        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60, env=srv.env())
    assert cp.returncode != 0, cp.stdout
    assert str(key) in cp.stderr and f"chmod 600 {key}" in cp.stderr, cp.stderr
    assert "listening" not in cp.stdout
