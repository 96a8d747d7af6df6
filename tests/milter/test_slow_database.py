"""A locked database never stalls milter sessions (issue 10), as ``tests/gateway/
test_slow_database.py`` shows for the gateway.

Real PostgreSQL: another connection holds ``LOCK TABLE servers IN ACCESS EXCLUSIVE MODE``.
While it is held, the real milter server (drossel's enforcement policy, negotiated as
``drossel milter`` does) answers a known server and a server never seen before with its own
verdict (accept plus our ``X-Drossel`` header), within ``[storage] read_timeout`` and far
inside the milter's policy timeout (after which ``on_policy_error`` would answer instead).
"""

from __future__ import annotations

import asyncio
import struct
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import milter_bytes as mb
import psycopg
import pytest
from milter_helpers import CONNECTION_START, talk

from drossel.config import Config
from drossel.milter import start_milter_server
from drossel.milter.enforcement import EnforcementPolicy
from drossel.milter.framing import PacketDecoder
from drossel.runtime import build_enforcer

_TESTS = Path(__file__).resolve().parents[1]
if str(_TESTS) not in sys.path:
    sys.path.insert(0, str(_TESTS))

from pg import migrated_postgres_database  # noqa: E402

pytestmark = pytest.mark.postgres

NOW = datetime(2026, 9, 1, 8, tzinfo=UTC)
POLICY_TIMEOUT = 20.0  # start_milter_server's default, as drossel milter runs it
READ_TIMEOUT = 1.0


@pytest.fixture
def pg_url() -> Iterator[str]:
    with migrated_postgres_database("drossel_mslow") as url:
        yield url


def received(host: str) -> bytes:
    """A header packet: an Exchange 2016 ``Received:`` line written by ``host``."""
    value = (
        f"from EX01.contoso.example (10.0.0.5) by {host} (10.0.0.6) with Microsoft SMTP "
        "Server (version=TLS1_2, cipher=TLS_AES_256_GCM_SHA384) id 15.1.2507.6; "
        "Tue, 1 Sep 2026 08:00:00 +0000"
    ).encode()
    payload = b"LReceived\x00" + value + b"\x00"
    return struct.pack(">I", len(payload)) + payload


def session(host: str) -> bytes:
    return b"".join(
        (*CONNECTION_START, mb.MACRO_MAIL, mb.MAIL, mb.MACRO_RCPT, mb.RCPT, mb.MACRO_HEADER,
         received(host), mb.EOH, mb.BODYEOB, mb.QUIT)
    )  # fmt: skip


def verdict_of(reply: bytes) -> tuple[bytes, bytes]:
    """The last reply command and the header it added (empty if none)."""
    packets = PacketDecoder().feed(reply)
    added = [p.payload for p in packets if p.command == b"h"]
    return packets[-1].command, (added[-1] if added else b"")


async def test_a_locked_database_does_not_stall_milter_sessions(
    pg_url: str, tmp_path: Path
) -> None:
    config = Config()
    storage = {"read_timeout": READ_TIMEOUT, "journal": str(tmp_path / "journal.jsonl")}
    config = config.model_copy(update={"storage": config.storage.model_copy(update=storage)})
    enforcer = build_enforcer(config, lambda: NOW, pg_url)
    server = await start_milter_server(
        EnforcementPolicy(enforcer, config.milter),
        "inet:127.0.0.1:0",
        policy_timeout=POLICY_TIMEOUT,
        on_policy_error="tempfail",  # a fallback answer would show as 't', not 'a'
        strip_headers=(config.milter.header_name,),
        recipient_step=False,
    )
    address = server.sockets[0].getsockname()[:2]
    libpq = pg_url.replace("postgresql+psycopg://", "postgresql://")
    try:
        command, _ = verdict_of(await talk(address, session("known.contoso.example")))
        assert command == b"a"
        await asyncio.to_thread(enforcer.flush)  # the known server is in the database now
        with psycopg.connect(libpq) as locker:
            locker.execute("BEGIN")
            locker.execute("LOCK TABLE servers IN ACCESS EXCLUSIVE MODE")
            started = time.monotonic()
            replies = await asyncio.gather(
                talk(address, session("known.contoso.example"), timeout=POLICY_TIMEOUT),
                talk(address, session("new.contoso.example"), timeout=POLICY_TIMEOUT),
            )
            waited = time.monotonic() - started
            # still locked here: both answered by the policy itself, not by a timeout fallback
            verdicts = [verdict_of(r) for r in replies]
            print(f"\n2 milter sessions answered in {waited:.2f} s while the table was locked")
            assert [c for c, _ in verdicts] == [b"a", b"a"], verdicts
            assert b"server=known.contoso.example" in verdicts[0][1]
            assert b"server=new.contoso.example" in verdicts[1][1]
            assert waited < READ_TIMEOUT + 3.0 < POLICY_TIMEOUT, waited
            locker.execute("ROLLBACK")
        await asyncio.to_thread(enforcer.flush)  # the queued first detection is written now
        stored = enforcer.store.get_server("default", "new.contoso.example")
        assert stored is not None and stored.record.first_detected == NOW
    finally:
        server.close()
        await server.wait_closed()
        enforcer.store.dispose()
