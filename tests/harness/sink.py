"""An aiosmtpd based SMTP sink on loopback, used as the final destination in e2e tests.

The sink runs its own asyncio event loop in a daemon thread, so it works the same from
synchronous tests (smtplib, subprocess) and from async tests.  It stores every accepted
message (envelope and parsed headers) and can be told to answer given SMTP codes at
MAIL, RCPT or DATA stage.

    with SmtpSink(name="final") as sink:
        sink.set_reply("DATA", "451 4.3.0 try again later")
        ...
        sink.clear_replies()
        msgs = sink.wait_for(1, timeout=10)
        assert msgs[0].message["Subject"] == "hi"
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session

__all__ = ["ReceivedMessage", "ReplyRule", "SmtpSink"]

#: A reply rule is a fixed SMTP reply ("450 4.7.1 go away") or a callable that gets the
#: envelope (and, for RCPT, the address) and returns a reply or None for "accept".
ReplyRule = str | Callable[..., str | None]


@dataclass
class ReceivedMessage:
    """One message accepted by the sink."""

    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    peer: Any
    helo: str | None
    received_at: float = field(default_factory=time.time)
    message: EmailMessage = field(init=False, repr=False)

    def __post_init__(self) -> None:
        parsed = BytesParser(policy=policy.default).parsebytes(self.data)
        assert isinstance(parsed, EmailMessage)
        self.message = parsed

    @property
    def headers(self) -> list[tuple[str, str]]:
        """All header (name, value) pairs in order, as received."""
        return [(k, str(v)) for k, v in self.message.items()]

    def header(self, name: str) -> str | None:
        value = self.message.get(name)
        return None if value is None else str(value)

    def header_all(self, name: str) -> list[str]:
        return [str(v) for v in self.message.get_all(name, [])]

    @property
    def text(self) -> str:
        return self.data.decode("utf-8", "replace")


class _Handler:
    def __init__(self, sink: SmtpSink) -> None:
        self.sink = sink

    def _rule(self, stage: str, *args: Any) -> str | None:
        rule = self.sink._replies.get(stage)
        if rule is None:
            return None
        if callable(rule):
            return rule(*args)
        return rule

    async def handle_MAIL(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        reply = self._rule("MAIL", envelope, address)
        if reply:
            return reply
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 OK"

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        reply = self._rule("RCPT", envelope, address)
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        reply = self._rule("DATA", envelope)
        if reply:
            with self.sink._cond:
                self.sink.rejected.append((reply, envelope.mail_from, list(envelope.rcpt_tos)))
                self.sink._cond.notify_all()
            return reply
        raw = envelope.original_content or envelope.content or b""
        if isinstance(raw, str):
            raw = raw.encode("utf-8", "surrogateescape")
        msg = ReceivedMessage(
            # aiosmtpd reports the null sender as "<>"; store it as ""
            mail_from="" if envelope.mail_from in (None, "<>") else envelope.mail_from,
            rcpt_tos=list(envelope.rcpt_tos),
            data=bytes(raw),
            peer=session.peer,
            helo=session.host_name,
        )
        with self.sink._cond:
            self.sink._messages.append(msg)
            self.sink._cond.notify_all()
        return "250 2.0.0 OK: queued"


class SmtpSink:
    """SMTP sink on ``host`` (default 127.0.0.1) and a free port (or ``port``)."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        name: str = "sink",
        hostname: str | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.name = name
        self.hostname = hostname or f"{name}.drossel.test"
        self._messages: list[ReceivedMessage] = []
        self.rejected: list[tuple[str, str | None, list[str]]] = []
        self._replies: dict[str, ReplyRule] = {}
        self._cond = threading.Condition()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------
    def start(self, timeout: float = 5.0) -> SmtpSink:
        if self._thread is not None:
            return self
        loop = asyncio.new_event_loop()
        ready = threading.Event()
        error: list[BaseException] = []

        def factory() -> SMTP:
            # hostname given explicitly: aiosmtpd would otherwise call getfqdn(), which
            # can stall on sandboxes without working DNS.
            return SMTP(
                _Handler(self),
                hostname=self.hostname,
                enable_SMTPUTF8=True,
                decode_data=False,
                ident=f"drossel-test-{self.name}",
            )

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                self._server = loop.run_until_complete(
                    loop.create_server(factory, self.host, self.port)
                )
                self.port = self._server.sockets[0].getsockname()[1]
            except BaseException as exc:
                error.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                self._server.close()
                loop.run_until_complete(self._server.wait_closed())
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.close()

        self._loop = loop
        self._thread = threading.Thread(target=run, name=f"smtp-sink-{self.name}", daemon=True)
        self._thread.start()
        if not ready.wait(timeout):
            raise TimeoutError(f"SMTP sink {self.name} did not start within {timeout}s")
        if error:
            self._thread = None
            raise error[0]
        return self

    def stop(self, timeout: float = 5.0) -> None:
        if self._thread is None or self._loop is None:
            return
        loop = self._loop
        if not loop.is_closed():
            loop.call_soon_threadsafe(loop.stop)
        self._thread.join(timeout)
        self._thread = None
        self._loop = None

    def __enter__(self) -> SmtpSink:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- behaviour -------------------------------------------------------------------
    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)

    @property
    def next_hop(self) -> str:
        """Postfix next-hop notation for this sink, e.g. ``[127.0.0.1]:34567``."""
        return f"[{self.host}]:{self.port}"

    def set_reply(self, stage: str, reply: ReplyRule | None) -> None:
        """Answer ``stage`` (MAIL, RCPT or DATA) with ``reply`` (None restores 250)."""
        stage = stage.upper()
        if stage not in {"MAIL", "RCPT", "DATA"}:
            raise ValueError(f"unsupported stage {stage!r}")
        if reply is None:
            self._replies.pop(stage, None)
        else:
            self._replies[stage] = reply

    def clear_replies(self) -> None:
        self._replies.clear()

    # -- inspection ------------------------------------------------------------------
    @property
    def messages(self) -> list[ReceivedMessage]:
        with self._cond:
            return list(self._messages)

    def clear(self) -> None:
        with self._cond:
            self._messages.clear()
            self.rejected.clear()

    def wait_for(
        self,
        count: int = 1,
        timeout: float = 15.0,
        predicate: Callable[[ReceivedMessage], bool] | None = None,
    ) -> list[ReceivedMessage]:
        """Wait until at least ``count`` (matching) messages arrived; return them."""

        def matching() -> list[ReceivedMessage]:
            return [m for m in self._messages if predicate is None or predicate(m)]

        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = matching()
                if len(found) >= count:
                    return found
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(
                        f"sink {self.name}: expected {count} message(s) within {timeout}s, "
                        f"got {len(found)} (total received {len(self._messages)})"
                    )
                self._cond.wait(min(remaining, 0.5))

    def assert_quiet(self, duration: float) -> None:
        """Assert that no message arrives within ``duration`` seconds."""
        before = len(self.messages)
        time.sleep(duration)
        after = self.messages
        if len(after) != before:
            raise AssertionError(f"sink {self.name} unexpectedly received {after[before:]!r}")
