"""The client's forward-confirmed name, PTR name and verified TLS name (issue 9, SPEC §3).

A real dnsmasq on loopback serves the zone: 127.0.0.2 has a PTR whose A record leads back
(confirmed), 127.0.0.3 a PTR whose A record is another address (not confirmed), 127.0.0.4 no
PTR (NXDOMAIN); a bound UDP socket that never answers stands for a DNS server that times out.
"""

from __future__ import annotations

import asyncio
import ssl
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiosmtplib
import pytest

from drossel.app.enforcer import ClientInfo, Enforcer
from drossel.gateway.reverse_dns import ReverseLookup, ReverseName
from drossel.gateway.server import GatewayHandle, start_gateway

from .conftest import NextHopSink, exchange_message, gateway_config
from .test_gateway import make_certificate

_TESTS = Path(__file__).resolve().parents[1]
if str(_TESTS) not in sys.path:
    sys.path.insert(0, str(_TESTS))

from harness.dns import DnsServer, dns_unavailable_reason, silent_udp_port  # noqa: E402

GOOD, LIAR = "good.drossel.test", "liar.drossel.test"


@pytest.fixture(scope="module")
def dns_server() -> Iterator[DnsServer]:
    reason = dns_unavailable_reason()
    if reason:
        pytest.skip(reason)
    with DnsServer(hosts={GOOD: "127.0.0.2", LIAR: "127.0.0.9"}, ptrs={"127.0.0.3": LIAR}) as d:
        yield d


async def test_lookup_confirms_only_a_name_that_leads_back(dns_server: DnsServer) -> None:
    lookup = ReverseLookup([dns_server.host], dns_server.port, timeout=2.0)
    assert await lookup.lookup("127.0.0.2") == ReverseName(ptr=GOOD, name=GOOD)
    assert await lookup.lookup("::ffff:127.0.0.2") == ReverseName(ptr=GOOD, name=GOOD)
    assert await lookup.lookup("127.0.0.3") == ReverseName(ptr=LIAR, name=None)
    assert await lookup.lookup("127.0.0.4") == ReverseName()
    assert await lookup.lookup("not an address") == ReverseName()
    assert await lookup.lookup(None) == ReverseName()


async def test_a_dns_server_that_does_not_answer_gives_no_name() -> None:
    with silent_udp_port() as port:
        lookup = ReverseLookup(["127.0.0.1"], port, timeout=0.3)
        result = await asyncio.wait_for(lookup.lookup("127.0.0.2"), 10)
    assert result == ReverseName()


def record_clients(enforcer: Enforcer) -> list[ClientInfo]:
    """Keep what the gateway hands the (real) engine for each message."""
    seen: list[ClientInfo] = []
    process = enforcer.process_async

    async def recording(headers: Any, client: ClientInfo, *args: Any, **kwargs: Any) -> Any:
        seen.append(client)
        return await process(headers, client, *args, **kwargs)

    enforcer.process_async = recording  # type: ignore[method-assign]
    return seen


async def send_from(gw: GatewayHandle, source: str, subject: str, **kwargs: Any) -> None:
    _, text = await aiosmtplib.send(
        exchange_message(subject=subject),
        sender="alice@contoso.example",
        recipients=["bob@fabrikam.example"],
        hostname="127.0.0.1",
        port=gw.port,
        source_address=(source, 0),
        local_hostname="ex01.contoso.example",
        timeout=10,
        **kwargs,
    )
    assert text.startswith("2.0.0 Ok")


async def test_gateway_hands_confirmed_name_and_ptr_to_the_engine(
    enforcer: Enforcer, sink: NextHopSink, dns_server: DnsServer
) -> None:
    seen = record_clients(enforcer)
    config = gateway_config(sink.relay, reverse_lookup=True, dns_resolver=dns_server.address)
    gw = await start_gateway(enforcer, config)
    try:
        for source in ("127.0.0.2", "127.0.0.3", "127.0.0.4"):
            await send_from(gw, source, f"from {source}", start_tls=False)
    finally:
        await gw.close(grace=0.5)
    assert [(c.addr, c.name, c.ptr, c.helo) for c in seen] == [
        ("127.0.0.2", GOOD, GOOD, "ex01.contoso.example"),
        ("127.0.0.3", None, LIAR, "ex01.contoso.example"),
        ("127.0.0.4", None, None, "ex01.contoso.example"),
    ]
    # our Received: line names only the confirmed name, like Postfix's
    tops = [m.data.split(b"\r\n", 1)[0].decode() for m in sink.messages]
    assert tops[0] == f"Received: from ex01.contoso.example ({GOOD} [127.0.0.2])"
    assert tops[1] == "Received: from ex01.contoso.example (unknown [127.0.0.3])"


async def test_a_silent_dns_server_does_not_stop_the_mail(
    enforcer: Enforcer, sink: NextHopSink
) -> None:
    seen = record_clients(enforcer)
    with silent_udp_port() as port:
        config = gateway_config(
            sink.relay, reverse_lookup=True, dns_resolver=f"127.0.0.1:{port}", dns_timeout=0.3
        )
        gw = await start_gateway(enforcer, config)
        try:
            await send_from(gw, "127.0.0.2", "slow dns", start_tls=False)
        finally:
            await gw.close(grace=0.5)
    assert (seen[0].name, seen[0].ptr) == (None, None)
    assert len(sink.messages) == 1


async def test_tls_name_only_from_a_certificate_verified_against_the_ca(
    enforcer: Enforcer, sink: NextHopSink, tmp_path: Path
) -> None:
    pytest.importorskip("cryptography")
    gw_cert, gw_key = make_certificate(tmp_path, "gw.drossel.test")
    client_cert, client_key = make_certificate(tmp_path, "ex01.contoso.example")
    seen = record_clients(enforcer)
    config = gateway_config(sink.relay, tls_cert=gw_cert, tls_key=gw_key, tls_client_ca=client_cert)
    gw = await start_gateway(enforcer, config)
    try:
        with_cert = ssl.create_default_context(cafile=gw_cert)
        with_cert.check_hostname = False
        with_cert.load_cert_chain(client_cert, client_key)
        await send_from(gw, "127.0.0.1", "with cert", start_tls=True, tls_context=with_cert)
        without = ssl.create_default_context(cafile=gw_cert)
        without.check_hostname = False
        await send_from(gw, "127.0.0.1", "no cert", start_tls=True, tls_context=without)
        await send_from(gw, "127.0.0.1", "plain", start_tls=False)
    finally:
        await gw.close(grace=0.5)
    assert [c.tls_name for c in seen] == ["ex01.contoso.example", None, None]
