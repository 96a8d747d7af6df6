"""Fixtures for the SMTP gateway tests: a controllable clock, an Enforcer on a throw-away
SQLite file, an in-loop aiosmtpd next hop that can inject errors, and the gateway itself."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.smtp import SMTP, Envelope, Session

from drossel.app.enforcer import Enforcer
from drossel.config import Config, GatewayConfig
from drossel.core.policy import Policy
from drossel.gateway.server import GatewayHandle, start_gateway
from drossel.runtime import build_enforcer

T0 = datetime(2026, 11, 2, 8, 0, tzinfo=UTC)
CURRENT_SE = "15.2.2562.53"
OLD_2013 = "15.0.1497.2"  # Exchange 2013 CU23, out of support


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = Path(__file__).resolve().parent
    for item in items:
        if here in Path(str(item.path)).resolve().parents:
            item.add_marker(pytest.mark.gateway)


class MutableClock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kwargs: float) -> None:
        self.now += timedelta(**kwargs)


def exchange_message(
    build: str = CURRENT_SE,
    server: str = "EX01.contoso.example",
    subject: str = "hello",
    body: str = "Hello from on-premises.\r\n",
    extra_headers: str = "",
) -> bytes:
    text = (
        f"Received: from {server} (10.1.2.3) by {server} (10.1.2.3) with Microsoft SMTP"
        f" Server\r\n (version=TLS1_2, cipher=TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384) id\r\n"
        f" {build}; Mon, 2 Nov 2026 09:00:00 +0100\r\n"
        f"From: Alice <alice@contoso.example>\r\n"
        f"To: <bob@fabrikam.example>\r\n"
        f"Subject: {subject}\r\n"
        f"Message-ID: <{subject.replace(' ', '.')}@contoso.example>\r\n"
        f"{extra_headers}"
        f"\r\n{body}"
    )
    return text.encode("utf-8")


@dataclass
class Delivered:
    mail_from: str
    rcpt_tos: list[str]
    mail_options: list[str]
    data: bytes


@dataclass
class NextHopSink:
    """aiosmtpd next hop in the test's own loop; ``replies[stage]`` injects answers."""

    host: str = "127.0.0.1"
    port: int = 0
    data_reply: str = "250 2.0.0 Ok: queued as XYZ"
    replies: dict[str, Callable[[str], str | None] | str] = field(default_factory=dict)
    messages: list[Delivered] = field(default_factory=list)
    mails: list[str] = field(default_factory=list)
    peers: list[Any] = field(default_factory=list)
    data_delay: float = 0.0
    server: asyncio.Server | None = None
    tls_context: Any = None
    tls_sessions: int = 0
    smtputf8: bool = True
    idle_timeout: float = 300.0

    def _rule(self, stage: str, arg: str) -> str | None:
        rule = self.replies.get(stage)
        if rule is None:
            return None
        return rule(arg) if callable(rule) else rule

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        self.mails.append(address)
        self.peers.append(session.peer)
        reply = self._rule("MAIL", address)
        if reply:
            return reply
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 2.1.0 Sender ok"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        reply = self._rule("RCPT", address)
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 Recipient ok"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if session.ssl is not None:
            self.tls_sessions += 1
        if self.data_delay:
            await asyncio.sleep(self.data_delay)
        reply = self._rule("DATA", "")
        if reply:
            return reply
        raw = envelope.original_content or b""
        assert isinstance(raw, bytes)
        self.messages.append(
            Delivered(
                str(envelope.mail_from), list(envelope.rcpt_tos), list(envelope.mail_options), raw
            )
        )
        return self.data_reply

    async def start(self) -> NextHopSink:
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(
            lambda: SMTP(
                self,
                hostname="nexthop.drossel.test",
                enable_SMTPUTF8=self.smtputf8,
                tls_context=self.tls_context,
                timeout=self.idle_timeout,
                loop=loop,
            ),
            host=self.host,
            port=self.port,
        )
        self.port = int(self.server.sockets[0].getsockname()[1])
        return self

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None

    @property
    def relay(self) -> str:
        return f"{self.host}:{self.port}"


@pytest.fixture
def clock() -> MutableClock:
    return MutableClock(T0)


@pytest.fixture
def enforcer(tmp_path: Path, clock: MutableClock) -> Enforcer:
    # the test client is not the Exchange server it names: unverified evidence (SPEC §3),
    # enforced here on purpose; tests/gateway/test_evidence.py covers the default
    config = Config(policy=Policy(enforce_unverified=True))
    enf = build_enforcer(config, clock, f"sqlite:///{tmp_path / 'drossel.db'}")
    yield enf  # type: ignore[misc]
    enf.store.dispose()


@pytest.fixture
async def sink() -> AsyncIterator[NextHopSink]:
    s = await NextHopSink().start()
    yield s
    await s.stop()


def gateway_config(relay: str, **kwargs: Any) -> GatewayConfig:
    values: dict[str, Any] = {
        "listen": "127.0.0.1:0",
        "relay": relay,
        "hostname": "gw.drossel.test",
        "relay_tls": "none",
        "timeout": 5.0,
        # the DNS tests point this at their own server (test_reverse_dns.py)
        "reverse_lookup": False,
    }
    values.update(kwargs)
    return GatewayConfig(**values)


@pytest.fixture
async def gateway(enforcer: Enforcer, sink: NextHopSink) -> AsyncIterator[GatewayHandle]:
    handle = await start_gateway(enforcer, gateway_config(sink.relay))
    yield handle
    await handle.close(grace=0.5)
