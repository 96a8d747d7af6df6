"""Identity forwarding with a real Postfix next hop that trusts loopback (issue 10).

client (127.0.0.2 or 127.0.0.1) --> drossel gateway (127.0.0.1) --XCLIENT--> Postfix --> sink

Postfix's ``mynetworks`` is ``127.0.0.1/32`` only and it accepts XCLIENT from the gateway: an
outside client (127.0.0.2) may only send to the next hop's own domain, as if it had connected
to Postfix itself; without XCLIENT every client would look like 127.0.0.1, a trusted network.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiosmtplib
import pytest

from drossel.app.enforcer import Enforcer
from drossel.gateway.server import start_gateway

from .conftest import exchange_message, gateway_config

_TESTS = Path(__file__).resolve().parents[1]
if str(_TESTS) not in sys.path:
    sys.path.insert(0, str(_TESTS))

from harness.dns import DnsServer, dns_unavailable_reason  # noqa: E402
from harness.postfix import PostfixInstance, instance_directory, unavailable_reason  # noqa: E402
from harness.sink import SmtpSink  # noqa: E402

pytestmark = pytest.mark.postfix

OWN_DOMAIN = "nexthop.example"


@pytest.fixture
def trusting_postfix() -> Iterator[tuple[Any, Any]]:
    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    with instance_directory() as base, SmtpSink(name="final") as sink:
        postfix = PostfixInstance(
            base,
            "xcnext",
            relayhost=sink.next_hop,
            main={
                "mynetworks": "127.0.0.1/32",
                "relay_domains": OWN_DOMAIN,
                "smtpd_relay_restrictions": "permit_mynetworks, reject_unauth_destination",
                "smtpd_authorized_xclient_hosts": "127.0.0.1",
                # a PTR name is only ever a reverse name, never the client name
                "smtpd_client_restrictions": (
                    "check_reverse_client_hostname_access inline:{liar.drossel.test=REJECT}"
                ),
            },
        )
        postfix.start()
        try:
            yield postfix, sink
        finally:
            postfix.stop()


async def send_from(source: str, port: int, rcpt: str, subject: str) -> tuple[int, str]:
    """Send one message from ``source`` (a loopback address); the client's final reply."""
    client = aiosmtplib.SMTP(
        hostname="127.0.0.1",
        port=port,
        source_address=(source, 0),
        local_hostname="mail.outside.example",
        start_tls=False,
        timeout=15,
    )
    await client.connect()
    try:
        await client.mail("alice@contoso.example")
        try:
            await client.rcpt(rcpt)
        except aiosmtplib.SMTPRecipientRefused as exc:
            return exc.code, exc.message
        response = await client.data(exchange_message(subject=subject))
        return response.code, response.message
    finally:
        await client.quit()


async def test_outside_client_cannot_relay_through_a_next_hop_that_trusts_loopback(
    enforcer: Enforcer, trusting_postfix: tuple[Any, Any]
) -> None:
    postfix, sink = trusting_postfix
    # idle next-hop connections stay poolable for the whole test: this test is about whom a
    # connection speaks for, not about how long it may idle (a loaded machine is slow)
    config = gateway_config(f"127.0.0.1:{postfix.port}", relay_idle_seconds=120)
    gw = await start_gateway(enforcer, config)
    try:
        # an outside client to a foreign domain: Postfix judges 127.0.0.2 and refuses
        code, text = await send_from("127.0.0.2", gw.port, "bob@fabrikam.example", "foreign")
        assert code == 554, text
        assert "Relay access denied" in text
        # ...but mail for the next hop's own domain is delivered
        code, text = await send_from("127.0.0.2", gw.port, f"bob@{OWN_DOMAIN}", "own")
        assert code == 250, text
        delivered = await asyncio.to_thread(sink.wait_for, 1, 20)
        assert delivered[0].rcpt_tos == [f"bob@{OWN_DOMAIN}"]
        # Postfix logged the real client, with the name unavailable (no confirmed name)
        log = await asyncio.to_thread(postfix.wait_log, "client=unknown[127.0.0.2]")
        assert "helo=<mail.outside.example>" in log
        # control: a client inside mynetworks may relay, so the refusal above was XCLIENT's
        code, text = await send_from("127.0.0.1", gw.port, "bob@fabrikam.example", "inside")
        assert code == 250, text
        delivered = await asyncio.to_thread(sink.wait_for, 2, 20)
        assert sorted(m.rcpt_tos[0] for m in delivered) == [
            "bob@fabrikam.example",
            f"bob@{OWN_DOMAIN}",
        ]
        # the pooled connection that speaks for 127.0.0.1 is never lent to 127.0.0.2
        assert gw.handler.pool.idle >= 1
        for attempt in ("again", "and again"):
            code, text = await send_from("127.0.0.2", gw.port, "bob@fabrikam.example", attempt)
            assert code == 554, text
        # ...while 127.0.0.1 gets it back without a new hand-over.  Postfix logs through
        # postlogd, a separate process: wait for the last refusal's line (its smtpd logged the
        # connect before it) and, after the reuse, for the reused session's message line.
        log = await asyncio.to_thread(postfix.wait_log, "Relay access denied", count=3)
        connects = log.count("]: connect from ")
        created = gw.handler.pool.created
        code, text = await send_from("127.0.0.1", gw.port, "carol@fabrikam.example", "reuse")
        assert code == 250, text
        assert gw.handler.pool.created == created
        log = await asyncio.to_thread(postfix.wait_log, "client=unknown[127.0.0.1]", count=2)
        assert log.count("]: connect from ") == connects
    finally:
        await gw.close(grace=0.5)


async def test_next_hop_gets_only_the_forward_confirmed_name(
    enforcer: Enforcer, trusting_postfix: tuple[Any, Any]
) -> None:
    reason = dns_unavailable_reason()
    if reason:
        pytest.skip(reason)
    postfix, sink = trusting_postfix
    zone = DnsServer(
        hosts={"good.drossel.test": "127.0.0.2", "liar.drossel.test": "127.0.0.9"},
        ptrs={"127.0.0.3": "liar.drossel.test"},
    )
    with zone:
        config = gateway_config(
            f"127.0.0.1:{postfix.port}", reverse_lookup=True, dns_resolver=zone.address
        )
        gw = await start_gateway(enforcer, config)
        try:
            code, text = await send_from("127.0.0.2", gw.port, f"bob@{OWN_DOMAIN}", "good")
            assert code == 250, text
            # the unconfirmed PTR name reached Postfix as REVERSE_NAME (and was refused there)
            code, text = await send_from("127.0.0.3", gw.port, f"bob@{OWN_DOMAIN}", "liar")
            assert code == 554 and "Client host rejected" in text, text
        finally:
            await gw.close(grace=0.5)
    log = await asyncio.to_thread(postfix.wait_log, "from unknown[127.0.0.3]")
    assert "client=good.drossel.test[127.0.0.2]" in log
    assert "liar.drossel.test[" not in log  # never the client name
    assert len(await asyncio.to_thread(sink.wait_for, 1, 20)) == 1
