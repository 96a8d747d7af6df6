"""``X-Drossel`` is only ever written by us (SPEC §3, issue 10)."""

from __future__ import annotations

import aiosmtplib

from drossel.app.enforcer import Enforcer
from drossel.gateway.headers import strip_header
from drossel.gateway.server import GatewayHandle, start_gateway

from .conftest import NextHopSink, exchange_message, gateway_config

FORGED = (
    "X-Drossel: server=EX2013.contoso.example; build=15.2.2562.53; status=current; stage=0\r\n"
    "x-drossel : status=current;\r\n\tstage=0\r\n"
    "X-DROSSEL:\r\n"
)


def test_strip_removes_every_copy_with_its_folded_lines_and_nothing_else() -> None:
    message = (
        b"Received: from a\r\n\tby b\r\n"
        b"X-Drossel: forged\r\n\t continued\r\n"
        b"Subject: X-Drossel: in a value stays\r\n"
        b"X-Drossel-Other: stays\r\n"
        b"x-drossel\t: forged too\r\n"
        b"\r\n"
        b"X-Drossel: in the body stays\r\n"
    )
    assert strip_header(message, "X-Drossel") == (
        b"Received: from a\r\n\tby b\r\n"
        b"Subject: X-Drossel: in a value stays\r\n"
        b"X-Drossel-Other: stays\r\n"
        b"\r\n"
        b"X-Drossel: in the body stays\r\n"
    )
    # bare LF line ends and a message without a body
    assert strip_header(b"A: 1\nX-Drossel: x\n y\nB: 2\n", "x-drossel") == b"A: 1\nB: 2\n"


async def send(gw: GatewayHandle, message: bytes) -> None:
    errors, _ = await aiosmtplib.send(
        message,
        sender="alice@contoso.example",
        recipients=["bob@fabrikam.example"],
        hostname=gw.host,
        port=gw.port,
        start_tls=False,
        timeout=10,
    )
    assert errors == {}


async def test_downstream_sees_exactly_one_verdict_header_ours(
    gateway: GatewayHandle, sink: NextHopSink
) -> None:
    await send(gateway, exchange_message(extra_headers=FORGED, body="X-Drossel: body\r\n"))
    data = sink.messages[0].data.decode()
    head, _, body = data.partition("\r\n\r\n")
    copies = [line for line in head.split("\r\n") if line.lower().startswith("x-drossel")]
    assert copies == [
        "X-Drossel: server=ex01.contoso.example; build=15.2.2562.53; status=current; stage=0"
    ]
    assert "\tstage=0" not in head  # the forged folded line went with its field
    assert body == "X-Drossel: body\r\n"


async def test_forged_copies_are_removed_even_when_we_add_none(
    enforcer: Enforcer, sink: NextHopSink
) -> None:
    gw = await start_gateway(enforcer, gateway_config(sink.relay, add_header=False))
    try:
        await send(gw, exchange_message(extra_headers=FORGED))
    finally:
        await gw.close(grace=0.5)
    assert "x-drossel" not in sink.messages[0].data.decode().lower()
    assert "Subject: hello" in sink.messages[0].data.decode()
