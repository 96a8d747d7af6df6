"""A real ``drossel milter`` process keeps its memory bounded under huge headers (issue 10).

The process gets 64 headers of almost 1 MiB each (the largest packet it accepts) on each
of four concurrent connections, 256 MiB in all, and must answer normally while its resident
memory grows by far less than one connection's input.  The figure is printed (``-s``).
"""

from __future__ import annotations

import os
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import milter_bytes as mb
import pytest

from drossel.milter.framing import DEFAULT_MAX_PACKET, PacketDecoder

HEADERS = 64
CONNECTIONS = 4
VALUE = DEFAULT_MAX_PACKET - 64  # name, NULs and command byte fit in the largest packet
#: Allowed growth of resident memory: a quarter of what one connection sends.
BOUND = HEADERS * VALUE // 4


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _memory(pid: int, field: str) -> int:
    """``VmRSS`` (resident now) or ``VmHWM`` (resident peak) of ``pid``, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no {field}")


def _header(name: bytes, fill: bytes) -> bytes:
    payload = b"L" + name + b"\0" + fill * (VALUE // len(fill)) + b"\0"
    return struct.pack(">I", len(payload)) + payload


@pytest.fixture
def milter(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DROSSEL_")}
    log = (tmp_path / "milter.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "drossel.cli.main", "milter", "--listen",
         f"inet:127.0.0.1:{port}", "--db", f"sqlite:///{tmp_path / 'state.db'}"],
        stdout=log, stderr=subprocess.STDOUT, env=env,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, (tmp_path / "milter.log").read_text()
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "drossel milter did not start"
                time.sleep(0.1)
        yield proc, port
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


def _conversation(port: int, headers: list[bytes]) -> bytes:
    """One SMTP session's milter traffic; returns every reply byte until the milter closes."""
    stream = [mb.OPTNEG, mb.MACRO_MAIL, mb.MAIL, mb.RCPT, *headers, mb.EOH, mb.BODYEOB, mb.QUIT]
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        for chunk in stream:
            sock.sendall(chunk)
        sock.shutdown(socket.SHUT_WR)
        received = b""
        while data := sock.recv(65536):
            received += data
    return received


def _commands(reply: bytes) -> list[bytes]:
    return [packet.command for packet in PacketDecoder().feed(reply)]


def test_rss_stays_bounded_under_huge_headers(
    milter: tuple[subprocess.Popen[bytes], int],
) -> None:
    proc, port = milter
    normal = [mb.HDR_RECEIVED_1, mb.HDR_RECEIVED_2, mb.HDR_FROM]
    # warm up: imports, catalog, first detection write, buffers of one connection
    assert _commands(_conversation(port, normal))[0] == b"O"
    before = _memory(proc.pid, "VmRSS")

    huge = [
        _header(b"Received" if i % 2 else b"X-Filler", b"from a.example by b.example; ")
        for i in range(HEADERS)
    ]
    with ThreadPoolExecutor(CONNECTIONS) as pool:
        replies = list(pool.map(lambda _: _conversation(port, huge), range(CONNECTIONS)))
    peak = _memory(proc.pid, "VmHWM")  # the high-water mark, not just what is left
    growth = peak - before
    sent = CONNECTIONS * sum(len(h) for h in huge)
    print(
        f"\nmilter RSS {before / 2**20:.1f} MiB -> peak {peak / 2**20:.1f} MiB "
        f"(+{growth / 2**20:.1f} MiB) after {sent / 2**20:.0f} MiB of headers "
        f"on {CONNECTIONS} connections; bound +{BOUND / 2**20:.0f} MiB"
    )
    for reply in replies:
        # negotiated, answered RCPT and end of headers: not dropped as a protocol error
        commands = _commands(reply)
        assert commands[0] == b"O" and len(commands) >= 3
    assert proc.poll() is None
    assert growth < BOUND
    # and it still serves ordinary mail
    assert _commands(_conversation(port, normal))[0] == b"O"
