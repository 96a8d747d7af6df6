"""Run ``drossel`` as users do: one-shot commands and a real ``drossel serve`` process on free
loopback ports, talked to over HTTP."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.harness.postfix import find_free_port


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DROSSEL_")}
    env["COLUMNS"] = "200"
    env.update(extra)
    return env


def run(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "drossel.cli.main", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env=env or clean_env(),
        timeout=120,
    )


@dataclass
class Served:
    process: subprocess.Popen[bytes]
    web_port: int
    output: str = ""

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.web_port}{path}"

    def stop(self) -> str:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        self.output = self.process.communicate(timeout=60)[0].decode()
        return self.output


def write_config(tmp_path: Path, extra: str = "") -> tuple[Path, int]:
    milter_port, web_port = find_free_port(), find_free_port()
    config = tmp_path / "drossel.toml"
    config.write_text(
        f'[milter]\nlisten = "inet:127.0.0.1:{milter_port}"\n'
        f'[web]\nlisten = "127.0.0.1:{web_port}"\n{extra}'
    )
    return config, web_port


def serve(
    tmp_path: Path,
    *args: str,
    extra: str = "",
    env: dict[str, str] | None = None,
    stderr: Any = subprocess.STDOUT,
) -> Served:
    """Start ``drossel serve`` and wait until its web answers ``/healthz``."""
    config, web_port = write_config(tmp_path, extra)
    process = subprocess.Popen(
        [sys.executable, "-m", "drossel.cli.main", "serve", "--config", str(config), *args],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=stderr,
        env=env or clean_env(),
    )
    served = Served(process, web_port)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError("drossel serve exited early:\n" + served.stop())
        try:
            with urllib.request.urlopen(served.url("/healthz"), timeout=1) as r:
                if r.status == 200:
                    return served
        except OSError:
            time.sleep(0.2)
    served.stop()
    raise AssertionError("drossel serve did not answer /healthz:\n" + served.output)


def http(
    url: str,
    *,
    token: str | None = None,
    cookie: str | None = None,
    data: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], str]:
    """One request without following redirects: status, headers, body."""
    headers = {}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    if cookie:
        headers["Cookie"] = cookie
    body = None
    if data is not None:
        body = "&".join(f"{k}={urllib.request.quote(v)}" for k, v in data.items()).encode()
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    request = urllib.request.Request(url, data=body, headers=headers)

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *a: Any, **k: Any) -> None:
            return None

    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(request, timeout=5) as r:
            return r.status, dict(r.headers), r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read().decode()


def browser_login(served: Served, token: str) -> str:
    """Log in through the login form; returns the session cookie (``name=value``)."""
    status, headers, page = http(served.url("/login"))
    assert status == 200
    csrf = re.search(r'name="csrf" value="([^"]+)"', page)
    assert csrf is not None
    login_cookie = headers["set-cookie"].split(";")[0]
    status, headers, _ = http(
        served.url("/login"),
        cookie=login_cookie,
        data={"csrf": csrf.group(1), "token": token, "next": "/"},
    )
    assert status == 303, status
    session = [c for c in headers.get("set-cookie", "").split(", ") if "drossel_session=" in c]
    assert session
    return session[0].split(";")[0]


def token_json(cwd: Path, *args: str) -> list[dict[str, Any]]:
    result = run("token", "list", "--json", *args, cwd=cwd)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)  # type: ignore[no-any-return]
