"""The remembered Received prefixes (``detection._MEMO``) give exactly what a full parse gives."""

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drossel.core import detection
from drossel.core.detection import detect, parse_headers, parse_hop, unfold

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
REAL_SAMPLES = Path(__file__).resolve().parents[3] / "shared" / "research" / "header-samples"

EXCHANGE_LINE = (
    "from mbx1.corp.example (10.1.0.2) by ex01.corp.example (10.1.0.1) with Microsoft SMTP "
    "Server (version=TLS1_2, cipher=TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384) id 15.1.2507.6; "
)


def _received_values() -> list[str]:
    files = [p for p in FIXTURES.rglob("*") if p.is_file()]
    if REAL_SAMPLES.is_dir():
        files += [p for p in REAL_SAMPLES.iterdir() if p.is_file()]
    block_of = detection.header_block
    values = []
    for path in files:
        for name, value in parse_headers(block_of(path.read_bytes())):
            if name.lower() == "received":
                values.append(unfold(value))
    return values


def test_every_sample_line_parses_the_same_remembered_or_not() -> None:
    values = _received_values()
    remembered = 0
    for position, value in enumerate(values):
        detection._MEMO.clear()
        first = parse_hop(value, position)
        again = parse_hop(value, position)  # from the memo, if the line ends in a date
        full = detection._parse(
            value[: detection.MAX_RECEIVED_LENGTH], position, detection.MICROSOFT_HOSTED
        )
        assert first == again == full, value
        remembered += bool(detection._MEMO)
    assert remembered > 50  # the memo is really used on real lines


def test_same_line_other_date_and_position_keeps_its_own_evidence() -> None:
    detection._MEMO.clear()
    a = parse_hop(EXCHANGE_LINE + "Mon, 2 Mar 2026 10:00:00 +0000", 0)
    b = parse_hop(EXCHANGE_LINE + "Tue, 3 Mar 2026 11:30:59 -0500", 4)
    assert len(detection._MEMO) == 1
    assert a is not None and b is not None
    assert (a.position, b.position) == (0, 4)
    assert b.header.endswith("11:30:59 -0500")
    assert (
        (a.by, a.build, a.product)
        == (b.by, b.build, b.product)
        == (
            "ex01.corp.example",
            a.build,
            "Exchange 2016",
        )
    )


@pytest.mark.parametrize(
    "tail",
    [
        "by evil.example with Microsoft SMTP Server id 15.2.2562.53",  # not a date: full parse
        "Mon, 2 Mar 2026 10:00:00 +0000 (UTC)",  # comment after the date: full parse
    ],
)
def test_a_tail_that_is_not_a_plain_date_is_not_remembered(tail: str) -> None:
    detection._MEMO.clear()
    hop = parse_hop(EXCHANGE_LINE + tail, 0)
    assert not detection._MEMO
    assert hop == detection._parse(EXCHANGE_LINE + tail, 0, detection.MICROSOFT_HOSTED)


@settings(max_examples=300, deadline=None)
@given(
    prefix=st.text(
        alphabet=st.sampled_from(list("ab ()y;:.[]-\n\tMSTPIdwithmapiserverfom15.0")), max_size=120
    ),
    day=st.integers(1, 31),
)
def test_random_prefixes_before_a_date_agree_with_a_full_parse(prefix: str, day: int) -> None:
    value = unfold(prefix + EXCHANGE_LINE + f"Wed, {day} Apr 2026 09:08:07 +0200")
    detection._MEMO.clear()
    assert parse_hop(value, 1) == detection._parse(value, 1, detection.MICROSOFT_HOSTED)
    assert parse_hop(value, 1) == detection._parse(value, 1, detection.MICROSOFT_HOSTED)


def test_whole_message_detection_is_stable_across_repeats(headers_dir: Path) -> None:
    message = (headers_dir / "exchange2016_crlf_folded.eml").read_bytes()
    detection._MEMO.clear()
    cold = detect(message)
    warm = detect(message)
    assert cold == warm and cold.connecting is not None
