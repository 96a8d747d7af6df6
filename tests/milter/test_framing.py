"""Framing layer: length prefix, command byte, incremental decoding."""

from __future__ import annotations

import milter_bytes as mb
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from milter_helpers import EXCHANGE

from drossel.milter.framing import FramingError, Packet, PacketDecoder, encode_packet

EXPECTED_COMMANDS = b"ODCDHDMDR" + b"DL" * 5 + b"DNDEQ"


def decode_in_chunks(data: bytes, size: int) -> list[Packet]:
    decoder = PacketDecoder()
    packets: list[Packet] = []
    for start in range(0, len(data), size):
        packets += decoder.feed(data[start : start + size])
    assert decoder.buffered == 0
    return packets


def test_encode_packet_layout() -> None:
    assert encode_packet(b"c") == b"\x00\x00\x00\x01c"
    assert encode_packet(b"H", b"x\0") == b"\x00\x00\x00\x03Hx\0"


def test_encode_packet_requires_one_command_byte() -> None:
    with pytest.raises(ValueError, match="one byte"):
        encode_packet(b"", b"x")
    with pytest.raises(ValueError, match="one byte"):
        encode_packet(b"ab")


def test_fixture_packets_round_trip() -> None:
    for raw in (mb.OPTNEG, mb.CONNECT, mb.HDR_RECEIVED_1, mb.QUIT, mb.R_OPTNEG):
        (packet,) = PacketDecoder().feed(raw)
        assert encode_packet(packet.command, packet.payload) == raw


@pytest.mark.parametrize("size", [1, 2, 3, 5, 16, 128, 4096, len(EXCHANGE)])
def test_exchange_decodes_identically_at_any_chunk_size(size: int) -> None:
    packets = decode_in_chunks(EXCHANGE, size)
    assert b"".join(p.command for p in packets) == EXPECTED_COMMANDS
    assert packets == decode_in_chunks(EXCHANGE, len(EXCHANGE))
    assert packets[2] == Packet(b"C", b"mail.contoso.example\x004\xc0\xa7203.0.113.25\x00")


@settings(database=None)
@given(st.lists(st.integers(min_value=1, max_value=64), min_size=1, max_size=200))
def test_random_split_points(sizes: list[int]) -> None:
    decoder = PacketDecoder()
    packets: list[Packet] = []
    pos = 0
    for size in sizes:
        packets += decoder.feed(EXCHANGE[pos : pos + size])
        pos += size
    packets += decoder.feed(EXCHANGE[pos:])
    assert b"".join(p.command for p in packets) == EXPECTED_COMMANDS


def test_partial_packet_is_buffered() -> None:
    decoder = PacketDecoder()
    assert decoder.feed(mb.HELO[:-1]) == []
    assert decoder.buffered == len(mb.HELO) - 1
    assert decoder.feed(mb.HELO[-1:]) == [Packet(b"H", b"mail.contoso.example\0")]
    assert decoder.buffered == 0


def test_zero_length_is_an_error() -> None:
    with pytest.raises(FramingError, match="zero-length"):
        PacketDecoder().feed(b"\x00\x00\x00\x00")


def test_oversized_length_fails_before_payload_arrives() -> None:
    decoder = PacketDecoder(max_packet=100)
    with pytest.raises(FramingError, match="exceeds the limit of 100"):
        decoder.feed(b"\x00\x00\x00\x65")  # 101, no payload sent yet


def test_length_at_limit_is_accepted() -> None:
    decoder = PacketDecoder(max_packet=5)
    assert decoder.feed(b"\x00\x00\x00\x05Babcd") == [Packet(b"B", b"abcd")]


def test_huge_announced_length_with_default_limit() -> None:
    with pytest.raises(FramingError):
        PacketDecoder().feed(b"\xff\xff\xff\xffO")


def test_max_packet_must_be_positive() -> None:
    with pytest.raises(ValueError):
        PacketDecoder(max_packet=0)
