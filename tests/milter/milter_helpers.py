"""Shared helpers for the milter tests: policies, exchanges, socket clients."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable, Sequence

import milter_bytes as mb

from drossel.milter import MessageContext, MilterVerdict
from drossel.milter.framing import PacketDecoder
from drossel.milter.session import MilterSession

#: Everything Postfix sends for one message, from MAIL to end of message.
MESSAGE: Sequence[bytes] = (
    mb.MACRO_MAIL,
    mb.MAIL,
    mb.MACRO_RCPT,
    mb.RCPT,
    mb.MACRO_HEADER,
    mb.HDR_RECEIVED_1,
    mb.MACRO_HEADER,
    mb.HDR_RECEIVED_2,
    mb.MACRO_HEADER,
    mb.HDR_FROM,
    mb.MACRO_HEADER,
    mb.HDR_SUBJECT,
    mb.MACRO_HEADER,
    mb.HDR_EMPTY,
    mb.MACRO_EOH,
    mb.EOH,
    mb.MACRO_EOB,
    mb.BODYEOB,
)
CONNECTION_START: Sequence[bytes] = (
    mb.OPTNEG,
    mb.MACRO_CONNECT,
    mb.CONNECT,
    mb.MACRO_HELO,
    mb.HELO,
)
#: A whole recorded SMTP session with one message.
EXCHANGE = b"".join((*CONNECTION_START, *MESSAGE, mb.QUIT))
#: What drossel answers to EXCHANGE with GradingPolicy.
EXCHANGE_REPLY = mb.R_OPTNEG + mb.R_CONTINUE + mb.R_CONTINUE + mb.R_ADDHEADER_GRADE + mb.R_ACCEPT


class RecordingPolicy:
    """Returns fixed verdicts and records the contexts it was shown."""

    def __init__(
        self,
        rcpt: MilterVerdict | None = None,
        eoh: MilterVerdict | None = None,
    ) -> None:
        self.rcpt = rcpt or MilterVerdict("continue")
        self.eoh = eoh or MilterVerdict("continue")
        self.rcpt_calls: list[MessageContext] = []
        self.eoh_calls: list[MessageContext] = []

    async def on_recipient(self, ctx: MessageContext) -> MilterVerdict:
        self.rcpt_calls.append(ctx)
        return self.rcpt

    async def on_end_of_headers(self, ctx: MessageContext) -> MilterVerdict:
        self.eoh_calls.append(ctx)
        return self.eoh


def grading_policy() -> RecordingPolicy:
    """Accept with a grade header, like drossel does for a tolerated server."""
    return RecordingPolicy(
        eoh=MilterVerdict("accept", add_headers=(("X-Drossel-Grade", "B (Exchange 2016 CU23)"),))
    )


class RaisingPolicy:
    async def on_recipient(self, ctx: MessageContext) -> MilterVerdict:
        raise RuntimeError("database is down")

    async def on_end_of_headers(self, ctx: MessageContext) -> MilterVerdict:
        raise RuntimeError("database is down")


async def until(condition: Callable[[], object], timeout: float = 5.0) -> None:
    """Poll ``condition`` until it holds (TimeoutError after ``timeout`` seconds)."""
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


async def replay(session: MilterSession, data: bytes, chunk: int = 4096) -> bytes:
    """Feed ``data`` to ``session`` in ``chunk``-sized pieces; return all replies."""
    decoder = PacketDecoder()
    out = b""
    for start in range(0, len(data), chunk):
        for packet in decoder.feed(data[start : start + chunk]):
            out += await session.handle(packet)
    assert decoder.buffered == 0
    return out


async def talk(
    address: tuple[str, int] | str,
    data: bytes,
    *,
    write_size: int = 4096,
    eof: bool = False,
    timeout: float = 5.0,
) -> bytes:
    """Connect, send ``data`` in ``write_size`` pieces, read until the server closes."""
    if isinstance(address, str):
        reader, writer = await asyncio.open_unix_connection(address)
    else:
        reader, writer = await asyncio.open_connection(*address)
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        for start in range(0, len(data), write_size):
            writer.write(data[start : start + write_size])
            await writer.drain()
        if eof:
            writer.write_eof()
        received = b""
        async with asyncio.timeout(timeout):
            while chunk := await reader.read(65536):
                received += chunk
        return received
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await writer.wait_closed()
