"""Next-hop connections reused across client sessions (issue 12), never at the cost of mail."""

from __future__ import annotations

import asyncio

import aiosmtplib

from drossel.app.enforcer import Enforcer
from drossel.gateway.server import GatewayHandle, start_gateway

from .conftest import NextHopSink, exchange_message, gateway_config


async def send(gw: GatewayHandle, subject: str) -> str:
    _, text = await aiosmtplib.send(
        exchange_message(subject=subject),
        sender="alice@contoso.example",
        recipients=["bob@fabrikam.example"],
        hostname=gw.host,
        port=gw.port,
        start_tls=False,
        timeout=10,
    )
    return text


async def sessions(enforcer: Enforcer, sink: NextHopSink, count: int, **config: object) -> int:
    """Send ``count`` messages, one client session each; the next-hop connections used."""
    gw = await start_gateway(enforcer, gateway_config(sink.relay, **config))
    try:
        for n in range(count):
            assert await send(gw, f"m{n}") == "2.0.0 Ok: queued as XYZ"
    finally:
        await gw.close(grace=0.5)
    assert len(sink.messages) == count
    return len(set(sink.peers))


async def test_client_sessions_share_one_next_hop_connection(
    enforcer: Enforcer, sink: NextHopSink
) -> None:
    assert await sessions(enforcer, sink, 3) == 1


async def test_pool_size_zero_connects_for_every_session(
    enforcer: Enforcer, sink: NextHopSink
) -> None:
    assert await sessions(enforcer, sink, 3, relay_pool_size=0) == 3


async def test_reuse_limit_caps_transactions_per_connection(
    enforcer: Enforcer, sink: NextHopSink
) -> None:
    assert await sessions(enforcer, sink, 5, relay_reuse_limit=2) == 3


async def test_a_connection_the_next_hop_closed_is_not_reused(enforcer: Enforcer) -> None:
    sink = await NextHopSink(idle_timeout=0.3).start()
    gw = await start_gateway(enforcer, gateway_config(sink.relay))
    try:
        await send(gw, "first")
        assert gw.handler.pool.idle == 1
        # the next hop ends the idle session (421 timeout); wait for that, bounded
        for _ in range(100):
            if not gw.handler.pool._idle[0][1].connected:
                break
            await asyncio.sleep(0.05)
        assert await send(gw, "second") == "2.0.0 Ok: queued as XYZ"
    finally:
        await gw.close(grace=0.5)
        await sink.stop()
    assert [m.data.count(b"Subject: second") for m in sink.messages] == [0, 1]
    assert len(set(sink.peers)) == 2


async def test_a_client_gone_mid_transaction_closes_its_next_hop_connection(
    gateway: GatewayHandle, sink: NextHopSink
) -> None:
    client = aiosmtplib.SMTP(hostname=gateway.host, port=gateway.port, start_tls=False)
    await client.connect()
    await client.ehlo()
    await client.mail("alice@contoso.example")
    await client.rcpt("bob@fabrikam.example")
    client.close()  # no DATA, no QUIT
    for _ in range(100):
        if gateway.handler.open_sessions == 0:
            break
        await asyncio.sleep(0.05)
    assert gateway.handler.open_sessions == 0
    assert gateway.handler.pool.idle == 0  # never lent to the next client mid-transaction
    assert await send(gateway, "after") == "2.0.0 Ok: queued as XYZ"
    assert len(sink.messages) == 1
