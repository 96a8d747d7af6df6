"""Milter CPU per message, without Postfix in the measurement: record, then replay (not a test).

Postfix's throughput runs (``bench/milter.py``) move by 10 to 30 % between rounds on a shared
2-core machine, too much to see a change of a few percent in drossel's own cost.  This tool
measures that cost alone:

``record``
    runs a private Postfix (``bench/_postfix.py``, needs root) with a proxy between it and a
    ``drossel milter``, and stores every milter conversation byte for byte (a pickle).

``compare SRC_A SRC_B``
    starts two ``drossel milter`` processes, one importing the package from ``SRC_A``, the
    other from ``SRC_B`` (for example a worktree of the last commit and ``src``), pins each to
    core 1 and the replayer to core 0, and replays the recorded conversations, 20 at a time,
    to each in turn (A B, B A, A B, ...).  Each packet is written on its own with Nagle on, as
    Postfix writes them.  Printed: the milter's CPU (user + system, from ``/proc``) per
    message for each round, and the median of the rounds' ratios B / A::

        python bench/milter_replay.py record /tmp/conversations.pickle
        git worktree add /tmp/base HEAD~1
        python bench/milter_replay.py compare /tmp/base/src src
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import pickle
import socket
import statistics
import struct
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _postfix import find_free_port, run_postfix_throughput, unavailable_reason

from milter import Milter, start_drossel

Conversation = list[tuple[str, bytes]]  # ("mta" | "milter", bytes as read)


def _packets(data: bytes) -> list[bytes]:
    """Split a byte stream into whole milter packets (length prefix included)."""
    packets, pos = [], 0
    while pos + 4 <= len(data):
        (length,) = struct.unpack_from(">I", data, pos)
        packets.append(data[pos : pos + 4 + length])
        pos += 4 + length
    return packets


# -- record ---------------------------------------------------------------------------------


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, tag: str,
                conversation: Conversation) -> None:  # fmt: skip
    try:
        while data := await reader.read(65536):
            conversation.append((tag, data))
            writer.write(data)
            await writer.drain()
    finally:
        writer.close()


async def record(out: Path, messages: int) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="drossel-replay-"))
    workdir.chmod(0o755)
    milter = start_drossel("record", workdir)
    target = _port(milter)
    conversations: list[Conversation] = []

    async def proxy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conversation: Conversation = []
        conversations.append(conversation)
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", target)
        await asyncio.gather(
            _pipe(reader, up_writer, "mta", conversation),
            _pipe(up_reader, writer, "milter", conversation),
        )

    port = find_free_port()
    server = await asyncio.start_server(proxy, "127.0.0.1", port)
    try:
        result = await asyncio.to_thread(
            run_postfix_throughput, f"inet:127.0.0.1:{port}", messages, 5
        )
        await asyncio.sleep(1)
    finally:
        server.close()
        milter.stop()
    kept = [c for c in conversations if any(tag == "milter" for tag, _ in c)]
    out.write_bytes(pickle.dumps(kept))
    print(f"{len(kept)} conversations of {result['delivered']} messages -> {out}")


# -- compare --------------------------------------------------------------------------------


def _script(conversation: Conversation) -> list[tuple[str, list[bytes] | int]]:
    """What to send (packet by packet) and how many reply packets to wait for, in order."""
    steps: list[tuple[str, list[bytes] | int]] = []
    for tag, data in conversation:
        if tag == "mta":
            steps.append(("send", _packets(data)))
        elif steps and steps[-1][0] == "wait":
            steps[-1] = ("wait", int(steps[-1][1]) + len(_packets(data)))  # type: ignore[call-overload]
        else:
            steps.append(("wait", len(_packets(data))))
    return steps


async def _converse(port: int, script: list[tuple[str, list[bytes] | int]]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    # Nagle on, as Postfix has it: the milter's quick ACKs then pace the packets
    writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 0)
    for step, what in script:
        if step == "send":
            for packet in what:  # type: ignore[union-attr]
                writer.write(packet)
        else:
            for _ in range(what):  # type: ignore[arg-type]
                (length,) = struct.unpack(">I", await reader.readexactly(4))
                await reader.readexactly(length)
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()


async def _replay(port: int, scripts: list, messages: int, concurrency: int) -> None:  # type: ignore[type-arg]
    todo = iter(range(messages))

    async def worker() -> None:
        for i in todo:
            await _converse(port, scripts[i % len(scripts)])

    await asyncio.gather(*(worker() for _ in range(concurrency)))


def _port(milter: Milter) -> int:
    return int(milter.address.rsplit(":", 1)[1])


def _cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def compare(
    conversations: Path, sources: list[str], messages: int, rounds: int, warmup: int = 2000
) -> None:
    scripts = [_script(c) for c in pickle.loads(conversations.read_bytes())]
    cores = len(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {0})
    workdir = Path(tempfile.mkdtemp(prefix="drossel-replay-"))
    workdir.chmod(0o755)
    core = 1 if cores > 1 else None
    milters = [
        start_drossel(name, workdir, src=src, core=core)
        for name, src in zip("ab", sources, strict=True)
    ]
    cost: list[list[float]] = [[], []]
    try:
        for milter in milters:
            await _replay(
                _port(milter), scripts, warmup, 20
            )  # warm up: caches, imports, the database
        for round_no in range(rounds):
            for k in (0, 1) if round_no % 2 == 0 else (1, 0):
                pid = milters[k].process.pid
                before = _cpu(pid)
                await _replay(_port(milters[k]), scripts, messages, 20)
                cost[k].append(1e6 * (_cpu(pid) - before) / messages)
    finally:
        for milter in milters:
            milter.stop()
    for name, src, values in zip("AB", sources, cost, strict=True):
        rounds_text = ", ".join(f"{v:.0f}" for v in values)
        print(f"{name} {src}: {statistics.median(values):.0f} µs CPU per message ({rounds_text})")
    ratios = [b / a for a, b in zip(cost[0], cost[1], strict=True)]
    print(
        f"B / A: {statistics.median(ratios):.3f} (rounds "
        + ", ".join(f"{r:.3f}" for r in ratios)
        + ")"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    rec = sub.add_parser("record", help="record Postfix's milter conversations (needs root)")
    rec.add_argument("out", type=Path)
    rec.add_argument("--messages", type=int, default=60)
    cmp = sub.add_parser("compare", help="replay them to drossel from two source trees")
    cmp.add_argument("a", help="source directory of A (holds the drossel package)")
    cmp.add_argument("b", help="source directory of B")
    cmp.add_argument("--conversations", type=Path, default=Path("/tmp/conversations.pickle"))
    cmp.add_argument("--messages", type=int, default=3000, help="per round and milter")
    cmp.add_argument("--rounds", type=int, default=8)
    cmp.add_argument("--warmup", type=int, default=2000, help="messages per milter first")
    args = parser.parse_args()
    if args.command == "record":
        reason = unavailable_reason()
        if reason:
            print(f"cannot run: {reason}", file=sys.stderr)
            return 2
        asyncio.run(record(args.out, args.messages))
    else:
        sources = [args.a, args.b]
        asyncio.run(compare(args.conversations, sources, args.messages, args.rounds, args.warmup))
    return 0


if __name__ == "__main__":
    sys.exit(main())
