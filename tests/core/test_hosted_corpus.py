"""Detection on our corpus of Microsoft-hosted chains of every era (tests/fixtures/hosted).

Each case is built from a public example (its ``# source:`` line) with real shapes and real
builds and fictional organisations.  ``# expect-connecting:`` / ``# expect-origin:`` give
``host build`` or ``none``; ``# needs: catalog`` marks cases that only the catalog can decide
(a 15.x build line no on-premises release ever had).  Every case is also run in four format
variants (lower case, tab folding, CRLF, reflowed onto one line).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest
from tests.conftest import FIXTURES

from drossel.core.catalog import Catalog
from drossel.core.detection import DetectedServer, Detection, detect
from drossel.core.hosted import MICROSOFT_HOSTED

CORPUS = FIXTURES / "hosted"
CASES = sorted(CORPUS.iterdir())
META_RE = re.compile(r"^# ([a-z-]+): (.*)$", re.MULTILINE)


def _meta(path: Path) -> dict[str, str]:
    text = path.read_bytes().decode("utf-8").replace("\r\n", "\n")
    return dict(META_RE.findall(text))


def _expected(value: str) -> tuple[str, str] | None:
    if value == "none":
        return None
    host, build = value.split()
    return host.lower(), build


def _got(server: DetectedServer | None) -> tuple[str, str] | None:
    return None if server is None else (server.server, server.build.short)


def _assert_never_hosted(result: Detection) -> None:
    """No Microsoft-hosted hop is ever named as a server, and every hop on a Microsoft host
    family or machine name is marked cloud."""
    for server in (result.connecting, result.origin):
        if server is not None:
            assert MICROSOFT_HOSTED.host_rule(server.server) is None, server
            assert MICROSOFT_HOSTED.build_rule(server.build) is None, server
            assert server.product != "Exchange Online", server
    for hop in result.hops:
        if MICROSOFT_HOSTED.classify(hop.by, hop.build) is not None:
            assert hop.cloud and hop.hosted, hop


def test_corpus_is_large_and_documented() -> None:
    assert len(CASES) >= 40
    for path in CASES:
        meta = _meta(path)
        assert meta.get("source") and meta.get("shape"), path.name
        assert "expect-connecting" in meta and "expect-origin" in meta, path.name
    kinds = {path.name.split("_")[0].rstrip("0123456789") for path in CASES}
    assert {"exo", "hybrid", "filter", "two", "edge", "variant", "truncated"} <= kinds


@pytest.mark.parametrize("path", CASES, ids=lambda p: p.name)
def test_corpus_case(path: Path, catalog: Catalog) -> None:
    meta = _meta(path)
    raw = path.read_bytes()
    with_catalog = detect(raw, catalog=catalog)
    assert _got(with_catalog.connecting) == _expected(meta["expect-connecting"])
    assert _got(with_catalog.origin) == _expected(meta["expect-origin"])
    _assert_never_hosted(with_catalog)
    if meta.get("needs") != "catalog":
        # The shipped host and build knowledge alone decides every other case.
        assert detect(raw) == with_catalog
    else:
        assert detect(raw).connecting is not None  # the catalog is what rules the hop out


def _lower(text: str) -> str:
    return text.lower()


def _tabs(text: str) -> str:
    return re.sub(r"\n[ \t]+", "\n\t", text)


def _crlf(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\n", "\r\n")


def _reflow(text: str) -> str:
    return re.sub(r"\r?\n[ \t]+", " ", text)


VARIANTS: dict[str, Callable[[str], str]] = {
    "lower": _lower,
    "tabs": _tabs,
    "crlf": _crlf,
    "reflow": _reflow,
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_case_survives_format_variants(variant: str, catalog: Catalog) -> None:
    change = VARIANTS[variant]
    for path in CASES:
        text = path.read_bytes().decode("utf-8")
        base = detect(text, catalog=catalog)
        changed = detect(change(text), catalog=catalog)
        assert _got(changed.connecting) == _got(base.connecting), (variant, path.name)
        assert _got(changed.origin) == _got(base.origin), (variant, path.name)
        _assert_never_hosted(changed)
