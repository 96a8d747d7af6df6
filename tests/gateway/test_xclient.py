"""XCLIENT commands and the refusal to relay without them (issue 10)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import aiosmtplib
import pytest

from drossel.app.enforcer import ClientInfo, Enforcer
from drossel.config import ConfigError
from drossel.gateway.relay import NextHop
from drossel.gateway.server import is_loopback, start_gateway
from drossel.gateway.xclient import xclient_commands, xtext

from .conftest import NextHopSink, exchange_message, gateway_config

_TESTS = Path(__file__).resolve().parents[1]
if str(_TESTS) not in sys.path:
    sys.path.insert(0, str(_TESTS))

from harness.postfix import find_free_port  # noqa: E402

ALL = {"NAME", "ADDR", "PROTO", "HELO"}


def test_xtext_encodes_plus_equals_space_and_controls() -> None:
    assert xtext("mail.example") == "mail.example"
    assert xtext("a+b=c d\r\n") == "a+2Bb+3Dc+20d+0D+0A"
    assert xtext("é") == "+C3+A9"


def test_commands_carry_address_confirmed_name_helo_and_protocol() -> None:
    client = ClientInfo(addr="192.0.2.7", name="mx.example", ptr="x", helo="mx.example")
    assert xclient_commands(client, esmtp=True, supported=ALL) == [
        "XCLIENT ADDR=192.0.2.7 NAME=mx.example PROTO=ESMTP HELO=mx.example"
    ]
    # an unconfirmed PTR name is never passed on as NAME
    client = ClientInfo(addr="2001:db8::1", ptr="liar.example", helo=None)
    assert xclient_commands(client, esmtp=False, supported=ALL) == [
        "XCLIENT ADDR=IPV6:2001:db8::1 NAME=[UNAVAILABLE] PROTO=SMTP HELO=[UNAVAILABLE]"
    ]
    # Postfix also takes the unconfirmed PTR name, as REVERSE_NAME, when it announces it
    assert xclient_commands(client, esmtp=False, supported={"ADDR", "NAME", "REVERSE_NAME"}) == [
        "XCLIENT ADDR=IPV6:2001:db8::1 NAME=[UNAVAILABLE] REVERSE_NAME=liar.example"
    ]
    # only announced attributes
    assert xclient_commands(client, esmtp=True, supported={"ADDR"}) == [
        "XCLIENT ADDR=IPV6:2001:db8::1"
    ]


def test_long_values_are_split_below_the_command_limit() -> None:
    helo = "h" * 200 + " " * 40  # xtext triples the spaces
    client = ClientInfo(addr="192.0.2.7", name="n" * 250, helo=helo)
    lines = xclient_commands(client, esmtp=True, supported=ALL)
    assert len(lines) == 2
    assert all(len(line) <= 510 for line in lines)
    assert lines[0].startswith("XCLIENT ADDR=192.0.2.7 NAME=nnn")
    assert "HELO=hhh" in lines[1]


def test_loopback_detection() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("") and not is_loopback("::")
    assert not is_loopback("192.0.2.1") and not is_loopback("mx.example")


async def test_refuses_to_start_on_a_public_address_without_xclient(
    enforcer: Enforcer, sink: NextHopSink
) -> None:
    # aiosmtpd does not offer XCLIENT; the check runs before anything is bound
    with pytest.raises(ConfigError) as info:
        await start_gateway(enforcer, gateway_config(sink.relay, listen="0.0.0.0:0"))
    message = str(info.value)
    assert "XCLIENT" in message and "allow_without_xclient = true" in message
    assert "smtpd_authorized_xclient_hosts" in message


async def test_a_session_without_xclient_is_not_relayed_when_required(sink: NextHopSink) -> None:
    hop = NextHop(
        sink.host, sink.port, local_hostname="gw.drossel.test", tls="none", require_xclient=True
    )
    reply = await hop.open(ClientInfo(addr="192.0.2.7", helo="mx.example"))
    assert reply is not None and reply.code == 451 and reply.text.startswith("4.7.0 ")
    assert not hop.connected
    # without the requirement (loopback listener, or allowed by the operator) it relays
    hop = NextHop(sink.host, sink.port, local_hostname="gw.drossel.test", tls="none")
    assert await hop.open(ClientInfo(addr="192.0.2.7")) is None
    assert hop.connected
    await hop.quit()


async def test_xclient_without_addr_does_not_count(enforcer: Enforcer, tmp_path: Path) -> None:
    # Postfix's smtp-sink offers "XCLIENT NAME HELO": it could not be told the address
    smtp_sink = shutil.which("smtp-sink") or shutil.which("smtp-sink", path="/usr/sbin")
    if smtp_sink is None or os.geteuid() != 0:
        pytest.skip("smtp-sink (Postfix) not installed, or not root")
    port = find_free_port()
    with (tmp_path / "sink.log").open("wb") as log:
        proc = subprocess.Popen(
            [smtp_sink, "-u", "postfix", f"127.0.0.1:{port}", "10"],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        for _ in range(100):
            with contextlib.suppress(OSError):
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            await asyncio.sleep(0.05)
        client = ClientInfo(addr="192.0.2.7", helo="mx.example")
        hop = NextHop("127.0.0.1", port, local_hostname="gw", tls="none", require_xclient=True)
        reply = await hop.open(client)
        assert reply is not None and reply.code == 451 and not hop.connected
        # relayed as before where it is allowed (loopback listener): no hand-over attempted
        gw = await start_gateway(enforcer, gateway_config(f"127.0.0.1:{port}"))
        try:
            errors, text = await aiosmtplib.send(
                exchange_message(),
                sender="alice@contoso.example",
                recipients=["bob@fabrikam.example"],
                hostname=gw.host,
                port=gw.port,
                start_tls=False,
                timeout=10,
            )
            assert errors == {} and text.startswith("2.0.0 Ok")
            hop = gw.handler.pool._idle[0][1]
            assert hop.supports("xclient") and not hop.offers_xclient
            assert hop.identity is None
        finally:
            await gw.close(grace=0.5)
    finally:
        proc.terminate()
        proc.wait(10)
