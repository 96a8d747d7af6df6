"""smtp client --> drossel gateway --> a real (private) Postfix --> sink."""

from __future__ import annotations

import asyncio
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiosmtplib
import pytest

from drossel.app.enforcer import Enforcer
from drossel.gateway.server import start_gateway

from .conftest import OLD_2013, MutableClock, exchange_message, gateway_config

_TESTS = Path(__file__).resolve().parents[1]
if str(_TESTS) not in sys.path:
    sys.path.insert(0, str(_TESTS))

from harness.postfix import PostfixInstance, instance_directory, unavailable_reason  # noqa: E402
from harness.sink import SmtpSink  # noqa: E402

pytestmark = pytest.mark.postfix


@pytest.fixture
def postfix_next_hop() -> Iterator[tuple[Any, Any]]:
    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    with instance_directory() as base, SmtpSink(name="final") as sink:
        postfix = PostfixInstance(
            base,
            "gwnext",
            relayhost=sink.next_hop,
            main={
                "smtpd_recipient_restrictions": (
                    "check_recipient_access inline:{nobody@fabrikam.example=REJECT}"
                ),
            },
        )
        postfix.start()
        try:
            yield postfix, sink
        finally:
            postfix.stop()


async def test_real_postfix_next_hop(
    enforcer: Enforcer, clock: MutableClock, postfix_next_hop: tuple[Any, Any]
) -> None:
    postfix, sink = postfix_next_hop
    gw = await start_gateway(enforcer, gateway_config(f"127.0.0.1:{postfix.port}"))
    try:
        errors, text = await aiosmtplib.send(
            exchange_message(build=OLD_2013, server="EX2013.contoso.example"),
            sender="alice@contoso.example",
            recipients=["bob@fabrikam.example", "nobody@fabrikam.example"],
            hostname=gw.host,
            port=gw.port,
            start_tls=False,
            timeout=15,
        )
        # Postfix's own replies, passed through unchanged
        assert re.fullmatch(r"2\.0\.0 Ok: queued as [0-9A-Za-z]+", text), text
        refused = errors["nobody@fabrikam.example"]
        assert refused.code == 554
        assert "Recipient address rejected: Access denied" in refused.message
        queue_id = text.rsplit(" ", 1)[1]
        assert queue_id in await asyncio.to_thread(postfix.wait_log, queue_id)
        delivered = await asyncio.to_thread(sink.wait_for, 1, 20)
        assert delivered[0].rcpt_tos == ["bob@fabrikam.example"]
        assert "by gw.drossel.test (drossel)" in delivered[0].text

        # stage 8: the block reply comes from drossel, Postfix never sees the message
        clock.advance(days=95)
        with pytest.raises(aiosmtplib.SMTPDataError) as info:
            await aiosmtplib.send(
                exchange_message(build=OLD_2013, server="EX2013.contoso.example", subject="two"),
                sender="alice@contoso.example",
                recipients=["bob@fabrikam.example"],
                hostname=gw.host,
                port=gw.port,
                start_tls=False,
                timeout=15,
            )
        assert info.value.code == 550 and info.value.message.startswith("5.7.230 ")
        await asyncio.sleep(0.5)
        assert len(sink.messages) == 1
    finally:
        await gw.close(grace=0.5)
