"""Milter packet framing: ``uint32 length`` (big endian) + command byte + payload.

The length counts the command byte plus the payload, so a valid packet has a
length of at least 1.  The decoder is incremental because TCP and unix sockets
deliver arbitrary slices of the stream: it must produce identical packets
whether it is fed one byte at a time or a whole exchange at once.

The maximum packet size is a memory bound per connection.  Postfix sends one
header per packet and body chunks of at most 65535 bytes, but a single header
may legally be as large as ``header_size_limit`` (100 KiB by default), so the
default limit is 1 MiB, the largest size libmilter itself can negotiate
(``SMFIP_MDS_1M``).
"""

from __future__ import annotations

import struct
from typing import Final, NamedTuple

#: Default upper bound for one packet (command byte + payload), in bytes.
DEFAULT_MAX_PACKET: Final = 1024 * 1024

_LENGTH = struct.Struct(">I")


class ProtocolError(Exception):
    """The peer violated the milter protocol; the connection must be dropped."""


class FramingError(ProtocolError):
    """The byte stream cannot be split into packets."""


class Packet(NamedTuple):
    """One raw milter packet: a one-byte command code and its payload.

    A named tuple, not a dataclass: tens of packets per message are made, and a tuple is
    the cheapest immutable record to create.
    """

    command: bytes
    payload: bytes = b""


def encode_packet(command: bytes, payload: bytes = b"") -> bytes:
    """Frame ``command`` + ``payload`` for the wire."""
    if len(command) != 1:
        raise ValueError(f"command must be exactly one byte, got {command!r}")
    return _LENGTH.pack(len(payload) + 1) + command + payload


class PacketDecoder:
    """Incremental decoder: feed it chunks, get back complete packets.

    A length that is zero or larger than ``max_packet`` raises
    :class:`FramingError` as soon as the four length bytes are known, before
    any payload is buffered, so an oversized announcement never costs memory.
    """

    def __init__(self, max_packet: int = DEFAULT_MAX_PACKET) -> None:
        if max_packet < 1:
            raise ValueError("max_packet must be at least 1")
        self.max_packet = max_packet
        self._buffer = bytearray()
        #: bytes the buffer must hold before the next packet can be complete
        self._need = _LENGTH.size

    @property
    def buffered(self) -> int:
        """Bytes received that do not yet form a complete packet."""
        return len(self._buffer)

    def feed(self, data: bytes | bytearray | memoryview) -> list[Packet]:
        """Add ``data`` to the stream and return every packet it completes.

        ``data`` is copied, so a reused read buffer may be passed in.
        """
        buffer = self._buffer
        if buffer:
            buffer += data
            if len(buffer) < self._need:
                return []  # still inside a packet whose length is already checked
            view = bytes(buffer)
            buffer.clear()
        else:
            view = bytes(data)
        packets: list[Packet] = []
        append = packets.append
        size = _LENGTH.size
        unpack = _LENGTH.unpack_from
        new = tuple.__new__  # Packet(...) without the Python-level __new__ of a named tuple
        max_packet = self.max_packet
        end_of_data = len(view)
        pos = 0
        while end_of_data - pos >= size:
            (length,) = unpack(view, pos)
            if not 0 < length <= max_packet:
                if length == 0:
                    raise FramingError("zero-length packet (no command byte)")
                raise FramingError(
                    f"packet length {length} exceeds the limit of {max_packet} bytes"
                )
            start = pos + size
            end = start + length
            if end > end_of_data:
                self._need = size + length
                break
            append(new(Packet, (view[start : start + 1], view[start + 1 : end])))
            pos = end
        else:
            self._need = size
        if pos < end_of_data:
            buffer += view[pos:]
        return packets
