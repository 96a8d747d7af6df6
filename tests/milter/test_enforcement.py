"""drossel's milter policy on a real engine (SQLite): evidence, verdict header, caching."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from drossel.app.enforcer import Enforcer
from drossel.config import Config, MilterConfig
from drossel.milter import MessageContext
from drossel.milter.enforcement import EnforcementPolicy
from drossel.runtime import open_store

RECEIVED = (
    "from EX01.contoso.example (10.0.0.5) by mail.contoso.example (10.0.0.6) with Microsoft "
    "SMTP Server (version=TLS1_2, cipher=TLS_AES_256_GCM_SHA384) id 15.1.2507.6; "
    "Tue, 1 Sep 2026 08:00:00 +0000"
)


@pytest.fixture
def enforcer(tmp_path: Path) -> Iterator[Enforcer]:
    store = open_store(f"sqlite:///{tmp_path / 'state.db'}")
    engine = Enforcer(store, Config(), lambda: datetime(2026, 9, 1, 8, tzinfo=UTC))
    yield engine
    store.dispose()


def context(**macros: str) -> MessageContext:
    return MessageContext(
        helo="mail.contoso.example", macros=macros, headers=[("Received", RECEIVED)]
    )


async def test_verified_name_from_the_macros_starts_the_schedule(enforcer: Enforcer) -> None:
    """{client_name} (forward-confirmed) equal to the Exchange hop's host: verified evidence,
    so the server's schedule applies (stage 1); the same message from a client Postfix could
    not confirm is only recorded (applied stage 0, SPEC §3)."""
    policy = EnforcementPolicy(enforcer, MilterConfig())
    verified = await policy.on_end_of_headers(
        context(client_addr="203.0.113.25", client_name="mail.contoso.example")
    )
    assert verified.action == "accept"
    ((name, value),) = verified.add_headers
    assert name == "X-Drossel"
    assert value == "server=mail.contoso.example; build=15.1.2507.6; status=unsupported; stage=1"

    unverified = await policy.on_end_of_headers(
        context(
            client_addr="203.0.113.26", client_name="unknown", client_ptr="mail.contoso.example"
        )
    )
    ((_, value),) = unverified.add_headers
    assert value.endswith("stage=0")


async def test_no_header_when_switched_off(enforcer: Enforcer) -> None:
    policy = EnforcementPolicy(enforcer, MilterConfig(add_header=False))
    verdict = await policy.on_end_of_headers(context(client_addr="203.0.113.25"))
    assert verdict.action == "accept" and verdict.add_headers == ()


async def test_evidence_is_computed_once_per_client(enforcer: Enforcer) -> None:
    policy = EnforcementPolicy(enforcer, MilterConfig())
    first = policy.client(context(client_addr="203.0.113.25", client_name="unknown"))
    again = policy.client(context(client_addr="203.0.113.25", client_name="unknown"))
    other = policy.client(context(client_addr="203.0.113.25", client_name="mail.contoso.example"))
    assert first is again  # remembered
    assert first.name is None and other.name == "mail.contoso.example"


async def test_evidence_cache_is_bounded(enforcer: Enforcer) -> None:
    policy = EnforcementPolicy(enforcer, MilterConfig())
    for i in range(EnforcementPolicy.CLIENT_CACHE + 10):
        info = policy.client(context(client_addr=f"10.0.{i // 256}.{i % 256}"))
        assert info.addr == f"10.0.{i // 256}.{i % 256}"
    assert len(policy._clients) <= EnforcementPolicy.CLIENT_CACHE
