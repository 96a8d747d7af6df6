"""Typed milter commands (MTA -> filter) and responses (filter -> MTA).

Constants follow sendmail's ``libmilter/mfdef.h`` (protocol version 6), which
Postfix implements in ``src/milter/milter8.c``.  Strings on the wire are
NUL-terminated byte strings of no declared charset; they are decoded as UTF-8
with ``surrogateescape`` so that 8-bit junk in an Exchange header survives a
round trip unchanged instead of raising or being silently replaced.

Parsing is strict: a payload that does not have exactly the documented shape
raises :class:`ProtocolError` with a message saying what was wrong, because a
desynchronised stream is worse than a dropped connection (Postfix then applies
``milter_default_action``).
"""

from __future__ import annotations

import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final, NamedTuple

from drossel.milter.framing import Packet, ProtocolError, encode_packet

#: Protocol version we speak.
MILTER_VERSION: Final = 6

# --- commands, MTA -> filter (SMFIC_*) -------------------------------------
SMFIC_ABORT: Final = b"A"
SMFIC_BODY: Final = b"B"
SMFIC_CONNECT: Final = b"C"
SMFIC_MACRO: Final = b"D"
SMFIC_BODYEOB: Final = b"E"
SMFIC_HELO: Final = b"H"
SMFIC_QUIT_NC: Final = b"K"
SMFIC_HEADER: Final = b"L"
SMFIC_MAIL: Final = b"M"
SMFIC_EOH: Final = b"N"
SMFIC_OPTNEG: Final = b"O"
SMFIC_QUIT: Final = b"Q"
SMFIC_RCPT: Final = b"R"
SMFIC_DATA: Final = b"T"
SMFIC_UNKNOWN: Final = b"U"

# --- responses, filter -> MTA (SMFIR_*) ------------------------------------
SMFIR_ACCEPT: Final = b"a"
SMFIR_CONTINUE: Final = b"c"
SMFIR_ADDHEADER: Final = b"h"
SMFIR_INSHEADER: Final = b"i"
SMFIR_CHGHEADER: Final = b"m"
SMFIR_REJECT: Final = b"r"
SMFIR_TEMPFAIL: Final = b"t"
SMFIR_REPLYCODE: Final = b"y"

# --- actions the filter may request (SMFIF_*) -------------------------------
SMFIF_ADDHDRS: Final = 0x0001
SMFIF_CHGHDRS: Final = 0x0010
SMFIF_SETSYMLIST: Final = 0x0100

# --- protocol steps (SMFIP_*) ------------------------------------------------
SMFIP_NOCONNECT: Final = 0x00000001
SMFIP_NOHELO: Final = 0x00000002
SMFIP_NOMAIL: Final = 0x00000004
SMFIP_NORCPT: Final = 0x00000008
SMFIP_NOBODY: Final = 0x00000010
SMFIP_NOHDRS: Final = 0x00000020
SMFIP_NOEOH: Final = 0x00000040
SMFIP_NR_HDR: Final = 0x00000080
SMFIP_NOUNKNOWN: Final = 0x00000100
SMFIP_NODATA: Final = 0x00000200
SMFIP_SKIP: Final = 0x00000400
SMFIP_RCPT_REJ: Final = 0x00000800
SMFIP_NR_CONN: Final = 0x00001000
SMFIP_NR_HELO: Final = 0x00002000
SMFIP_NR_MAIL: Final = 0x00004000
SMFIP_NR_RCPT: Final = 0x00008000
SMFIP_NR_DATA: Final = 0x00010000
SMFIP_NR_UNKN: Final = 0x00020000
SMFIP_NR_EOH: Final = 0x00040000
SMFIP_NR_BODY: Final = 0x00080000
SMFIP_HDR_LEADSPC: Final = 0x00100000

# --- macro stages for the OPTNEG symbol lists (SMFIM_*) ----------------------
SMFIM_CONNECT: Final = 0
SMFIM_HELO: Final = 1
SMFIM_ENVFROM: Final = 2
SMFIM_ENVRCPT: Final = 3
SMFIM_DATA: Final = 4
SMFIM_EOM: Final = 5
SMFIM_EOH: Final = 6

# --- address families in SMFIC_CONNECT (SMFIA_*) ----------------------------
SMFIA_UNKNOWN: Final = "U"
SMFIA_UNIX: Final = "L"
SMFIA_INET: Final = "4"
SMFIA_INET6: Final = "6"

_U32 = struct.Struct(">I")
_OPTNEG = struct.Struct(">III")
_PORT = struct.Struct(">H")


def _decode(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def _encode(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def _cstrings(payload: bytes, what: str) -> list[str]:
    """Split a payload made only of NUL-terminated strings."""
    if not payload.endswith(b"\0"):
        raise ProtocolError(f"{what}: payload is not NUL-terminated")
    # Decoding first is equivalent (NUL never occurs inside a UTF-8 sequence and
    # surrogateescape maps bytes one by one) and much cheaper than per part.
    return payload[:-1].decode("utf-8", "surrogateescape").split("\0")


def _exact_cstrings(payload: bytes, count: int, what: str) -> list[str]:
    parts = _cstrings(payload, what)
    if len(parts) != count:
        raise ProtocolError(f"{what}: expected {count} NUL-terminated strings, got {len(parts)}")
    return parts


def _empty(payload: bytes, what: str) -> None:
    if payload:
        raise ProtocolError(f"{what}: unexpected {len(payload)} payload bytes")


# =============================================================================
# Commands (MTA -> filter)
# =============================================================================


@dataclass(frozen=True, slots=True)
class OptNeg:
    """SMFIC_OPTNEG: the MTA's protocol version, offered actions and steps."""

    version: int
    actions: int
    protocol: int


class Macro(NamedTuple):
    """SMFIC_MACRO: macro values for the stage of the command ``stage``.

    A named tuple (cheapest to create): Postfix sends one before nearly every command,
    mostly empty.
    """

    stage: bytes
    macros: dict[str, str]


@dataclass(frozen=True, slots=True)
class Connect:
    """SMFIC_CONNECT: client host name, address family, port and address."""

    hostname: str
    family: str
    port: int | None
    address: str | None


@dataclass(frozen=True, slots=True)
class Helo:
    """SMFIC_HELO: the HELO/EHLO argument."""

    name: str


@dataclass(frozen=True, slots=True)
class Mail:
    """SMFIC_MAIL: sender (as given, usually ``<addr>``) then ESMTP args."""

    args: tuple[str, ...]

    @property
    def sender(self) -> str:
        return self.args[0]


@dataclass(frozen=True, slots=True)
class Rcpt:
    """SMFIC_RCPT: recipient (as given, usually ``<addr>``) then ESMTP args."""

    args: tuple[str, ...]

    @property
    def recipient(self) -> str:
        return self.args[0]


@dataclass(frozen=True, slots=True)
class Data:
    """SMFIC_DATA: the client sent DATA."""


class Header:
    """SMFIC_HEADER: one header; folded lines are joined by ``\\n``.

    The value is kept as bytes and decoded only when asked for: most headers of a message
    are merely looked at by name and dropped, and a header can be up to a megabyte.
    """

    __slots__ = ("name", "raw_value")

    def __init__(self, name: str, value: str | bytes) -> None:
        self.name = name
        self.raw_value = _encode(value) if isinstance(value, str) else value

    @property
    def value(self) -> str:
        return _decode(self.raw_value)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Header):
            return NotImplemented
        return (self.name, self.raw_value) == (other.name, other.raw_value)

    def __hash__(self) -> int:
        return hash((self.name, self.raw_value))

    def __repr__(self) -> str:
        return f"Header({self.name!r}, {self.value!r})"


@dataclass(frozen=True, slots=True)
class EndOfHeaders:
    """SMFIC_EOH."""


@dataclass(frozen=True, slots=True)
class Body:
    """SMFIC_BODY: one body chunk."""

    chunk: bytes


@dataclass(frozen=True, slots=True)
class EndOfBody:
    """SMFIC_BODYEOB: end of message; sendmail may attach a last chunk."""

    chunk: bytes = b""


@dataclass(frozen=True, slots=True)
class Abort:
    """SMFIC_ABORT: forget the current message, keep the connection."""


@dataclass(frozen=True, slots=True)
class Quit:
    """SMFIC_QUIT: the MTA is done; close the connection."""


@dataclass(frozen=True, slots=True)
class QuitNewConnection:
    """SMFIC_QUIT_NC: SMTP session over, a new one follows on this socket."""


@dataclass(frozen=True, slots=True)
class Unknown:
    """SMFIC_UNKNOWN: an SMTP command the MTA did not recognise."""

    command: str


Command = (
    OptNeg
    | Macro
    | Connect
    | Helo
    | Mail
    | Rcpt
    | Data
    | Header
    | EndOfHeaders
    | Body
    | EndOfBody
    | Abort
    | Quit
    | QuitNewConnection
    | Unknown
)


def _parse_optneg(payload: bytes) -> OptNeg:
    # libmilter ignores bytes after the three words; so do we.
    if len(payload) < _OPTNEG.size:
        raise ProtocolError(f"OPTNEG: payload of {len(payload)} bytes, need {_OPTNEG.size}")
    version, actions, protocol = _OPTNEG.unpack_from(payload)
    return OptNeg(version, actions, protocol)


def _parse_macro(payload: bytes) -> Macro:
    if not payload:
        raise ProtocolError("MACRO: missing stage command byte")
    stage, rest = payload[:1], payload[1:]
    if not rest:
        return Macro(stage, {})
    parts = _cstrings(rest, "MACRO")
    if len(parts) % 2:
        raise ProtocolError("MACRO: odd number of strings (name without value)")
    return Macro(stage, dict(zip(parts[0::2], parts[1::2], strict=True)))


def _parse_connect(payload: bytes) -> Connect:
    nul = payload.find(b"\0")
    if nul < 0:
        raise ProtocolError("CONNECT: host name is not NUL-terminated")
    hostname = _decode(payload[:nul])
    rest = payload[nul + 1 :]
    if not rest:
        raise ProtocolError("CONNECT: missing address family")
    family = chr(rest[0])
    rest = rest[1:]
    if family == SMFIA_UNKNOWN:
        _empty(rest, "CONNECT (family U)")
        return Connect(hostname, family, None, None)
    if family not in (SMFIA_UNIX, SMFIA_INET, SMFIA_INET6):
        raise ProtocolError(f"CONNECT: unknown address family {family!r}")
    if len(rest) < _PORT.size:
        raise ProtocolError("CONNECT: truncated port")
    (port,) = _PORT.unpack_from(rest)
    (address,) = _exact_cstrings(rest[_PORT.size :], 1, "CONNECT address")
    return Connect(hostname, family, None if family == SMFIA_UNIX else port, address)


def _parse_args(payload: bytes, what: str) -> tuple[str, ...]:
    args = tuple(_cstrings(payload, what))
    if not args[0]:
        # "<>" is the null sender; an empty first string is not an address.
        raise ProtocolError(f"{what}: empty address")
    return args


_SIMPLE: Final[dict[bytes, tuple[str, Command]]] = {
    SMFIC_DATA: ("DATA", Data()),
    SMFIC_EOH: ("EOH", EndOfHeaders()),
    SMFIC_ABORT: ("ABORT", Abort()),
    SMFIC_QUIT: ("QUIT", Quit()),
    SMFIC_QUIT_NC: ("QUIT_NC", QuitNewConnection()),
}


def _parse_header(payload: bytes) -> Header:
    # Same checks as _exact_cstrings(payload, 2), without decoding the value.
    end = len(payload) - 1
    nul = payload.find(b"\0")
    if nul < 0 or payload[end] != 0:
        raise ProtocolError("HEADER: payload is not NUL-terminated")
    if nul == end or payload.find(b"\0", nul + 1) != end:
        parts = payload.count(b"\0")
        raise ProtocolError(f"HEADER: expected 2 NUL-terminated strings, got {parts}")
    if not nul:
        raise ProtocolError("HEADER: empty header name")
    return Header(_decode(payload[:nul]), payload[nul + 1 : end])


def parse_command(packet: Packet) -> Command:
    """Turn a raw packet into a typed command or raise :class:`ProtocolError`."""
    cmd, payload = packet.command, packet.payload
    # Ordered by frequency: Postfix sends a macro packet before most commands.
    if cmd == SMFIC_MACRO:
        return _parse_macro(payload)
    if cmd == SMFIC_HEADER:
        return _parse_header(payload)
    simple = _SIMPLE.get(cmd)
    if simple is not None:
        name, command = simple
        _empty(payload, name)
        return command
    if cmd == SMFIC_OPTNEG:
        return _parse_optneg(payload)
    if cmd == SMFIC_CONNECT:
        return _parse_connect(payload)
    if cmd == SMFIC_HELO:
        return Helo(*_exact_cstrings(payload, 1, "HELO"))
    if cmd == SMFIC_MAIL:
        return Mail(_parse_args(payload, "MAIL"))
    if cmd == SMFIC_RCPT:
        return Rcpt(_parse_args(payload, "RCPT"))
    if cmd == SMFIC_BODY:
        return Body(payload)
    if cmd == SMFIC_BODYEOB:
        return EndOfBody(payload)
    if cmd == SMFIC_UNKNOWN:
        return Unknown(*_exact_cstrings(payload, 1, "UNKNOWN"))
    raise ProtocolError(f"unknown command byte {cmd!r}")


# =============================================================================
# Responses (filter -> MTA)
# =============================================================================

#: Longest reply text we send.  RFC 5321 limits a reply line to 512 octets
#: including "450 4.7.230 " and CRLF; libmilter's own limit is 980.
MAX_REPLY_TEXT: Final = 480
#: Longest header value we add: keeps "Name: value" within RFC 5322's 998.
MAX_HEADER_LINE: Final = 998

_ENHANCED = re.compile(r"[245]\.\d{1,3}\.\d{1,3}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_HEADER_NAME = re.compile(r"[\x21-\x39\x3b-\x7e]+")  # RFC 5322 ftext


def sanitize_reply_text(text: str) -> str:
    """Make ``text`` safe as the free text of an SMTP reply sent via milter.

    Line breaks and other control characters would let a policy inject extra
    reply lines; non-ASCII is not allowed in SMTP replies; and Postfix (like
    sendmail) treats ``%`` in SMFIR_REPLYCODE as a format escape (``%%`` is a
    literal percent, a lone ``%`` is dropped), so it is doubled here.  The
    length bound is applied before doubling, i.e. to what the client sees.
    """
    text = _CONTROL.sub(" ", text)
    text = text.encode("ascii", "replace").decode("ascii")
    text = " ".join(text.split())[:MAX_REPLY_TEXT].rstrip()
    return text.replace("%", "%%")


def sanitize_header_value(name: str, value: str) -> str:
    """Single-line, control-free header value that fits one RFC 5322 line."""
    value = " ".join(_CONTROL.sub(" ", value).split())
    return value[: max(0, MAX_HEADER_LINE - len(name) - 2)]


def check_header_name(name: str) -> str:
    """Return ``name`` if it is a valid field name, else raise ``ValueError``."""
    if not _HEADER_NAME.fullmatch(name):
        raise ValueError(f"invalid header name {name!r}")
    return name


def _simple(command: bytes) -> bytes:
    return encode_packet(command)


CONTINUE: Final = _simple(SMFIR_CONTINUE)
ACCEPT: Final = _simple(SMFIR_ACCEPT)
TEMPFAIL: Final = _simple(SMFIR_TEMPFAIL)
REJECT: Final = _simple(SMFIR_REJECT)


@dataclass(frozen=True, slots=True)
class ReplyCode:
    """SMFIR_REPLYCODE: "<code> <enhanced> <text>" (text sanitised on encode).

    Postfix only accepts 4xx/5xx codes and an enhanced code whose class
    digit matches the reply code, so both are validated here.
    """

    code: int
    enhanced: str | None = None
    text: str | None = None

    def __post_init__(self) -> None:
        if not 400 <= self.code <= 599:
            raise ValueError(f"reply code {self.code} is not 4xx or 5xx")
        if self.enhanced is not None:
            if not _ENHANCED.fullmatch(self.enhanced):
                raise ValueError(f"malformed enhanced status code {self.enhanced!r}")
            if self.enhanced[0] != str(self.code)[0]:
                raise ValueError(f"enhanced code {self.enhanced} does not match {self.code}")

    def line(self) -> str:
        parts = [str(self.code)]
        if self.enhanced:
            parts.append(self.enhanced)
        text = sanitize_reply_text(self.text or "")
        if text:
            parts.append(text)
        return " ".join(parts)

    def encode(self) -> bytes:
        return encode_packet(SMFIR_REPLYCODE, self.line().encode("ascii") + b"\0")


@dataclass(frozen=True, slots=True)
class AddHeader:
    """SMFIR_ADDHEADER: append a header (name validated, value sanitised)."""

    name: str
    value: str

    def encode(self) -> bytes:
        name = check_header_name(self.name)
        value = sanitize_header_value(name, self.value)
        return encode_packet(SMFIR_ADDHEADER, _encode(name) + b"\0" + _encode(value) + b"\0")


@dataclass(frozen=True, slots=True)
class InsertHeader:
    """SMFIR_INSHEADER: insert a header at ``index`` (0 = top)."""

    index: int
    name: str
    value: str

    def encode(self) -> bytes:
        name = check_header_name(self.name)
        value = sanitize_header_value(name, self.value)
        return encode_packet(
            SMFIR_INSHEADER,
            _U32.pack(self.index) + _encode(name) + b"\0" + _encode(value) + b"\0",
        )


@dataclass(frozen=True, slots=True)
class DeleteHeader:
    """SMFIR_CHGHEADER with an empty value: delete the ``index``-th (1-based) ``name`` header.

    The index counts only headers of that name, as the MTA showed them to us; deleting the
    highest index first keeps the lower ones valid whether or not the MTA renumbers.
    """

    index: int
    name: str

    def encode(self) -> bytes:
        if self.index < 1:
            raise ValueError(f"header index must be 1 or more, got {self.index}")
        name = check_header_name(self.name)
        return encode_packet(SMFIR_CHGHEADER, _U32.pack(self.index) + _encode(name) + b"\0\0")


@dataclass(frozen=True, slots=True)
class OptNegReply:
    """SMFIC_OPTNEG reply: version, actions, steps, then optional macro lists.

    Each macro list is ``uint32 stage`` + space-separated names + NUL.  Postfix
    uses its own ``milter_*_macros`` for every stage not listed (or listed
    empty): see ``DEFAULT_MACRO_REQUESTS`` in :mod:`drossel.milter.session`.
    """

    version: int
    actions: int
    protocol: int
    macros: Mapping[int, str] = field(default_factory=dict)

    def encode(self) -> bytes:
        payload = _OPTNEG.pack(self.version, self.actions, self.protocol)
        for stage, names in sorted(self.macros.items()):
            payload += _U32.pack(stage) + names.encode("ascii") + b"\0"
        return encode_packet(SMFIC_OPTNEG, payload)
