"""Fuzzing the header parser and the detector (issue 10): mutated real header shapes, raw bytes
and random header lists never raise, never hang, and never name a hop that is not in the
input.  The normal suite runs a bounded number of examples; ``DROSSEL_FUZZ_EXAMPLES`` runs more,
e.g. ``DROSSEL_FUZZ_EXAMPLES=20000 pytest tests/core/test_detection_fuzz.py``.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from drossel.app.catalog_source import packaged_catalog
from drossel.core.detection import detect, detect_in_headers, parse_headers

EXAMPLES = int(os.environ.get("DROSSEL_FUZZ_EXAMPLES", "200"))
CATALOG = packaged_catalog()

SHAPES = [
    "Received: from MBX01.contoso.local (10.0.0.5) by EX01.contoso.local (10.0.0.6) with "
    "Microsoft SMTP Server\r\n (version=TLS1_2, cipher=TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384) id"
    "\r\n 15.1.2507.16; Mon, 2 Mar 2026 10:00:00 +0000\r\n",
    "Received: from mbx by ex02.fabrikam.example with mapi id 15.01.2507.016; Tue, 3 Mar 2026\r\n",
    "Received: from EX2010.contoso.local ([10.1.1.1]) by EX2010.contoso.local ([10.1.1.1]) with"
    " Microsoft SMTP Server (TLS) id 14.3.487.0; Wed, 4 Mar 2026 08:00:00 +0100\r\n",
    "Received: from NAM12-DM6-obe.outbound.protection.outlook.com (40.107.1.1) by "
    "mx.example.net with ESMTPS; Thu, 5 Mar 2026\r\n",
    "Received: from mx.relay.example (mx.relay.example [198.51.100.7]) by mx.us.example "
    "(Postfix) with ESMTPS id 4ABC; Fri, 6 Mar 2026\r\n",
]

settings_ = settings(
    max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


@st.composite
def mutated_block(draw: st.DrawFn) -> str:
    lines = draw(st.lists(st.sampled_from(SHAPES), min_size=1, max_size=8))
    text = "".join(lines)
    for _ in range(draw(st.integers(0, 6))):
        if not text:
            break
        at = draw(st.integers(0, len(text) - 1))
        action = draw(st.sampled_from(["insert", "delete", "repeat", "case"]))
        if action == "insert":
            piece = draw(st.sampled_from(["\r\n", "\n ", "\t", ";", "(", ")", "id ", "\x00", "é"]))
            text = text[:at] + piece + text[at:]
        elif action == "delete":
            text = text[:at] + text[at + draw(st.integers(1, 40)) :]
        elif action == "repeat":
            text = text[:at] + text[at : at + 60] * draw(st.integers(2, 50)) + text[at:]
        else:
            text = text[:at] + text[at:].swapcase()
    return text


@settings_
@given(mutated_block())
def test_mutated_real_shapes(block: str) -> None:
    result = detect(block, (), catalog=CATALOG)
    if result.connecting is not None:  # a name from the input, never an invented one
        assert result.connecting.server.lower() in block.lower()


@settings_
@given(st.binary(max_size=4000))
def test_raw_bytes(data: bytes) -> None:
    text = data.decode("utf-8", "surrogateescape")
    headers = parse_headers(text)
    detect_in_headers(headers, (".example",), catalog=CATALOG)


@settings_
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["Received", "RECEIVED", "X-Drossel", "From", ""]),
            st.text(max_size=400),
        ),
        max_size=40,
    )
)
def test_random_header_lists(headers: list[tuple[str, str]]) -> None:
    result = detect_in_headers(headers, (), catalog=CATALOG)
    if result.connecting is not None:
        joined = " ".join(v for _, v in headers).lower()
        assert result.connecting.server.lower() in joined
