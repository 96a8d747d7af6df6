"""Command parsing and response serialisation against raw byte fixtures."""

from __future__ import annotations

import milter_bytes as mb
import pytest

from drossel.milter import commands as c
from drossel.milter.framing import Packet, PacketDecoder, ProtocolError


def parse(raw: bytes) -> c.Command:
    (packet,) = PacketDecoder().feed(raw)
    return c.parse_command(packet)


# --- commands -------------------------------------------------------------------


def test_optneg() -> None:
    assert parse(mb.OPTNEG) == c.OptNeg(version=6, actions=0x1FF, protocol=0x1FFFFF)


def test_macro_keeps_wire_names() -> None:
    macro = parse(mb.MACRO_CONNECT)
    assert macro == c.Macro(
        b"C",
        {
            "j": "mx.example.net",
            "{daemon_name}": "mx.example.net",
            "{client_addr}": "203.0.113.25",
            "{client_name}": "mail.contoso.example",
        },
    )


def test_macro_without_values() -> None:
    assert c.parse_command(Packet(b"D", b"T")) == c.Macro(b"T", {})


def test_connect_inet() -> None:
    assert parse(mb.CONNECT) == c.Connect("mail.contoso.example", "4", 49319, "203.0.113.25")


def test_connect_inet6_unix_unknown() -> None:
    v6 = c.parse_command(Packet(b"C", b"[2001:db8::1]\x006\x00\x19IPv6:2001:db8::1\x00"))
    assert v6 == c.Connect("[2001:db8::1]", "6", 25, "IPv6:2001:db8::1")
    unix = c.parse_command(Packet(b"C", b"localhost\x00L\x00\x00/run/x.sock\x00"))
    assert unix == c.Connect("localhost", "L", None, "/run/x.sock")
    assert c.parse_command(Packet(b"C", b"unknown\x00U")) == c.Connect("unknown", "U", None, None)


def test_helo_mail_rcpt() -> None:
    assert parse(mb.HELO) == c.Helo("mail.contoso.example")
    mail = parse(mb.MAIL)
    assert isinstance(mail, c.Mail)
    assert mail.sender == "<alerts@contoso.example>"
    assert mail.args[1:] == ("SIZE=4321", "BODY=8BITMIME")
    rcpt = parse(mb.RCPT)
    assert isinstance(rcpt, c.Rcpt)
    assert rcpt.recipient == "<ops@example.net>"


def test_headers_keep_folding_and_empty_values() -> None:
    received = parse(mb.HDR_RECEIVED_1)
    assert isinstance(received, c.Header)
    assert received.name == "Received"
    assert received.value.startswith("from EX01.contoso.example (10.0.0.5) by\n EX02")
    assert received.value.count("\n ") == 3
    assert parse(mb.HDR_EMPTY) == c.Header("X-MS-Has-Attach", "")


def test_eight_bit_header_survives() -> None:
    header = c.parse_command(Packet(b"L", b"Subject\x00caf\xe9 \xc3\xa9\x00"))
    assert isinstance(header, c.Header)
    assert header.value.encode("utf-8", "surrogateescape") == b"caf\xe9 \xc3\xa9"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (mb.EOH, c.EndOfHeaders()),
        (mb.BODYEOB, c.EndOfBody()),
        (mb.ABORT, c.Abort()),
        (mb.QUIT, c.Quit()),
        (b"\x00\x00\x00\x01K", c.QuitNewConnection()),
        (b"\x00\x00\x00\x01T", c.Data()),
        (b"\x00\x00\x00\x06Bbody!", c.Body(b"body!")),
        (b"\x00\x00\x00\x06UXYZZ\x00", c.Unknown("XYZZ")),
    ],
)
def test_simple_commands(raw: bytes, expected: c.Command) -> None:
    assert parse(raw) == expected


@pytest.mark.parametrize(
    ("cmd", "payload", "message"),
    [
        (b"O", b"\x00\x00\x00\x06\x00\x00", "OPTNEG: payload of 6 bytes"),
        (b"D", b"", "MACRO: missing stage"),
        (b"D", b"Cj\x00mx", "MACRO: payload is not NUL-terminated"),
        (b"D", b"Cj\x00mx\x00i\x00", "odd number"),
        (b"C", b"host", "host name is not NUL-terminated"),
        (b"C", b"host\x00", "missing address family"),
        (b"C", b"host\x004\x00", "truncated port"),
        (b"C", b"host\x00X\x00\x19a\x00", "unknown address family"),
        (b"C", b"host\x004\x00\x19addr", "not NUL-terminated"),
        (b"C", b"host\x00Ujunk", "unexpected 4 payload bytes"),
        (b"H", b"helo", "HELO: payload is not NUL-terminated"),
        (b"H", b"a\x00b\x00", "expected 1"),
        (b"M", b"", "MAIL: payload is not NUL-terminated"),
        (b"M", b"\x00", "MAIL: empty address"),
        (b"R", b"<a@b>", "RCPT: payload is not NUL-terminated"),
        (b"L", b"Subject\x00", "expected 2"),
        (b"L", b"\x00value\x00", "empty header name"),
        (b"N", b"x", "EOH: unexpected 1 payload bytes"),
        (b"Q", b"\x00", "QUIT: unexpected"),
        (b"Z", b"", "unknown command byte b'Z'"),
        (b"\x00", b"", "unknown command byte"),
    ],
)
def test_malformed_payloads(cmd: bytes, payload: bytes, message: str) -> None:
    with pytest.raises(ProtocolError, match=message.replace("(", r"\(")):
        c.parse_command(Packet(cmd, payload))


# --- responses ------------------------------------------------------------------


def test_simple_responses() -> None:
    assert c.CONTINUE == mb.R_CONTINUE
    assert c.ACCEPT == mb.R_ACCEPT
    assert c.TEMPFAIL == mb.R_TEMPFAIL
    assert c.REJECT == mb.R_REJECT


def test_replycode_sanitised_exactly() -> None:
    reply = c.ReplyCode(450, "4.7.230", "Exchange 15.1.2507 is 42% out\r\nof date")
    assert reply.encode() == mb.R_REPLY_450


def test_replycode_without_enhanced_or_text() -> None:
    assert c.ReplyCode(550).encode() == b"\x00\x00\x00\x05y550\x00"
    assert c.ReplyCode(550, "5.7.230").encode() == b"\x00\x00\x00\x0dy550 5.7.230\x00"


@pytest.mark.parametrize(
    ("code", "enhanced"),
    [(250, None), (600, None), (450, "5.7.1"), (550, "4.7.1"), (450, "4.7"), (450, "x")],
)
def test_replycode_validation(code: int, enhanced: str | None) -> None:
    with pytest.raises(ValueError):
        c.ReplyCode(code, enhanced, "text")


def test_reply_text_sanitiser() -> None:
    assert c.sanitize_reply_text("a\rb\nc\x00d\x1b[0m\te") == "a b c d [0m e"
    assert c.sanitize_reply_text("100% ok %s") == "100%% ok %%s"
    assert c.sanitize_reply_text("Grüße") == "Gr??e"
    long = c.sanitize_reply_text("x" * 5000)
    assert len(long) == c.MAX_REPLY_TEXT
    assert len(c.sanitize_reply_text("%" * 5000)) == 2 * c.MAX_REPLY_TEXT


def test_addheader() -> None:
    raw = c.AddHeader("X-Drossel-Grade", "B (Exchange 2016 CU23)").encode()
    assert raw == mb.R_ADDHEADER_GRADE


def test_addheader_sanitises_value_and_rejects_bad_names() -> None:
    raw = c.AddHeader("X-Test", "a\r\nInjected: yes\x00").encode()
    assert raw == b"\x00\x00\x00\x18hX-Test\x00a Injected: yes\x00"
    assert len(c.AddHeader("X-Long", "y" * 5000).encode()) == 4 + 1 + 7 + 990 + 1
    for bad in ("", "X Test", "X-Test:", "X\nTest", "Grüße"):
        with pytest.raises(ValueError, match="invalid header name"):
            c.AddHeader(bad, "v").encode()


def test_insheader() -> None:
    raw = c.InsertHeader(0, "X-A", "1").encode()
    assert raw == b"\x00\x00\x00\x0bi\x00\x00\x00\x00X-A\x001\x00"


def test_optneg_reply_without_macros() -> None:
    raw = c.OptNegReply(6, 0x1, 0x10).encode()
    assert raw == b"\x00\x00\x00\x0dO\x00\x00\x00\x06\x00\x00\x00\x01\x00\x00\x00\x10"
