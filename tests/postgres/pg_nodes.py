"""Helpers for multi-node tests: real ``drossel milter`` processes on one PostgreSQL, driven
with raw milter packets the way Postfix sends them, and the ``drossel`` command line.

Every wait is bounded; processes are always stopped in teardown (see ``conftest.py``).
"""

from __future__ import annotations

import os
import signal
import socket
import struct
import subprocess
import sys
import time
import zlib
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from drossel.milter.framing import PacketDecoder, encode_packet

T0 = datetime(2026, 3, 2, 12, 0, 0, tzinfo=UTC)
OPTNEG = b"\x00\x00\x00\rO\x00\x00\x00\x06\x00\x00\x01\xff\x00\x1f\xff\xff"
DROSSEL = [sys.executable, "-m", "drossel.cli.main"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def drossel(
    *args: str, env: dict[str, str] | None = None, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*DROSSEL, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def db_upgrade(url: str) -> None:
    result = drossel("db", "upgrade", "--db", url)
    assert result.returncode == 0, result.stderr


def received(server: str, build: str) -> str:
    return (
        f"from mbx.internal (10.0.0.2) by {server} (10.0.0.1) with Microsoft SMTP Server "
        f"id {build}; Mon, 2 Mar 2026 10:00:00 +0000"
    )


def milter_session(
    server: str, build: str, client_addr: str, helo: str | None = None
) -> tuple[bytes, bytes]:
    """One connection with one message whose connecting Exchange server is ``server``: the
    packets up to RCPT, and the rest (sent only if RCPT was not refused, like Postfix)."""
    helo = helo or server
    addr = client_addr.encode()
    head = [
        OPTNEG,
        # Postfix's {client_name} is the forward-confirmed name: the server's own (SPEC §3)
        encode_packet(
            b"D",
            b"C" + b"{client_addr}\0" + addr + b"\0{client_name}\0" + helo.encode() + b"\0",
        ),
        encode_packet(b"C", helo.encode() + b"\0" + b"4" + struct.pack(">H", 40000) + addr + b"\0"),
        encode_packet(b"H", helo.encode() + b"\0"),
        encode_packet(b"M", b"<alerts@contoso.example>\0"),
        encode_packet(b"R", b"<ops@example.net>\0"),
    ]
    tail = [
        encode_packet(b"L", b"Received\0" + received(server, build).encode() + b"\0"),
        encode_packet(b"L", b"Subject\0test\0"),
        encode_packet(b"N"),
        encode_packet(b"E"),
        encode_packet(b"Q"),
    ]
    return b"".join(head), b"".join(tail)


def verdict_of(replies: bytes) -> str:
    """``accept``, ``tempfail`` (4xx) or ``reject`` (5xx) from the milter's replies."""
    for packet in PacketDecoder().feed(replies):
        cmd = packet.command
        if cmd == b"a":
            return "accept"
        if cmd == b"t":
            return "tempfail"
        if cmd == b"r":
            return "reject"
        if cmd == b"y":
            return "tempfail" if packet.payload[:1] == b"4" else "reject"
    raise AssertionError(f"no verdict in milter replies {replies!r}")


class Node:
    """One ``drossel milter`` process."""

    def __init__(
        self,
        url: str,
        workdir: Path,
        *,
        name: str = "node",
        at: str | None = None,
        now_env: str | None = None,
        config: str | None = None,
        port: int | None = None,
    ) -> None:
        self.url = url
        self.workdir = workdir
        self.name = name
        self.at = at
        self.now_env = now_env
        self.config = config
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = workdir / f"{name}.log"

    def start(self, wait: bool = True) -> Node:
        args = [*DROSSEL, "milter", "--listen", f"inet:127.0.0.1:{self.port}", "--db", self.url]
        if self.at:
            args += ["--at", self.at]
        if self.config:
            args += ["--config", self.config]
        env = {**os.environ}
        env.pop("DROSSEL_NOW", None)
        if self.now_env:
            env["DROSSEL_NOW"] = self.now_env
        self.workdir.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                args, cwd=self.workdir, env=env, stdout=log, stderr=subprocess.STDOUT
            )
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.name} exited: {self.output()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.05)
        raise AssertionError(f"{self.name} did not listen within {timeout}s: {self.output()}")

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def send(
        self,
        server: str,
        build: str,
        client_addr: str | None = None,
        helo: str | None = None,
        timeout: float = 10,
    ) -> str:
        """One message from ``server`` (as its own SMTP client: HELO is its name and the
        client address is derived from it); returns the verdict Postfix would act on."""
        client_addr = client_addr or f"192.0.2.{zlib.crc32(server.encode()) % 250 + 1}"
        head, tail = milter_session(server, build, client_addr, helo)
        with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as sock:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.sendall(head)
            decoder = PacketDecoder()
            rcpt_reply = None
            while rcpt_reply is None:
                chunk = sock.recv(65536)
                if not chunk:
                    raise AssertionError("milter closed the connection before RCPT's reply")
                for packet in decoder.feed(chunk):
                    if packet.command != b"O":
                        rcpt_reply = packet
            if rcpt_reply.command != b"c":  # refused at RCPT: Postfix sends no message
                sock.sendall(encode_packet(b"Q"))
                return verdict_of(encode_packet(rcpt_reply.command, rcpt_reply.payload))
            sock.sendall(tail)
            received_ = b""
            while chunk := sock.recv(65536):
                received_ += chunk
        return verdict_of(received_)

    def stop(self, timeout: float = 15) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(5)


def wait_until(predicate, timeout: float, interval: float = 0.02):  # type: ignore[no-untyped-def]
    """Poll ``predicate`` until truthy; return (value, seconds waited) or raise."""
    started = time.monotonic()
    while True:
        value = predicate()
        if value:
            return value, time.monotonic() - started
        if time.monotonic() - started > timeout:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)


def write_config(path: Path, **storage: object) -> str:
    lines = ["[policy]", "enforce_unverified = true", "[storage]"]  # loopback clients
    for key, value in storage.items():
        lines.append(f"{key} = {value!r}" if not isinstance(value, str) else f'{key} = "{value}"')
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def started(nodes: Sequence[Node]) -> None:
    for node in nodes:
        node.start(wait=False)
    for node in nodes:
        node.wait_ready()
