"""``drossel serve`` as a user starts it: one screen saying what listens where, then milter
and web answering, and a clean stop on SIGTERM.  The first operator token never goes to a log:
on a terminal it is shown once, otherwise it is written to a 0600 file whose path is shown."""

from __future__ import annotations

import os
import pty
import re
import select
import socket
import stat
import time
from pathlib import Path

from tests.cli.running import http, serve


def test_serve_starts_milter_and_web_and_hands_over_a_token(tmp_path: Path) -> None:
    served = serve(tmp_path)
    try:
        milter = re.search(r"inet:127\.0\.0\.1:(\d+)", (tmp_path / "drossel.toml").read_text())
        assert milter is not None
        socket.create_connection(("127.0.0.1", int(milter.group(1))), timeout=2).close()
        assert (tmp_path / "drossel.db").exists()  # SQLite default in the working directory
    finally:
        output = served.stop()
    assert served.process.returncode == 0, output
    assert f"http://127.0.0.1:{served.web_port}/" in output
    assert "drs_" not in output  # stdout is not a terminal: the token is not printed
    path = re.search(r"operator login token written to (\S+) \(mode 0600\)", output)
    assert path is not None, output
    token_file = Path(path.group(1))
    assert token_file.parent == tmp_path  # beside the configuration
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    token = token_file.read_text().strip()
    # the token really logs in to the API, and a second start creates no other token
    served = serve(tmp_path)
    try:
        assert http(served.url("/api/v1/me"), token=token)[0] == 200
    finally:
        second = served.stop()
    assert "operator login token" not in second


def test_serve_on_a_terminal_shows_the_token_once(tmp_path: Path) -> None:
    master, slave = pty.openpty()
    try:
        served = serve(tmp_path, stderr=slave)
    finally:
        os.close(slave)
    seen = b""
    try:
        deadline = time.monotonic() + 20
        while b"drossel is running" not in seen or b"stop with" not in seen:
            assert time.monotonic() < deadline, seen
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                try:
                    seen += os.read(master, 65536)
                except OSError:
                    break
    finally:
        served.stop()
        os.close(master)
    text = seen.decode(errors="replace")
    token = re.search(r"operator login token (drs_[A-Za-z0-9_-]+)", text)
    assert token is not None, text
    assert not (tmp_path / "drossel-operator-token").exists()
    assert served.process.returncode == 0
