"""Resource bounds (issue 10): what a session keeps per message, and connections at once."""

from __future__ import annotations

import asyncio
import struct

import milter_bytes as mb
from milter_helpers import (
    EXCHANGE,
    EXCHANGE_REPLY,
    RecordingPolicy,
    grading_policy,
    replay,
    talk,
    until,
)

from drossel.milter import start_milter_server
from drossel.milter.session import MilterSession


def header(name: str, value: str) -> bytes:
    payload = b"L" + name.encode() + b"\0" + value.encode() + b"\0"
    return struct.pack(">I", len(payload)) + payload


def message(*headers: bytes) -> bytes:
    return b"".join((mb.OPTNEG, mb.MAIL, mb.RCPT, *headers, mb.EOH, mb.QUIT))


async def test_only_received_lines_are_kept_in_order() -> None:
    policy = RecordingPolicy()
    stream = message(
        header("Subject", "s" * 5000),
        mb.HDR_RECEIVED_1,
        header("X-Junk", "j"),
        mb.HDR_RECEIVED_2,
        header("RECEIVED", "from upper-case"),
    )
    await replay(MilterSession(policy), stream)
    names = [name for name, _ in policy.eoh_calls[0].headers]
    assert names == ["Received", "Received", "RECEIVED"]


async def test_received_count_is_capped() -> None:
    policy = RecordingPolicy()
    lines = [header("Received", f"from hop{i} by x; Tue, 4 Jun 2024") for i in range(300)]
    await replay(MilterSession(policy, max_kept_headers=200), message(*lines))
    kept = policy.eoh_calls[0].headers
    assert len(kept) == 200
    assert kept[0][1].startswith("from hop0 ") and kept[-1][1].startswith("from hop199 ")


async def test_received_size_is_capped_top_lines_first() -> None:
    policy = RecordingPolicy()
    lines = [header("Received", f"{i:02d}" + "x" * 9998) for i in range(10)]  # 10 x 10000
    await replay(MilterSession(policy, max_kept_bytes=65536), message(*lines))
    kept = policy.eoh_calls[0].headers
    total = sum(len(name) + len(value) for name, value in kept)
    assert total <= 65536
    assert [value[:2] for _, value in kept] == [f"{i:02d}" for i in range(7)]
    assert len(kept[-1][1]) < 10000  # the line that crossed the limit is cut


async def test_limits_do_not_hide_forged_headers() -> None:
    """Beyond the size budget, our own header name is still counted for deletion."""
    policy = RecordingPolicy()
    session = MilterSession(policy, strip_headers=["X-Drossel"], max_kept_bytes=1024)
    lines = [header("Received", "r" * 2000), mb.HDR_FORGED_DROSSEL, mb.HDR_FORGED_DROSSEL]
    stream = message(*lines).replace(mb.QUIT, b"")
    await replay(session, stream)
    out = await replay(session, mb.BODYEOB)
    assert out == mb.R_DELETE_DROSSEL_2 + mb.R_DELETE_DROSSEL_1 + mb.R_CONTINUE


async def test_connections_beyond_the_cap_are_closed_and_later_ones_served() -> None:
    srv = await start_milter_server(grading_policy(), "inet:127.0.0.1:0", max_connections=2)
    host, port = srv.sockets[0].getsockname()[:2]
    held = [await asyncio.open_connection(host, port) for _ in range(2)]
    try:
        for reader, writer in held:  # both are served
            writer.write(mb.OPTNEG)
            async with asyncio.timeout(5):
                assert await reader.readexactly(len(mb.R_OPTNEG)) == mb.R_OPTNEG
        reader, writer = await asyncio.open_connection(host, port)
        async with asyncio.timeout(5):
            assert await reader.read() == b""  # the third is closed without a word
        writer.close()
        assert srv.refused == 1
    finally:
        for _, writer in held:
            writer.close()
    await until(lambda: not srv.connections)
    assert await talk((host, port), EXCHANGE) == EXCHANGE_REPLY
    srv.close()
    await srv.wait_closed()
