"""``drossel milter --workers N``: real processes sharing one listening address."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import milter_bytes as mb
import pytest

from drossel.milter.framing import PacketDecoder

# Replies: OPTNEG, continue for the RCPT (sent although negotiated away), nothing at end of
# headers (add_header is on by default: NR_EOH), then the header and accept at end of message.
REPLIES = [b"O", b"c", b"h", b"a"]

CONVERSATION = b"".join(
    (
        mb.OPTNEG,
        mb.HELO,
        mb.MACRO_MAIL_VERIFIED,
        mb.MAIL,
        mb.RCPT,
        mb.HDR_RECEIVED_1,
        mb.HDR_RECEIVED_2,
        mb.EOH,
        mb.BODYEOB,
        mb.QUIT,
    )
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _children(pid: int) -> set[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return {int(p) for p in text.split()}


def _wait(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _converse(connect: Callable[[], socket.socket]) -> list[bytes]:
    """One milter conversation; the reply commands."""
    with connect() as sock:
        sock.settimeout(30)
        sock.sendall(CONVERSATION)
        sock.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return [packet.command for packet in PacketDecoder().feed(data)]


def _start(tmp_path: Path, listen: str) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DROSSEL_")}
    (tmp_path / "drossel.toml").write_text(f'[storage]\njournal = "{tmp_path / "journal.jsonl"}"\n')
    env["DROSSEL_CONFIG"] = str(tmp_path / "drossel.toml")
    return subprocess.Popen(
        [sys.executable, "-m", "drossel.cli.main", "milter", "--workers", "2", "--listen",
         listen, "--db", f"sqlite:///{tmp_path / 'state.db'}"],
        stdout=(tmp_path / "milter.log").open("wb"), stderr=subprocess.STDOUT, env=env,
    )  # fmt: skip


def _start_inet(
    tmp_path: Path, stopper: list[subprocess.Popen[bytes]]
) -> tuple[subprocess.Popen[bytes], int]:
    """Two workers on a free loopback port, stopped by ``stopper`` at the end."""
    port = _free_port()
    proc = _start(tmp_path, f"inet:127.0.0.1:{port}")
    stopper.append(proc)
    return proc, port


@pytest.fixture
def stopper() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def _can_connect(connect: Callable[[], socket.socket]) -> bool:
    try:
        connect().close()
    except OSError:
        return False
    return True


def test_inet_workers_serve_restart_and_stop(
    tmp_path: Path, stopper: list[subprocess.Popen[bytes]]
) -> None:
    proc, port = _start_inet(tmp_path, stopper)

    def connect() -> socket.socket:
        return socket.create_connection(("127.0.0.1", port), timeout=5)

    _wait(lambda: len(_children(proc.pid)) == 2 and _can_connect(connect), "two workers")
    first = _children(proc.pid)
    for _ in range(20):
        # negotiated, header added and accepted at end of message (stage 1, report only)
        assert _converse(connect) == REPLIES

    victim = min(first)
    os.kill(victim, signal.SIGKILL)
    _wait(
        lambda: len(_children(proc.pid)) == 2 and victim not in _children(proc.pid),
        "the killed worker to be replaced",
    )
    for _ in range(10):
        assert _converse(connect) == REPLIES

    workers = _children(proc.pid)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0, (tmp_path / "milter.log").read_text()
    assert all(not Path(f"/proc/{pid}").exists() for pid in workers)
    log = (tmp_path / "milter.log").read_text()
    assert log.count("milter stopped") >= 2  # graceful stops, not kills
    assert "restarting" in log


def test_workers_stop_when_the_parent_is_killed(
    tmp_path: Path, stopper: list[subprocess.Popen[bytes]]
) -> None:
    """kill -9 of the supervisor leaves no worker serving unsupervised: each gets SIGTERM."""
    proc, _ = _start_inet(tmp_path, stopper)
    log = tmp_path / "milter.log"
    _wait(lambda: log.read_text().count("milter listening") == 2, "two serving workers")
    workers = _children(proc.pid)
    proc.kill()
    proc.wait(10)
    _wait(lambda: all(not _alive(pid) for pid in workers), "the orphaned workers to stop")
    assert log.read_text().count("milter stopped") == 2  # gracefully


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for init to reap it counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_unix_workers_share_the_socket_and_remove_it(
    tmp_path: Path, stopper: list[subprocess.Popen[bytes]]
) -> None:
    path = tmp_path / "milter.sock"
    proc = _start(tmp_path, f"unix:{path}")
    stopper.append(proc)

    def connect() -> socket.socket:
        sock = socket.socket(socket.AF_UNIX)
        sock.connect(str(path))
        return sock

    _wait(lambda: len(_children(proc.pid)) == 2 and _can_connect(connect), "two workers")
    for _ in range(10):
        assert _converse(connect) == REPLIES
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    assert not path.exists()


def test_workers_refuse_a_busy_address(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = _start(tmp_path, f"inet:127.0.0.1:{port}")
        assert proc.wait(timeout=60) != 0
    assert "Address already in use" in (tmp_path / "milter.log").read_text()


def test_a_worker_that_keeps_failing_stops_the_milter(tmp_path: Path) -> None:
    """A worker dying right after its start (say, its database is unusable) is restarted a
    few times, then the whole milter stops with an error instead of looping forever."""
    from drossel.milter.workers import MAX_QUICK_FAILURES, run_workers

    path = tmp_path / "milter.sock"
    starts = tmp_path / "starts"

    def serve(index: int, sock: socket.socket) -> int:
        assert sock.getsockname() == str(path)  # the worker got the listening socket
        with starts.open("a") as out:
            out.write(f"{index}\n")
        return 3

    assert run_workers(f"unix:{path}", 2, serve, restart_delay=0.5) == 1
    counts = [starts.read_text().split().count(str(i)) for i in (0, 1)]
    assert max(counts) == MAX_QUICK_FAILURES
    assert not path.exists()
