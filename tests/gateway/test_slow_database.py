"""A locked database never stalls SMTP sessions (issue 10): the message path makes no database
write, and the one read it may make (a server not in memory) runs in a thread for at most
``[storage] read_timeout``.

Real PostgreSQL: another connection holds ``LOCK TABLE servers IN ACCESS EXCLUSIVE MODE``, so
every read and write of server records waits.  While that lock is held, a known server and a
server never seen before both get their answers through the real gateway, within the read
timeout (not the 15 s statement timeout); only after they did is the lock released, and the
queued first detection is written.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import aiosmtplib
import psycopg
import pytest

from drossel.config import Config
from drossel.core.policy import Policy
from drossel.gateway.server import start_gateway
from drossel.runtime import build_enforcer

from .conftest import (
    CURRENT_SE,
    OLD_2013,
    T0,
    MutableClock,
    NextHopSink,
    exchange_message,
    gateway_config,
)

_TESTS = Path(__file__).resolve().parents[1]
if str(_TESTS) not in sys.path:
    sys.path.insert(0, str(_TESTS))

from pg import migrated_postgres_database  # noqa: E402

pytestmark = pytest.mark.postgres


@pytest.fixture
def pg_url() -> Iterator[str]:
    with migrated_postgres_database("drossel_slow") as url:
        yield url


async def send(port: int, server: str, build: str) -> str:
    try:
        _, text = await aiosmtplib.send(
            exchange_message(build=build, server=server),
            sender="alice@contoso.example",
            recipients=["bob@fabrikam.example"],
            hostname="127.0.0.1",
            port=port,
            start_tls=False,
            timeout=30,
        )
    except aiosmtplib.SMTPResponseException as exc:
        return f"{exc.code} {exc.message}"
    return f"250 {text}"


async def test_a_locked_database_does_not_stall_sessions(pg_url: str, sink: NextHopSink) -> None:
    config = Config(policy=Policy(enforce_unverified=True))
    config = config.model_copy(
        update={"storage": config.storage.model_copy(update={"read_timeout": 1.0})}
    )
    enforcer = build_enforcer(config, MutableClock(T0), pg_url)
    gateway = await start_gateway(enforcer, gateway_config(sink.relay))
    libpq = pg_url.replace("postgresql+psycopg://", "postgresql://")
    try:
        assert (await send(gateway.port, "known.contoso.example", OLD_2013)).startswith("250")
        await asyncio.to_thread(enforcer.flush)
        with psycopg.connect(libpq) as locker:
            locker.execute("BEGIN")
            locker.execute("LOCK TABLE servers IN ACCESS EXCLUSIVE MODE")
            started = time.monotonic()
            answers = await asyncio.wait_for(
                asyncio.gather(
                    send(gateway.port, "known.contoso.example", OLD_2013),
                    send(gateway.port, "new.contoso.example", OLD_2013),
                    send(gateway.port, "patched.contoso.example", CURRENT_SE),
                ),
                timeout=12,  # well inside the 15 s statement timeout: the lock still holds
            )
            waited = time.monotonic() - started
            # the lock is still held here: every session was answered without the database
            assert [a[:3] for a in answers] == ["250", "250", "250"], answers
            print(f"3 sessions answered in {waited:.2f} s while the table was locked")
            # within the read timeout (1 s) plus the SMTP exchange itself, nowhere near the
            # 15 s statement timeout: the sessions did not wait for the lock
            assert waited < config.storage.read_timeout + 3.0, waited
            locker.execute("ROLLBACK")
        await asyncio.to_thread(enforcer.flush)  # the queued first detections are written now
        stored = enforcer.store.get_server("default", "new.contoso.example")
        assert stored is not None and stored.record.first_detected == T0
        assert enforcer.store.get_server("default", "patched.contoso.example") is not None
    finally:
        await gateway.close(grace=0.5)
        enforcer.store.dispose()
