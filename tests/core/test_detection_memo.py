"""The remembered Received prefixes (``detection._MEMO``) give exactly what a full parse gives."""

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drossel.app.catalog_source import packaged_catalog
from drossel.core import detection
from drossel.core.detection import detect, detect_in_headers, parse_headers, parse_hop, unfold

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


# --- whole messages: the remembered path (lines, hop sequences) against a full parse --------

#: the shipped data under another name: detection then parses every line in full, remembering
#: nothing (the memo only serves ``MICROSOFT_HOSTED`` itself)
UNREMEMBERED = detection.HostedServices(
    detection.MICROSOFT_HOSTED.families,
    detection.MICROSOFT_HOSTED.pods,
    detection.MICROSOFT_HOSTED.builds,
)
CATALOG = packaged_catalog()
TRUSTED = [(), (".local",), ("ex01.contoso.local", ".example")]


def _folded_headers(block: str) -> list[tuple[str, str]]:
    """(name, value) with the value still folded, as the milter hands them over."""
    headers: list[tuple[str, str]] = []
    for line in block.split("\n"):
        if line[:1] in (" ", "\t") and headers:
            name, value = headers[-1]
            headers[-1] = (name, value + "\n" + line)
            continue
        name, sep, value = line.partition(":")
        if sep and name and " " not in name:
            headers.append((name, value))
    return headers


def _same_as_full_parse(headers: list[tuple[str, str]]) -> None:
    for trusted in TRUSTED:
        for catalog in (CATALOG, None):
            full = detect_in_headers(headers, trusted, UNREMEMBERED, catalog)
            assert detect_in_headers(headers, trusted, catalog=catalog) == full, headers
            assert detect_in_headers(headers, trusted, catalog=catalog) == full, headers  # warm


def test_every_sample_message_detects_the_same_remembered_or_not() -> None:
    files = [p for p in FIXTURES.rglob("*") if p.is_file()]
    if REAL_SAMPLES.is_dir():
        files += [p for p in REAL_SAMPLES.iterdir() if p.is_file()]
    for path in files:
        block = detection.header_block(path.read_bytes())
        _same_as_full_parse(parse_headers(block))
        _same_as_full_parse(_folded_headers(block))


WORDS = [
    "from", "by", "with", "Microsoft", "SMTP", "Server", "mapi", "MAPI", "microsoft", "id",
    "15.1.2507.6", "15.01.2507.016", "15.2.1748.39", "15.20.6455.32", "15.0.1010.2", "(", ")",
    ";", " ", "  ", "\n\t", "\n ", "\x1c", "\u00a0", "ſ", "Mon,", "2", "Mar", "2026",
    "10:00:00", "+0000", "ex01.contoso.local", "ex02.corp.example", "mbx.corp.example",
    "DM6PR02CA0137.outlook.office365.com", "[10.0.0.1]", "(Postfix)",
]  # fmt: skip


@settings(max_examples=400, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["Received", "received", "RECEIVED", "Reply-To", "Subject"]),
            st.lists(st.sampled_from(WORDS), max_size=30).map("".join),
        ),
        max_size=10,
    )
)
def test_random_folded_headers_detect_the_same_remembered_or_not(
    headers: list[tuple[str, str]],
) -> None:
    _same_as_full_parse(headers)
    # the same lines again with other dates: only positions and evidence may differ
    redated = [(n, v.replace("Mon, 2 Mar", "Tue, 3 Mar")) for n, v in headers]
    _same_as_full_parse(redated)


def test_a_detection_from_the_memo_is_a_value_like_a_full_one() -> None:
    """The warm path keeps memo lines and builds its hops when read: the result still
    behaves as the frozen value the full parse gives (equal, same hash and repr, immutable,
    picklable), and its servers are there before any hop is built."""
    import pickle

    headers = [
        ("Received", "from a.example (a.example [192.0.2.1]) by mx.example (Postfix); x"),
        ("Received", EXCHANGE_LINE + "Mon, 2 Mar 2026 10:00:00 +0000"),
        ("Received", EXCHANGE_LINE.replace("ex01", "ex02") + "Mon, 2 Mar 2026 09:59:00 +0000"),
    ]
    full = detect_in_headers(headers, (), UNREMEMBERED, CATALOG)
    detect_in_headers(headers, (), catalog=CATALOG)  # the memo and the plan learn the lines
    warm = detect_in_headers(headers, (), catalog=CATALOG)
    assert warm.connecting == full.connecting and warm.origin == full.origin
    assert warm.connecting is not None and warm.connecting.server == "ex01.corp.example"
    assert warm.origin is not None and warm.origin.server == "ex02.corp.example"
    assert warm == full and hash(warm) == hash(full) and repr(warm) == repr(full)
    assert [h.position for h in warm.hops] == [1, 2]
    assert pickle.loads(pickle.dumps(warm)) == full
    with pytest.raises(AttributeError):
        warm.connecting = None
    with pytest.raises(AttributeError):
        full.origin = None
    assert warm != full.to_json()  # compared as a Detection only
