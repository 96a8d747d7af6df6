"""Bounded fuzzing of the gateway's SMTP command handling (issue 10).

Random and mutated command lines and DATA bodies go to a real gateway on loopback (its own
thread and event loop, relaying to a real SMTP sink).  Whatever arrives: every command gets a
well-formed reply within a bound (never a hang), no handler error surfaces (the gateway's
``451 4.3.0`` is its answer to an exception), and afterwards the gateway still greets and
relays a normal message.  ``DROSSEL_FUZZ_EXAMPLES`` sets the number of sessions (default 30).
"""

from __future__ import annotations

import asyncio
import os
import re
import socket
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from drossel.config import Config
from drossel.gateway.handler import INTERNAL_ERROR
from drossel.gateway.server import GatewayHandle, start_gateway
from drossel.runtime import build_enforcer

from .conftest import T0, MutableClock, exchange_message, gateway_config

_TESTS = Path(__file__).resolve().parents[1]
if str(_TESTS) not in sys.path:
    sys.path.insert(0, str(_TESTS))

from harness.sink import SmtpSink  # noqa: E402

EXAMPLES = int(os.environ.get("DROSSEL_FUZZ_EXAMPLES", "30"))
REPLY_WAIT = 15.0  # seconds for one reply: far above normal, a hang fails the test
REPLY_LINE = re.compile(rb"^[2-5][0-9][0-9][ -]")


class GatewayThread:
    """The gateway in its own thread and loop, so Hypothesis drives it with plain sockets."""

    def __init__(self, relay: str, db: Path) -> None:
        self.enforcer = build_enforcer(Config(), MutableClock(T0), f"sqlite:///{db}")
        self.loop = asyncio.new_event_loop()
        self.handle: GatewayHandle | None = None
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.relay = relay

    def start(self) -> GatewayThread:
        self.thread.start()
        config = gateway_config(self.relay, timeout=10.0)
        future = asyncio.run_coroutine_threadsafe(start_gateway(self.enforcer, config), self.loop)
        self.handle = future.result(15)
        return self

    def stop(self) -> None:
        if self.handle is not None:
            asyncio.run_coroutine_threadsafe(self.handle.close(grace=0.5), self.loop).result(15)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(15)
        self.loop.close()
        self.enforcer.store.dispose()


@pytest.fixture(scope="module")
def fuzz_target(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[GatewayThread, SmtpSink]]:
    with SmtpSink(name="fuzzsink") as sink:
        gw = GatewayThread(f"127.0.0.1:{sink.port}", tmp_path_factory.mktemp("fuzz") / "d.db")
        gw.start()
        try:
            yield gw, sink
        finally:
            gw.stop()


class Client:
    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=REPLY_WAIT)
        self.buffer = b""

    def reply(self) -> bytes | None:
        """One complete (possibly multi-line) reply; ``None`` when the gateway closed."""
        lines = []
        while True:
            while b"\n" not in self.buffer:
                chunk = self.sock.recv(65536)  # raises TimeoutError on a hang
                if not chunk:
                    return None
                self.buffer += chunk
            line, self.buffer = self.buffer.split(b"\n", 1)
            assert REPLY_LINE.match(line), f"malformed reply line {line!r}"
            lines.append(line)
            if line[3:4] == b" ":
                return b"\n".join(lines)

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def close(self) -> None:
        self.sock.close()


VERBS = [
    b"EHLO",
    b"HELO",
    b"MAIL FROM:",
    b"RCPT TO:",
    b"DATA",
    b"RSET",
    b"NOOP",
    b"VRFY",
    b"HELP",
    b"QUIT",
    b"STARTTLS",
    b"XCLIENT",
    b"PROXY",
    b"AUTH",
    b"BDAT",
    b"EXPN",
    b"",
]
# no CR or LF inside a line: each generated line is exactly one command
line_bytes = st.binary(max_size=600).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))
addresses = st.one_of(
    st.sampled_from([b"<alice@contoso.example>", b"<>", b"<bob@fabrikam.example>"]),
    line_bytes.map(lambda b: b"<" + b + b">"),
    line_bytes,
)
command = st.one_of(
    st.tuples(st.sampled_from(VERBS), line_bytes).map(lambda t: t[0] + b" " + t[1]),
    st.tuples(st.sampled_from([b"MAIL FROM:", b"RCPT TO:"]), addresses).map(b"".join),
    st.sampled_from(
        [
            b"EHLO ex01.contoso.example",
            b"MAIL FROM:<alice@contoso.example>",
            b"RCPT TO:<bob@fabrikam.example>",
            b"DATA",
            b"RSET",
        ]
    ),
    line_bytes,
)
body_line = st.one_of(
    line_bytes,
    st.sampled_from(
        [
            b"X-Drossel: forged",
            b"Received: from x by y with Microsoft SMTP Server id",
            b" 15.0.1497.2; junk",
            b".",
            b"..",
            b"",
            b"\xff\xfe\x00",
        ]
    ),
)
VALID = [
    b"EHLO ex01.contoso.example",
    b"MAIL FROM:<alice@contoso.example>",
    b"RCPT TO:<bob@fabrikam.example>",
    b"DATA",
]


@st.composite
def sessions(draw: st.DrawFn) -> list[bytes | list[bytes]]:
    """A list of commands; a list item is a DATA body (sent after a 354)."""
    steps: list[bytes | list[bytes]] = list(VALID)
    if draw(st.booleans()):  # mutate a valid session
        for _ in range(draw(st.integers(0, 4))):
            where = draw(st.integers(0, len(steps)))
            action = draw(st.sampled_from(["insert", "delete", "duplicate"]))
            if action == "insert":
                steps.insert(where, draw(command))
            elif steps and where < len(steps):
                if action == "delete":
                    del steps[where]
                else:
                    steps.insert(where, steps[where])
    else:  # random commands
        steps = draw(st.lists(command, max_size=12))
    body = draw(st.lists(body_line, max_size=30))
    return [*steps, body]


def run_session(port: int, steps: list[bytes | list[bytes]]) -> list[bytes]:
    client = Client(port)
    replies: list[bytes] = []
    try:
        greeting = client.reply()
        assert greeting is not None and greeting.startswith(b"220")
        body = steps[-1]
        assert isinstance(body, list)
        for step in steps[:-1]:
            assert isinstance(step, bytes)
            client.send(step + b"\r\n")
            reply = client.reply()
            if reply is None:
                return replies
            replies.append(reply)
            if reply[:3] in (b"221", b"421") or b"goodbye" in reply:
                return replies  # the gateway ended the session (QUIT, timeout, bogus commands)
            if reply.startswith(b"354"):
                stuffed = [b"." + line if line.startswith(b".") else line for line in body]
                client.send(b"".join(line + b"\r\n" for line in stuffed) + b".\r\n")
                reply = client.reply()
                if reply is None:
                    return replies
                replies.append(reply)
        client.send(b"QUIT\r\n")
        reply = client.reply()
        if reply is not None:
            replies.append(reply)
    finally:
        client.close()
    return replies


def still_relays(gw: GatewayThread, sink: SmtpSink) -> None:
    before = len(sink.messages)
    client = Client(gw.handle.port if gw.handle else 0)
    try:
        assert (client.reply() or b"").startswith(b"220")
        for line in VALID:
            client.send(line + b"\r\n")
            assert (client.reply() or b"")[:3] in (b"250", b"354")
        client.send(exchange_message() + b".\r\n")
        assert (client.reply() or b"").startswith(b"250")
    finally:
        client.close()
    assert len(sink.messages) == before + 1


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,  # nothing written into the work tree; failures print their example
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    derandomize=EXAMPLES <= 30,  # the normal run is reproducible; big runs explore
)
@given(steps=sessions())
def test_any_command_sequence_gets_answers_and_the_gateway_keeps_relaying(
    fuzz_target: tuple[GatewayThread, SmtpSink], steps: list[bytes | list[bytes]]
) -> None:
    gw, _ = fuzz_target
    assert gw.handle is not None
    replies = run_session(gw.handle.port, steps)
    internal = INTERNAL_ERROR.encode()
    assert not any(internal in r for r in replies), (steps, replies)
    assert gw.thread.is_alive()


def test_after_the_fuzzing_the_gateway_still_relays(
    fuzz_target: tuple[GatewayThread, SmtpSink],
) -> None:
    gw, sink = fuzz_target
    still_relays(gw, sink)
    assert gw.handle is not None and gw.handle.handler.open_sessions <= 1
