"""The asyncio server over real sockets: exact replay, isolation, timeouts."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import stat
import struct
import time
from collections.abc import AsyncIterator
from pathlib import Path

import milter_bytes as mb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from milter_helpers import (
    CONNECTION_START,
    EXCHANGE,
    EXCHANGE_REPLY,
    MESSAGE,
    RaisingPolicy,
    RecordingPolicy,
    grading_policy,
    talk,
    until,
)

from drossel.milter import (
    MessageContext,
    MilterPolicy,
    MilterServer,
    MilterVerdict,
    start_milter_server,
)
from drossel.milter.server import ListenAddress, parse_listen

START = b"".join(CONNECTION_START)
ONE_MESSAGE = b"".join(MESSAGE)


def tcp_address(server: MilterServer) -> tuple[str, int]:
    host, port = server.sockets[0].getsockname()[:2]
    return host, port


async def serve(policy: MilterPolicy | None = None, **kwargs: float) -> MilterServer:
    return await start_milter_server(policy or grading_policy(), "inet:127.0.0.1:0", **kwargs)  # type: ignore[arg-type]


@pytest.fixture
async def server() -> AsyncIterator[MilterServer]:
    srv = await serve(read_timeout=2.0)
    yield srv
    srv.close()
    await srv.wait_closed()


@pytest.mark.parametrize("read_size", [1, 16, 128, 4096])
@pytest.mark.parametrize("write_size", [1, 16, 128, 4096])
async def test_replay_exact_bytes(write_size: int, read_size: int) -> None:
    srv = await start_milter_server(grading_policy(), "inet:127.0.0.1:0", read_size=read_size)
    try:
        reply = await talk(tcp_address(srv), EXCHANGE, write_size=write_size)
        assert reply == EXCHANGE_REPLY
    finally:
        srv.close()
        await srv.wait_closed()


async def test_verdict_at_end_of_message_waits_for_a_suspended_policy() -> None:
    """NR_EOH: Postfix sends end of message right after end of headers, while the policy may
    still be waiting for the database; the end-of-message reply must still carry its verdict."""

    class Slow(RecordingPolicy):
        async def on_end_of_headers(self, ctx: MessageContext) -> MilterVerdict:
            await asyncio.sleep(0.05)
            return MilterVerdict(
                "tempfail", 450, "4.7.230", "Exchange 15.1.2507 is 42% out\r\nof date"
            )

    srv = await start_milter_server(Slow(), "inet:127.0.0.1:0", answer_at_end_of_message=True)
    try:
        reply = await talk(tcp_address(srv), START + ONE_MESSAGE + mb.QUIT)
        assert reply == mb.R_OPTNEG_NR_EOH + mb.R_CONTINUE + mb.R_REPLY_450
    finally:
        srv.close()
        await srv.wait_closed()


async def test_a_task_only_for_a_policy_call_that_suspends() -> None:
    """Answers from memory are given in the read callback: such a connection never costs a
    task; a policy call that suspends starts one, which serves the connection to its end."""

    class Slow(RecordingPolicy):
        async def on_end_of_headers(self, ctx: MessageContext) -> MilterVerdict:
            self.eoh_calls.append(ctx)
            await asyncio.sleep(0.01)
            return MilterVerdict("accept")

    async def serve_one(policy: RecordingPolicy) -> bool:
        """One message and QUIT; whether the connection had a task at end of headers."""
        srv = await start_milter_server(policy, "inet:127.0.0.1:0")
        try:
            reader, writer = await asyncio.open_connection(*tcp_address(srv))
            writer.write(START + ONE_MESSAGE)
            async with asyncio.timeout(5):
                while len(await reader.read(65536)) < 5:  # the OPTNEG reply
                    pass
            (connection,) = srv.connections
            await until(lambda: policy.eoh_calls)
            tasked = connection.task is not None
            writer.write(mb.QUIT)
            async with asyncio.timeout(5):
                while await reader.read(65536):
                    pass  # closed by drossel after QUIT
            await until(lambda: not srv.connections)
            writer.close()
            return tasked
        finally:
            srv.close()
            await srv.wait_closed()

    assert await serve_one(grading_policy()) is False
    assert await serve_one(Slow()) is True


async def test_a_peer_that_stops_reading_is_cut_off() -> None:
    """Replies the MTA never reads pause our reading; after read_timeout the connection is
    closed, and when even the close cannot flush them, aborted: nothing hangs."""
    srv = await serve(read_timeout=0.3)
    try:
        _, writer = await asyncio.open_connection(*tcp_address(srv))
        writer.write(mb.OPTNEG * 100_000)  # about 20 MB of replies, never read
        await until(lambda: srv.connections, 15)
        await until(lambda: not srv.connections, 15)
        writer.close()
    finally:
        srv.close()
        await srv.wait_closed()


async def test_two_messages_with_abort(server: MilterServer) -> None:
    first = ONE_MESSAGE[: ONE_MESSAGE.index(mb.MACRO_EOH)]
    reply = await talk(tcp_address(server), START + first + mb.ABORT + ONE_MESSAGE + mb.QUIT)
    assert reply == (
        mb.R_OPTNEG
        + mb.R_CONTINUE
        + mb.R_CONTINUE
        + mb.R_CONTINUE
        + mb.R_ADDHEADER_GRADE
        + mb.R_ACCEPT
    )


async def test_sanitised_450_over_the_wire() -> None:
    verdict = MilterVerdict("tempfail", 450, "4.7.230", "Exchange 15.1.2507 is 42% out\r\nof date")
    srv = await serve(RecordingPolicy(eoh=verdict))
    try:
        reply = await talk(tcp_address(srv), EXCHANGE)
    finally:
        srv.close()
        await srv.wait_closed()
    assert reply == mb.R_OPTNEG + mb.R_CONTINUE + mb.R_REPLY_450 + mb.R_CONTINUE


async def test_policy_raising_still_accepts(caplog: pytest.LogCaptureFixture) -> None:
    srv = await serve(RaisingPolicy())
    try:
        reply = await talk(tcp_address(srv), EXCHANGE)
        assert reply == mb.R_OPTNEG + mb.R_CONTINUE * 3
        assert await talk(tcp_address(srv), EXCHANGE) == reply  # server unharmed
    finally:
        srv.close()
        await srv.wait_closed()
    assert "database is down" in caplog.text


@pytest.mark.parametrize(
    ("garbage", "eof", "log_fragment"),
    [
        (b"\x00\x00\x00\x00O", False, "zero-length"),
        (mb.OPTNEG + b"\x00\x00\x00\x01Z", False, "unknown command byte"),
        (mb.OPTNEG + mb.HELO[:-3], True, "EOF inside a packet"),
        (b"\x7f\xff\xff\xffO", False, "exceeds the limit"),
        (b"\x00\x00\x00\x05O\x00\x00\x00\x06", False, "OPTNEG: payload of 4 bytes"),
        (b"GET / HTTP/1.1\r\n\r\n", False, "exceeds the limit"),
        (b"\x00\x00\x00\x0dO" + b"\x00" * 12, False, "unsupported MTA protocol version 0"),
        (mb.OPTNEG + b"\x00\x00\x00\x02Hx", False, "HELO: payload is not NUL-terminated"),
    ],
)
async def test_malformed_input_closes_only_that_connection(
    server: MilterServer,
    garbage: bytes,
    eof: bool,
    log_fragment: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, "drossel.milter")
    reply = await talk(tcp_address(server), garbage, eof=eof, timeout=3.0)
    assert reply in (b"", mb.R_OPTNEG)  # closed, at most after negotiating
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert log_fragment in warnings[0].getMessage()
    assert await talk(tcp_address(server), EXCHANGE) == EXCHANGE_REPLY


async def test_stalled_client_is_closed_after_read_timeout() -> None:
    srv = await serve(read_timeout=0.2, idle_timeout=60.0)
    try:
        for data in (b"", mb.OPTNEG[:7], mb.OPTNEG + mb.HELO[:5]):
            started = time.monotonic()
            reply = await talk(tcp_address(srv), data, timeout=5.0)
            assert time.monotonic() - started < 2.0
            assert reply in (b"", mb.R_OPTNEG)
    finally:
        srv.close()
        await srv.wait_closed()


async def test_idle_between_packets_uses_idle_timeout() -> None:
    srv = await serve(read_timeout=0.05, idle_timeout=0.5)
    try:
        reader, writer = await asyncio.open_connection(*tcp_address(srv))
        writer.write(START)
        await writer.drain()
        assert await asyncio.wait_for(reader.readexactly(len(mb.R_OPTNEG)), 5.0) == mb.R_OPTNEG
        await asyncio.sleep(0.2)  # longer than read_timeout: still open
        writer.write(mb.MACRO_MAIL + mb.MAIL + mb.RCPT)
        await writer.drain()
        assert await asyncio.wait_for(reader.readexactly(len(mb.R_CONTINUE)), 5.0) == mb.R_CONTINUE
        started = time.monotonic()
        assert await asyncio.wait_for(reader.read(), 5.0) == b""  # idle timeout hits
        assert 0.3 < time.monotonic() - started < 3.0
        writer.close()
    finally:
        srv.close()
        await srv.wait_closed()


async def test_unix_socket_listener(tmp_path: Path) -> None:
    path = str(tmp_path / "drossel.sock")
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(path)  # leaves a socket file nobody listens on
    stale.close()
    srv = await start_milter_server(grading_policy(), f"unix:{path}")
    try:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o666
        assert await talk(path, EXCHANGE, write_size=16) == EXCHANGE_REPLY
        with pytest.raises(OSError, match="another process is listening"):
            await start_milter_server(grading_policy(), f"unix:{path}")
    finally:
        srv.close()
        await srv.wait_closed()
    assert not os.path.exists(path)


async def test_unix_listener_refuses_to_replace_a_regular_file(tmp_path: Path) -> None:
    path = tmp_path / "not-a-socket"
    path.write_text("precious")
    with pytest.raises(FileExistsError):
        await start_milter_server(grading_policy(), f"unix:{path}")
    assert path.read_text() == "precious"


async def test_graceful_close_cancels_lingering_sessions_after_grace() -> None:
    srv = await start_milter_server(grading_policy(), "inet:127.0.0.1:0", shutdown_grace=0.1)
    reader, writer = await asyncio.open_connection(*tcp_address(srv))
    writer.write(START)
    await writer.drain()
    assert await asyncio.wait_for(reader.readexactly(len(mb.R_OPTNEG)), 5.0) == mb.R_OPTNEG
    srv.close()
    assert not srv.is_serving()
    await asyncio.wait_for(srv.wait_closed(), 3.0)
    assert await asyncio.wait_for(reader.read(), 3.0) == b""
    writer.close()


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("inet:127.0.0.1:8891", ListenAddress("inet", "127.0.0.1", 8891)),
        ("inet:localhost:10025", ListenAddress("inet", "localhost", 10025)),
        ("inet:[::1]:8891", ListenAddress("inet", "::1", 8891)),
        ("inet6:::1:8891", ListenAddress("inet6", "::1", 8891)),
        ("inet6:[2001:db8::5]:8891", ListenAddress("inet6", "2001:db8::5", 8891)),
        ("inet:8891@127.0.0.1", ListenAddress("inet", "127.0.0.1", 8891)),
        (
            "unix:/var/spool/postfix/drossel/milter",
            ListenAddress("unix", path="/var/spool/postfix/drossel/milter"),
        ),
        ("local:/run/drossel.sock", ListenAddress("unix", path="/run/drossel.sock")),
    ],
)
def test_parse_listen(spec: str, expected: ListenAddress) -> None:
    assert parse_listen(spec) == expected


@pytest.mark.parametrize(
    "spec", ["", "inet", "inet:", "inet:8891", "inet:host:port", "inet:h:70000", "tcp:h:1", "unix:"]
)
def test_parse_listen_rejects(spec: str) -> None:
    with pytest.raises(ValueError):
        parse_listen(spec)


async def test_inet6_listener() -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        srv = await start_milter_server(grading_policy(), "inet6:[::1]:0")
    except OSError:
        pytest.skip("::1 not available")
    try:
        host, port = srv.sockets[0].getsockname()[:2]
        assert await talk((host, port), EXCHANGE) == EXCHANGE_REPLY
    finally:
        srv.close()
        await srv.wait_closed()


@settings(
    max_examples=60,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    prefix=st.sampled_from([b"", mb.OPTNEG, START]),
    noise=st.binary(max_size=300),
    lengths=st.lists(st.integers(0, 70000), max_size=3),
)
def test_fuzz_random_bytes_never_crash_or_hang(
    prefix: bytes, noise: bytes, lengths: list[int]
) -> None:
    # Mix raw noise with plausible length prefixes so both the framing and
    # the command parsers get exercised.
    data = prefix + b"".join(struct.pack(">I", n) for n in lengths) + noise

    async def run() -> None:
        srv = await start_milter_server(
            grading_policy(), "inet:127.0.0.1:0", read_timeout=0.5, max_packet=65536
        )
        try:
            await talk(tcp_address(srv), data, eof=True, timeout=5.0)
            assert await talk(tcp_address(srv), EXCHANGE) == EXCHANGE_REPLY
        finally:
            srv.close()
            await srv.wait_closed()

    asyncio.run(run())


class _EventsTransport:
    """A transport and TCP socket that record, in order, what the connection does to them."""

    def __init__(self) -> None:
        self.events: list[str] = []

    def get_extra_info(self, name: str, default: object = None) -> object:
        return self if name == "socket" else default

    def setsockopt(self, level: int, option: int, value: int) -> None:
        assert (level, option, value) == (socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
        self.events.append("ack")

    def write(self, data: bytes) -> None:
        self.events.append(f"write {data[4:5].decode()}")

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        self.events.append("close")

    def get_write_buffer_size(self) -> int:
        return 0


@pytest.mark.skipif(not hasattr(socket, "TCP_QUICKACK"), reason="Linux only")
async def test_reads_needing_no_reply_are_acknowledged_before_they_are_handled() -> None:
    """Postfix's next packet waits (Nagle) for the ACK of its last one: a read that gets no reply
    is acknowledged at once, before its packets are handled; a read that gets a reply is not
    (the reply carries the ACK)."""
    from drossel.milter.server import _Connection
    from drossel.milter.session import MilterSession

    seen: list[int] = []

    class Policy(RecordingPolicy):
        async def on_end_of_headers(self, ctx: MessageContext) -> MilterVerdict:
            seen.append(len(transport.events))
            return await super().on_end_of_headers(ctx)

    template = MilterSession(Policy(), recipient_step=False, answer_at_end_of_message=True)
    transport = _EventsTransport()
    connection = _Connection(
        [], template.spawn, read_timeout=5, idle_timeout=5, max_packet=65536, read_size=4096,
        tcp=True,
    )  # fmt: skip
    connection.connection_made(transport)  # type: ignore[arg-type]

    def read(data: bytes) -> list[str]:
        before = len(transport.events)
        connection.get_buffer(len(data))[: len(data)] = data
        connection.buffer_updated(len(data))
        return transport.events[before:]

    assert read(mb.OPTNEG) == ["write O"]  # before the negotiation everything is answered
    assert read(mb.MACRO_CONNECT + mb.CONNECT + mb.MACRO_HELO + mb.HELO) == ["ack"]
    assert read(mb.MACRO_MAIL + mb.MAIL) == ["ack"]
    assert read(mb.MACRO_HEADER) == ["ack"]
    assert read(mb.HDR_RECEIVED_1[:7]) == ["ack"]  # inside a packet: the rest is due
    assert read(mb.HDR_RECEIVED_1[7:] + mb.MACRO_HEADER) == ["ack"]
    assert read(mb.HDR_RECEIVED_2) == ["ack"]
    # a packet that is answered, with the start of the next: the rest of that one is due
    assert read(mb.RCPT + mb.MACRO_HEADER[:3]) == ["ack", "write c"]
    assert read(mb.MACRO_HEADER[3:]) == ["ack"]
    # end of headers gets no reply here (the verdict goes out at end of message): the ACK
    # goes out first, then the policy runs
    assert read(mb.MACRO_EOH + mb.EOH) == ["ack"]
    assert seen == [len(transport.events)]
    # end of message is answered: the reply carries the ACK
    assert read(mb.MACRO_EOB + mb.BODYEOB) == ["write c"]
    assert read(mb.QUIT) == ["ack", "close"]
