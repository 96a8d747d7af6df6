"""``drossel gateway`` as a process: serves, relays, and stops on SIGTERM with a final flush."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import aiosmtplib
import pytest

from drossel.storage.store import Store
from tests.harness.tls import make_ca, make_cert

from .conftest import OLD_2013, NextHopSink, exchange_message


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("event_loop", ["uvloop", "asyncio"])
async def test_gateway_command_relays_and_stops_gracefully(
    tmp_path: Path, sink: NextHopSink, event_loop: str
) -> None:
    """Also on both event loops, with STARTTLS from the client (uvloop's TLS upgrade is its
    own code, not asyncio's)."""
    port = _free_port()
    db = f"sqlite:///{tmp_path / 'state.db'}"
    cert = make_cert(tmp_path, make_ca(tmp_path), "gw.drossel.test", "gateway")
    config = tmp_path / "drossel.toml"
    config.write_text(
        "[storage]\nflush_seconds = 60\n[gateway]\n"
        'relay_tls = "none"\nreverse_lookup = false\n'
        f'event_loop = "{event_loop}"\ntls_cert = "{cert.cert}"\ntls_key = "{cert.key}"\n'
    )
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "drossel.cli.main",
            "gateway",
            "--listen",
            f"127.0.0.1:{port}",
            "--relay",
            sink.relay,
            "--config",
            str(config),
            "--db",
            db,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, "DROSSEL_NOW": "2026-11-02T08:00:00Z"},
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), 0.2):
                    break
            except OSError:
                assert proc.poll() is None, proc.stdout.read() if proc.stdout else b""
                assert time.monotonic() < deadline, "gateway did not start"
                time.sleep(0.05)
        _, text = await aiosmtplib.send(
            exchange_message(build=OLD_2013, server="EX2013.contoso.example"),
            sender="alice@contoso.example",
            recipients=["bob@fabrikam.example"],
            hostname="127.0.0.1",
            port=port,
            start_tls=True,
            validate_certs=False,
            timeout=10,
        )
        assert text == "2.0.0 Ok: queued as XYZ"
        assert b"(drossel) with ESMTPS" in sink.messages[-1].data  # our Received: line
        proc.send_signal(signal.SIGTERM)
        # the loop of this test also runs the sink; wait without blocking it
        for _ in range(200):
            if proc.poll() is not None:
                break
            await asyncio.sleep(0.05)
        assert proc.returncode == 0
        assert proc.stdout is not None
        assert f"gateway event loop: {event_loop}" in proc.stdout.read().decode()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    store = Store(db)
    try:
        (server,) = store.list_servers()
        assert server.record.server.lower() == "ex2013.contoso.example"
        # the per-day counter was batched (flush every 60 s) and written by the final flush
        assert store.total_counts(server.id).get("accept") == 1
    finally:
        store.dispose()


async def test_gateway_workers_share_the_port_and_all_flush(
    tmp_path: Path, sink: NextHopSink
) -> None:
    port = _free_port()
    db = f"sqlite:///{tmp_path / 'state.db'}"
    config = tmp_path / "drossel.toml"
    config.write_text(
        '[storage]\nflush_seconds = 60\n[gateway]\nrelay_tls = "none"\nreverse_lookup = false\n'
    )
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "drossel.cli.main", "gateway"),
            *("--listen", f"127.0.0.1:{port}", "--relay", sink.relay, "--workers", "2"),
            *("--config", str(config), "--db", db),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, "DROSSEL_NOW": "2026-11-02T08:00:00Z"},
    )
    children_file = Path(f"/proc/{proc.pid}/task/{proc.pid}/children")

    def listening_sockets() -> int:
        """Listening TCP sockets on ``port``: one per worker (SO_REUSEPORT)."""
        return sum(
            1
            for line in Path("/proc/net/tcp").read_text().splitlines()[1:]
            if line.split()[1].endswith(f":{port:04X}") and line.split()[3] == "0A"
        )

    workers: list[str] = []
    try:
        deadline = time.monotonic() + 30
        while listening_sockets() < 2:
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else b""
            assert time.monotonic() < deadline, "gateway workers did not start"
            await asyncio.sleep(0.1)
        workers = children_file.read_text().split()
        assert len(workers) == 2
        for n in range(12):
            _, text = await aiosmtplib.send(
                exchange_message(build=OLD_2013, server="EX2013.contoso.example", subject=f"m{n}"),
                sender="alice@contoso.example",
                recipients=["bob@fabrikam.example"],
                hostname="127.0.0.1",
                port=port,
                start_tls=False,
                timeout=10,
            )
            assert text == "2.0.0 Ok: queued as XYZ"
        proc.send_signal(signal.SIGTERM)
        for _ in range(300):
            if proc.poll() is not None:
                break
            await asyncio.sleep(0.05)
        assert proc.returncode == 0, proc.stdout.read() if proc.stdout else b""
        assert not any(Path(f"/proc/{w}").exists() for w in workers)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert len(sink.messages) == 12
    store = Store(db)
    try:
        (server,) = store.list_servers()
        # every worker flushed its share of the counts on the way out
        assert store.total_counts(server.id).get("accept") == 12
    finally:
        store.dispose()


def test_gateway_workers_need_a_fixed_port(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            *(sys.executable, "-m", "drossel.cli.main", "gateway", "--workers", "2"),
            *("--listen", "127.0.0.1:0", "--db", f"sqlite:///{tmp_path / 's.db'}"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "fixed listen port" in result.stderr
    assert "Traceback" not in result.stderr
