"""``drossel serve`` as a user starts it: one screen saying what listens where, then milter
and web answering, and a clean stop on SIGTERM."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_serve_starts_milter_and_web_and_prints_a_token(tmp_path: Path) -> None:
    milter_port, web_port = free_port(), free_port()
    config = tmp_path / "drossel.toml"
    config.write_text(
        f'[milter]\nlisten = "inet:127.0.0.1:{milter_port}"\n'
        f'[web]\nlisten = "127.0.0.1:{web_port}"\n'
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("DROSSEL_")}
    env["COLUMNS"] = "200"
    process = subprocess.Popen(
        [sys.executable, "-m", "drossel.cli.main", "serve", "--config", str(config)],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
    )
    try:
        deadline = time.monotonic() + 30
        health = None
        while time.monotonic() < deadline and health is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{web_port}/healthz", timeout=1) as r:
                    health = r.status
            except OSError:
                time.sleep(0.2)
        assert health == 200
        socket.create_connection(("127.0.0.1", milter_port), timeout=2).close()
        assert (tmp_path / "drossel.db").exists()  # SQLite default in the working directory
    finally:
        process.send_signal(signal.SIGTERM)
        output = process.communicate(timeout=30)[0].decode()
    assert process.returncode == 0, output
    assert f"inet:127.0.0.1:{milter_port}" in output
    assert f"http://127.0.0.1:{web_port}/" in output
    token = re.search(r"operator login token (drs_\S+)", output)
    assert token is not None
    # the printed token really logs in to the API
    process = subprocess.Popen(
        [sys.executable, "-m", "drossel.cli.main", "serve", "--config", str(config)],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
    )
    try:
        deadline = time.monotonic() + 30
        status = None
        while time.monotonic() < deadline and status is None:
            request = urllib.request.Request(
                f"http://127.0.0.1:{web_port}/api/v1/me",
                headers={"Authorization": f"Bearer {token.group(1)}"},
            )
            try:
                with urllib.request.urlopen(request, timeout=1) as r:
                    status = r.status
            except OSError:
                time.sleep(0.2)
        assert status == 200
    finally:
        process.send_signal(signal.SIGTERM)
        second = process.communicate(timeout=30)[0].decode()
    assert "operator login token" not in second  # shown once only
