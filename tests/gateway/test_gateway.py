"""smtp client --> drossel gateway --> aiosmtpd next hop (in the test's loop)."""

from __future__ import annotations

import asyncio
import datetime as dt
import ssl
from pathlib import Path

import aiosmtplib
import pytest

from drossel.app.enforcer import Enforcer
from drossel.gateway.server import GatewayHandle, start_gateway

from .conftest import (
    CURRENT_SE,
    OLD_2013,
    MutableClock,
    NextHopSink,
    exchange_message,
    gateway_config,
)

SENDER = "alice@contoso.example"
RCPT = "bob@fabrikam.example"

THROTTLE_REPLY = (
    "450 4.7.230 Connecting Exchange server version is out-of-date; connection to this mail "
    "service throttled for 5 mins/hr. For more information see https://aka.ms/BlockUnsafeExchange"
)
BLOCK_REPLY = (
    "550 5.7.230 Connecting Exchange server version is out-of-date; connection to this mail "
    "service blocked for 60 mins/hr. For more information see https://aka.ms/BlockUnsafeExchange"
)


async def send(
    gw: GatewayHandle,
    message: bytes,
    rcpts: list[str] | None = None,
    **kwargs: object,
) -> tuple[dict[str, aiosmtplib.SMTPResponse], str]:
    errors, message_text = await aiosmtplib.send(
        message,
        sender=SENDER,
        recipients=rcpts or [RCPT],
        hostname=gw.host,
        port=gw.port,
        start_tls=False,
        timeout=10,
        **kwargs,  # type: ignore[arg-type]
    )
    return errors, message_text


async def reply_of(gw: GatewayHandle, message: bytes, **kwargs: object) -> str:
    """The final reply line the client saw (refusals included)."""
    try:
        _, text = await send(gw, message, **kwargs)
    except aiosmtplib.SMTPResponseException as exc:
        return f"{exc.code} {exc.message}"
    except aiosmtplib.SMTPRecipientsRefused as exc:
        first = exc.recipients[0]
        return f"{first.code} {first.message}"
    return f"250 {text}"


# --- relay transparency ---------------------------------------------------------------------


async def test_accepted_mail_gets_the_next_hops_own_reply(
    gateway: GatewayHandle, sink: NextHopSink
) -> None:
    errors, text = await send(gateway, exchange_message())
    assert errors == {}
    assert text == "2.0.0 Ok: queued as XYZ"
    assert len(sink.messages) == 1
    delivered = sink.messages[0]
    assert delivered.mail_from == SENDER and delivered.rcpt_tos == [RCPT]
    lines = delivered.data.decode().split("\r\n")
    assert lines[0].startswith("Received: from ")
    assert "by gw.drossel.test (drossel) with ESMTP id " in delivered.data.decode()
    # the original header block follows unchanged
    assert delivered.data.endswith(exchange_message())


async def test_refused_recipient_is_refused_with_the_next_hops_reply(
    gateway: GatewayHandle, sink: NextHopSink
) -> None:
    refusal = "550 5.1.1 <nobody@fabrikam.example>: Recipient address rejected: User unknown"
    sink.replies["RCPT"] = lambda addr: refusal if addr.startswith("nobody") else None
    errors, text = await send(gateway, exchange_message(), rcpts=[RCPT, "nobody@fabrikam.example"])
    assert text == "2.0.0 Ok: queued as XYZ"
    assert set(errors) == {"nobody@fabrikam.example"}
    nobody = errors["nobody@fabrikam.example"]
    assert f"{nobody.code} {nobody.message}" == refusal
    assert [m.rcpt_tos for m in sink.messages] == [[RCPT]]


async def test_sender_and_data_refusals_are_passed_back(
    gateway: GatewayHandle, sink: NextHopSink
) -> None:
    sink.replies["MAIL"] = "553 5.7.1 <alice@contoso.example>: Sender address rejected"
    assert await reply_of(gateway, exchange_message()) == sink.replies["MAIL"]
    sink.replies.clear()
    sink.replies["DATA"] = "554 5.7.1 Message refused by content filter"
    assert await reply_of(gateway, exchange_message()) == sink.replies["DATA"]
    sink.replies["DATA"] = "452 4.3.1 Insufficient system storage"
    assert await reply_of(gateway, exchange_message()) == sink.replies["DATA"]
    assert sink.messages == []


async def test_next_hop_down_gives_451(enforcer: Enforcer, sink: NextHopSink) -> None:
    gw = await start_gateway(enforcer, gateway_config(sink.relay))
    try:
        await sink.stop()
        reply = await reply_of(gw, exchange_message())
        assert reply.startswith("451 4.4.1 ")
    finally:
        await gw.close(grace=0.1)


async def test_next_hop_timeout_gives_451_and_the_sender_retries(
    enforcer: Enforcer, sink: NextHopSink
) -> None:
    gw = await start_gateway(enforcer, gateway_config(sink.relay, timeout=0.5))
    try:
        sink.data_delay = 1.5
        reply = await reply_of(gw, exchange_message())
        assert reply.startswith("451 4.4.1 ")
    finally:
        await gw.close(grace=0.1)


async def test_next_hop_closing_with_421_becomes_a_temporary_451(
    gateway: GatewayHandle, sink: NextHopSink
) -> None:
    sink.replies["RCPT"] = "421 4.3.2 Service shutting down"
    reply = await reply_of(gateway, exchange_message())
    assert reply.startswith("451 ")
    sink.replies.clear()
    assert await reply_of(gateway, exchange_message()) == "250 2.0.0 Ok: queued as XYZ"


async def test_one_session_many_transactions_and_rset(
    gateway: GatewayHandle, sink: NextHopSink
) -> None:
    client = aiosmtplib.SMTP(hostname=gateway.host, port=gateway.port, start_tls=False)
    await client.connect()
    await client.ehlo()
    await client.mail(SENDER)
    await client.rcpt(RCPT)
    await client.rset()
    for i in range(3):
        _, text = await client.sendmail(SENDER, [RCPT], exchange_message(subject=f"m{i}"))
        assert text == "2.0.0 Ok: queued as XYZ"
    await client.quit()
    assert len(sink.messages) == 3
    assert len(sink.mails) == 4


async def test_client_disconnect_mid_data_leaves_nothing_at_the_next_hop(
    gateway: GatewayHandle, sink: NextHopSink
) -> None:
    reader, writer = await asyncio.open_connection(gateway.host, gateway.port)

    async def expect(prefix: bytes) -> bytes:
        while True:
            line = await asyncio.wait_for(reader.readline(), 5)
            if line[3:4] != b"-":
                assert line.startswith(prefix), line
                return line

    await expect(b"220")
    for command, answer in (
        (b"EHLO client.example", b"250"),
        (b"MAIL FROM:<alice@contoso.example>", b"250"),
        (b"RCPT TO:<bob@fabrikam.example>", b"250"),
        (b"DATA", b"354"),
    ):
        writer.write(command + b"\r\n")
        await expect(answer)
    writer.write(exchange_message()[:150])
    await writer.drain()
    writer.close()
    await writer.wait_closed()
    for _ in range(100):
        if gateway.handler.open_sessions == 0:
            break
        await asyncio.sleep(0.02)
    assert gateway.handler.open_sessions == 0
    assert len(sink.mails) == 1  # the transaction was opened at the next hop ...
    assert sink.messages == []  # ... and nothing was delivered
    # the gateway keeps working
    assert await reply_of(gateway, exchange_message()) == "250 2.0.0 Ok: queued as XYZ"


async def test_size_and_recipient_limits(enforcer: Enforcer, sink: NextHopSink) -> None:
    gw = await start_gateway(
        enforcer, gateway_config(sink.relay, max_message_size=2000, max_recipients=2)
    )
    try:
        big = exchange_message(body="x" * 70 + "\r\n") + b"y" * 70 * 60 + b"\r\n"
        reply = await reply_of(gw, big)
        assert reply.startswith("552")
        errors, _ = await send(gw, exchange_message(), rcpts=["a@x.example", "b@x.example", "c@x"])
        assert errors["c@x"].code == 452 and errors["c@x"].message.startswith("4.5.3")
        assert [m.rcpt_tos for m in sink.messages] == [["a@x.example", "b@x.example"]]
    finally:
        await gw.close(grace=0.1)


async def test_smtputf8_and_8bitmime_pass_through(
    gateway: GatewayHandle, sink: NextHopSink
) -> None:
    message = exchange_message(subject="Grüße", body="Überweisung für Jürgen\r\n")
    errors, _ = await aiosmtplib.send(
        message,
        sender="jürgen@contoso.example",
        recipients=["zoë@fabrikam.example"],
        hostname=gateway.host,
        port=gateway.port,
        start_tls=False,
        mail_options=["SMTPUTF8", "BODY=8BITMIME"],
    )
    assert errors == {}
    delivered = sink.messages[0]
    assert delivered.mail_from == "jürgen@contoso.example"
    assert "SMTPUTF8" in delivered.mail_options and "BODY=8BITMIME" in delivered.mail_options
    assert delivered.data.endswith(message)
    assert b"with UTF8SMTP id" in delivered.data


async def test_smtputf8_refused_when_the_next_hop_cannot_take_it(enforcer: Enforcer) -> None:
    plain = await NextHopSink(smtputf8=False).start()
    gw = await start_gateway(enforcer, gateway_config(plain.relay))
    try:
        with pytest.raises(aiosmtplib.SMTPSenderRefused) as info:
            await aiosmtplib.send(
                exchange_message(),
                sender="jürgen@contoso.example",
                recipients=[RCPT],
                hostname=gw.host,
                port=gw.port,
                start_tls=False,
                mail_options=["SMTPUTF8"],
            )
        assert info.value.code == 553 and info.value.message.startswith("5.6.7")
    finally:
        await gw.close(grace=0.1)
        await plain.stop()


# --- verdicts (SPEC §4) -----------------------------------------------------------------------


async def test_throttle_window_answers_450_and_sends_nothing_on(
    gateway: GatewayHandle, sink: NextHopSink, clock: MutableClock
) -> None:
    from drossel.core.schedule import hour_offset

    old = exchange_message(build=OLD_2013, server="EX2013.contoso.example")
    assert await reply_of(gateway, old) == "250 2.0.0 Ok: queued as XYZ"  # day 0: report only
    offset = hour_offset("default/EX2013.contoso.example")
    day35 = clock.now + dt.timedelta(days=35)
    clock.now = day35.replace(minute=offset)  # stage 2: first 5 minutes of the window
    assert await reply_of(gateway, old) == THROTTLE_REPLY
    clock.now = day35.replace(minute=(offset + 30) % 60)  # outside the window
    assert await reply_of(gateway, old) == "250 2.0.0 Ok: queued as XYZ"
    assert len(sink.messages) == 2
    # a current Exchange SE in the same minute is never refused
    clock.now = day35.replace(minute=offset)
    se = exchange_message(build=CURRENT_SE, server="EXSE.contoso.example")
    assert await reply_of(gateway, se) == "250 2.0.0 Ok: queued as XYZ"


async def test_stage_8_blocks_with_550_and_a_patched_server_is_accepted_at_once(
    gateway: GatewayHandle, sink: NextHopSink, clock: MutableClock
) -> None:
    server = "EX2013.contoso.example"  # the Exchange server connects itself (EHLO name)
    old = exchange_message(build=OLD_2013, server=server)
    assert await reply_of(gateway, old, local_hostname=server) == "250 2.0.0 Ok: queued as XYZ"
    clock.advance(days=95)
    assert await reply_of(gateway, old, local_hostname=server) == BLOCK_REPLY  # at end of DATA
    assert await reply_of(gateway, old, local_hostname=server) == BLOCK_REPLY
    # the same client, patched: accepted on its first message with the new build (SPEC §4),
    # never refused before its headers are read
    patched = exchange_message(build=CURRENT_SE, server=server)
    assert await reply_of(gateway, patched, local_hostname=server) == "250 2.0.0 Ok: queued as XYZ"
    assert len(sink.messages) == 2


# --- STARTTLS --------------------------------------------------------------------------------


def make_certificate(directory: Path, name: str) -> tuple[str, str]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / f"{name}.crt", directory / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return str(cert_path), str(key_path)


async def test_starttls_from_clients_and_to_the_next_hop(
    enforcer: Enforcer, tmp_path: Path
) -> None:
    pytest.importorskip("cryptography")
    gw_cert, gw_key = make_certificate(tmp_path, "gw.drossel.test")
    hop_cert, hop_key = make_certificate(tmp_path, "nexthop.drossel.test")
    client_cert, client_key = make_certificate(tmp_path, "ex01.contoso.example")
    hop_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    hop_tls.load_cert_chain(hop_cert, hop_key)
    hop = await NextHopSink(tls_context=hop_tls).start()
    # the TLS name of a verified client certificate ties the connection to a connector
    enforcer.store.add_tenant("contoso", [], "test", enforcer.clock())
    enforcer.store.add_connector(
        "contoso", "onprem", "OnPremises", [], "ex01.contoso.example", "test", enforcer.clock()
    )
    enforcer.refresh()
    config = gateway_config(hop.relay, tls_cert=gw_cert, tls_key=gw_key, relay_tls="required")
    gw = await start_gateway(enforcer, config, tls_client_ca=client_cert)
    try:
        client_tls = ssl.create_default_context(cafile=gw_cert)
        client_tls.check_hostname = False  # verified against the CA; we dial 127.0.0.1
        client_tls.load_cert_chain(client_cert, client_key)
        _, text = await aiosmtplib.send(
            exchange_message(build=OLD_2013, server="EX01.contoso.example"),
            sender=SENDER,
            recipients=[RCPT],
            hostname="127.0.0.1",
            port=gw.port,
            start_tls=True,
            tls_context=client_tls,
            validate_certs=True,
            timeout=10,
        )
        assert text == "2.0.0 Ok: queued as XYZ"
        assert hop.tls_sessions == 1  # relayed over STARTTLS
        data = hop.messages[0].data.decode()
        assert "with ESMTPS id" in data and "(using TLSv1.3 with cipher" in data
        enforcer.flush()
        servers = enforcer.store.list_servers("contoso")
        assert [s.record.server.lower() for s in servers] == ["ex01.contoso.example"]
    finally:
        await gw.close(grace=0.1)
        await hop.stop()


async def test_required_relay_tls_without_starttls_at_the_next_hop_is_temporary(
    enforcer: Enforcer, sink: NextHopSink
) -> None:
    gw = await start_gateway(enforcer, gateway_config(sink.relay, relay_tls="required"))
    try:
        reply = await reply_of(gw, exchange_message())
        assert reply.startswith("451 4.7.5")
        assert sink.messages == []
    finally:
        await gw.close(grace=0.1)


# --- PROXY protocol ---------------------------------------------------------------------------


async def _raw_session(host: str, port: int, first: bytes | None) -> list[bytes]:
    reader, writer = await asyncio.open_connection(host, port)
    replies: list[bytes] = []

    async def command(line: bytes | None) -> None:
        if line is not None:
            writer.write(line + b"\r\n")
        while True:
            got = await asyncio.wait_for(reader.readline(), 5)
            if got[3:4] != b"-":
                replies.append(got.rstrip())
                return

    if first is not None:
        writer.write(first)
    await command(None)
    message = exchange_message(build=OLD_2013, server="EX2013.contoso.example")
    for line in (
        b"EHLO lb.example",
        b"MAIL FROM:<alice@contoso.example>",
        b"RCPT TO:<bob@fabrikam.example>",
        b"DATA",
        message + b".",
        b"QUIT",
    ):
        await command(line)
    writer.close()
    return replies


async def test_proxy_protocol_only_from_configured_load_balancers(
    enforcer: Enforcer, sink: NextHopSink
) -> None:
    enforcer.store.add_tenant("contoso", [], "test", enforcer.clock())
    enforcer.store.add_connector(
        "contoso", "onprem", "OnPremises", ["192.0.2.0/24"], None, "test", enforcer.clock()
    )
    enforcer.refresh()
    header = b"PROXY TCP4 192.0.2.10 127.0.0.1 40000 25\r\n"
    trusted = await start_gateway(
        enforcer, gateway_config(sink.relay, proxy_protocol_from=["127.0.0.0/8"])
    )
    try:
        replies = await _raw_session(trusted.host, trusted.port, header)
        assert replies[0].startswith(b"220 ") and replies[5].startswith(b"250 2.0.0 Ok")
        assert b"[192.0.2.10]" in sink.messages[0].data.split(b"\r\n\r\n")[0]
        enforcer.flush()
        assert [s.record.tenant for s in enforcer.store.list_servers()] == ["contoso"]
    finally:
        await trusted.close(grace=0.1)

    untrusted = await start_gateway(
        enforcer, gateway_config(sink.relay, proxy_protocol_from=["10.0.0.0/8"])
    )
    try:
        replies = await _raw_session(untrusted.host, untrusted.port, header)
        assert replies[0].startswith(b"220 ")
        assert replies[1].startswith(b"500")  # "PROXY" is just an unknown command here
        assert replies[6].startswith(b"250 2.0.0 Ok")
        assert b"[127.0.0.1]" in sink.messages[1].data.split(b"\r\n\r\n")[0]
        assert b"192.0.2.10" not in sink.messages[1].data.split(b"\r\n\r\n")[0]
    finally:
        await untrusted.close(grace=0.1)


async def test_control_characters_in_addresses_are_refused_not_relayed(
    gateway: GatewayHandle, sink: NextHopSink
) -> None:
    # found by the fuzz test: aiosmtpd accepts them, the next-hop client cannot send them
    reader, writer = await asyncio.open_connection(gateway.host, gateway.port)

    async def say(line: bytes) -> bytes:
        writer.write(line + b"\r\n")
        while True:
            got = await asyncio.wait_for(reader.readline(), 5)
            if got[3:4] != b"-":
                return got.rstrip()

    assert (await asyncio.wait_for(reader.readline(), 5)).startswith(b"220")
    await say(b"EHLO ex01.contoso.example")
    assert (
        await say(b"MAIL FROM:<al\x01ice@contoso.example>")
        == b"501 5.1.7 Bad sender address syntax"
    )
    assert (await say(b"MAIL FROM:<alice@contoso.example>")).startswith(b"250")
    assert (
        await say(b"RCPT TO:<bob\x7f@fabrikam.example>")
        == b"501 5.1.3 Bad recipient address syntax"
    )
    assert (await say(b"RCPT TO:<bob@fabrikam.example>")).startswith(b"250")
    # aiosmtpd's parser fails on a lone "<": a malformed address, not a gateway error
    assert await say(b"RCPT TO: <") == b"553 5.1.3 Error: malformed address"
    # replies that echo client input stay one clean line, whatever the bytes
    assert await say(b"VRFY ,\x80\x01") == b"502 Could not VRFY ,?"
    await say(b"QUIT")
    writer.close()
    assert sink.mails == ["alice@contoso.example"]
