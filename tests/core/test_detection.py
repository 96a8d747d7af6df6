"""Detection on our own samples, on the 57 labelled real samples, and on hostile input."""

import csv
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drossel.core.detection import detect, detect_in_headers, parse_headers

REAL_SAMPLES = Path(__file__).resolve().parents[3] / "shared" / "research" / "header-samples"


def test_crlf_folding_anywhere_and_mapi_higher_on_same_host(headers_dir: Path) -> None:
    result = detect((headers_dir / "exchange2016_crlf_folded.eml").read_bytes())
    assert [h.to_json()["build"] for h in result.hops] == ["15.1.2507.16", "15.1.2507.23"]
    assert result.hops[1].kind == "mapi"
    assert result.connecting is not None and result.origin is not None
    assert result.connecting.server == "ex01.contoso.local"
    assert result.connecting.build.short == "15.1.2507.16"
    # EX02 wrote only the mapi line: 15.01.2507.023 parsed to the short form.
    assert result.origin.server == "ex02.contoso.local"
    assert result.origin.build.short == "15.1.2507.23"
    assert result.origin.product == "Exchange 2016"


def test_smtp_id_lagging_behind_mapi_takes_the_higher(headers_dir: Path) -> None:
    result = detect((headers_dir / "exchange2013_smtp_lags_mapi.txt").read_text())
    assert result.connecting is not None and result.origin is not None
    assert (result.connecting.server, result.connecting.build.short) == (
        "edge.fabrikam.example",
        "15.0.1497.2",
    )
    assert (result.origin.server, result.origin.build.short) == (
        "hub01.fabrikam.local",
        "15.0.1497.48",
    )


def test_exchange_online_hops_are_skipped_and_marked_cloud(headers_dir: Path) -> None:
    result = detect((headers_dir / "hybrid_exo_then_onprem.txt").read_text())
    clouds = [h.cloud for h in result.hops]
    assert clouds == [False, True, True]
    assert [h.product for h in result.hops] == ["Exchange SE", "Exchange Online", "Exchange Online"]
    assert result.connecting is not None and result.origin is not None
    assert result.connecting.server == result.origin.server == "mail.tailspin.example"


def test_iis_smtpsvc_is_not_exchange_and_versionless_mapi_has_no_build(headers_dir: Path) -> None:
    result = detect((headers_dir / "exchange2010_and_iis.txt").read_text())
    assert [(h.by, h.kind) for h in result.hops] == [
        ("iis01.northwind.example", "smtp"),
        ("cas01.northwind.local", "mapi"),
    ]
    assert result.hops[1].build is None
    assert result.connecting is not None
    assert result.connecting.build.short == "14.3.498.0"
    assert result.connecting.product == "Exchange 2010"


def test_trusted_hosts_are_skipped(headers_dir: Path) -> None:
    text = (headers_dir / "trusted_exchange_relay.txt").read_text()
    untrusted = detect(text)
    assert untrusted.connecting is not None
    assert untrusted.connecting.server == "relay.ourside.example"
    trusted = detect(text, trusted_hosts=["relay.ourside.example"])
    assert trusted.connecting is not None
    assert trusted.connecting.server == "gw.partner.example"
    assert trusted.connecting.product == "Exchange 2007"
    by_domain = detect(text, trusted_hosts=[".ourside.example"])
    assert by_domain.connecting == trusted.connecting


def test_no_exchange_gives_nulls(headers_dir: Path) -> None:
    result = detect((headers_dir / "no_exchange.txt").read_text())
    assert result.to_json() == {"hops": [], "connecting": None, "origin": None}


def test_tabs_lf_and_body_lookalikes() -> None:
    message = (
        "Received: from a.example (a.example [192.0.2.1])\n\tby\tEX9.corp.example\twith\t"
        "Microsoft\tSMTP\tServer\tid\t15.2.1748.39;\tMon, 1 Jun 2026 10:00:00 +0000\n"
        "Subject: hi\n\n"
        "Received: from fake by fake.example with Microsoft SMTP Server id 8.0.685.25;\n"
    )
    result = detect(message)
    assert len(result.hops) == 1
    assert result.connecting is not None and result.connecting.build.short == "15.2.1748.39"


def test_huge_and_binary_input_does_not_crash() -> None:
    junk = b"Received: " + b"\xff\xfe(" * 500_000 + b"\r\n\r\n"
    assert detect(junk).connecting is None
    many = "".join(
        f"Received: from h{i} by h{i}.example with Microsoft SMTP Server id 15.1.2507.{i};\n"
        for i in range(5000)
    )
    result = detect(many)
    assert len(result.hops) == 200  # bounded
    latin1 = "Received: from \xe9t\xe9 by mx.\xe9x with Microsoft SMTP Server id 15.0.1497.2;\n"
    assert detect(latin1.encode("latin-1")).connecting is not None


def test_parse_headers_skips_non_header_lines() -> None:
    headers = parse_headers("# source: x\nFrom nobody Mon\nSubject: a\n b\nX-Y:z\n")
    assert headers == [("Subject", "a b"), ("X-Y", "z")]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["Received", "received", "X"]), st.text(max_size=300))))
def test_detection_is_total(headers: list[tuple[str, str]]) -> None:
    result = detect_in_headers(headers)
    assert result.connecting is None or result.connecting.product is not None


def _labels() -> list[dict[str, str]]:
    labels = REAL_SAMPLES / "labels.csv"
    if not labels.exists():
        return []
    with labels.open(newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.shared
@pytest.mark.parametrize("row", _labels() or [None], ids=lambda r: r["file"] if r else "absent")
def test_real_labelled_samples(row: dict[str, str] | None) -> None:
    if row is None:
        pytest.skip("../shared/research/header-samples is not present")
    result = detect((REAL_SAMPLES / row["file"]).read_bytes())
    if row["expected_build"]:
        assert result.origin is not None
        assert result.origin.build.short == row["expected_build"]
        assert result.origin.product == row["expected_product"]
        assert result.connecting is not None
    else:
        assert result.origin is None
        assert result.connecting is None
        if row["expected_product"] == "Exchange Online":
            assert result.hops and all(h.cloud for h in result.hops)
