"""The Microsoft-hosted mail knowledge: the shipped data is complete and sourced, and every rule
matches what it claims and nothing an on-premises organisation would be called."""

from __future__ import annotations

import re

import pytest

from drossel.core.build import Build, product_of
from drossel.core.detection import detect, is_cloud_host, parse_hop
from drossel.core.hosted import MICROSOFT_HOSTED, HostedDataError, hosted_from_data
from drossel.data import microsoft_hosted

ON_PREMISES_NAMES = (
    "ex01.contoso.example",
    "mail.fabrikam.example",
    "exchange.northwind.local",
    "EX2019-MBX01.corp.tailspin.example",
    "edge01.dmz.litware.example",
    "o365-in.adatum.example",  # an on-premises server named after Office 365
    "outlook.contoso.example",
    "mail.notoutlook.com",
    "protection.outlook.com.evil.example",
    "smtp-relay.hotmail-archive.example",
    "cas13",
    "mbx1",
    "10.1.2.3",
    # names shaped a little like Microsoft machine names (pod patterns match the first label
    # whatever the zone, so they must stay this specific)
    "mail01-ex1.contoso.example",
    "mail2-dc1.fabrikam.example",
    "mail-gw01.northwind.example",
    "mail-in1.tailspin.example",
    "ex-ny1-obe.litware.example",
    "srv01-ex2019.corp.example",
    "HE105712.emea1.cds.t-internal.example",
    "chn-vm-ex04.mchp-main.example",
    "US01WEHTC3.internal.example",
)


def test_every_entry_names_its_service_and_public_source() -> None:
    entries = (
        microsoft_hosted.HOST_FAMILIES
        + microsoft_hosted.POD_NAME_PATTERNS
        + microsoft_hosted.BUILD_RANGES
    )
    assert len(MICROSOFT_HOSTED.rules) == len(entries)
    for rule in MICROSOFT_HOSTED.rules:
        assert len(rule.service) > 10 and len(rule.source) > 10, rule


def test_family_examples_match_their_own_family() -> None:
    for item in microsoft_hosted.HOST_FAMILIES:
        for example in item["examples"].split(", "):
            rule = MICROSOFT_HOSTED.host_rule(example.replace("*", "x"))
            assert rule is not None, example
            assert example.lower().endswith(rule.match) or rule.kind == "pod", example


def test_pod_examples_match_as_bare_machine_names() -> None:
    for item in microsoft_hosted.POD_NAME_PATTERNS:
        pattern = re.compile(item["pattern"], re.IGNORECASE)
        for example in item["examples"].split(", "):
            name = example.split(".")[0]
            assert pattern.fullmatch(name), (item["pattern"], name)
            assert MICROSOFT_HOSTED.host_rule(name) is not None, name
            # a truncated zone does not hide the machine name
            assert MICROSOFT_HOSTED.host_rule(name + ".namprd07.pro") is not None, name


@pytest.mark.parametrize("host", ON_PREMISES_NAMES)
def test_on_premises_names_are_not_hosted(host: str) -> None:
    assert MICROSOFT_HOSTED.host_rule(host) is None
    assert not is_cloud_host(host)


@pytest.mark.parametrize(
    ("host", "service_word"),
    [
        ("BY2PR07MB042.namprd07.prod.outlook.com", "Exchange Online"),
        ("pod51018.outlook.com", "Exchange Online"),
        ("CO2PR07CA008.outlook.office365.com", "front-end"),
        ("BL2FFO11HUB016.protection.gbl", "FFO"),
        ("VA3EHSOBE006.BIGFISH.COM.", "FOPE"),
        ("outbound-va3.frontbridge.com", "FrontBridge"),
        ("039-SN1MMR1-003.039d.mgd.msft.net", "Dedicated"),
        ("NT0PR01MB1278.CHNPR01.prod.partner.outlook.cn", "21Vianet"),
        ("USG02-BN3-obe.outbound.protection.office365.us", "GCC High"),
        ("xyz.mail.protection.outlook.de", "Deutschland"),
        ("FRAPR01MB1170.DEUPRD01.PROD.OUTLOOK.DE", "Deutschland"),
        ("GER01-LEJ-obe", "outbound pools"),
        ("mail-bn8nam04on2046", "outbound machines"),
        ("BL0GCC02FT048", "forest machines"),
        ("BL02EPF0001A100", "front-door"),
        ("048-CH1MPN1-032", "Dedicated"),
        ("blu0-omc3-s29.blu0.hotmail.com", "Hotmail"),
        ("BLU0-SMTP479.phx.gbl", "Hotmail"),
        ("mail.microsoft.com", "Microsoft's own"),
        ("[outlook.com]", "Exchange Online"),
    ],
)
def test_hosted_hosts_name_their_service(host: str, service_word: str) -> None:
    rule = MICROSOFT_HOSTED.host_rule(host)
    assert rule is not None and service_word in rule.service


def test_build_ranges_cover_only_service_builds() -> None:
    for text in ("14.16.287.2", "14.16.227.3", "14.4.0.0", "15.20.7472.33", "15.21.202.18"):
        assert MICROSOFT_HOSTED.build_rule(Build.from_text(text)) is not None, text
    for text in ("14.3.123.4", "14.3.509.0", "8.3.485.1", "15.2.2562.53", "15.1.1034.10"):
        assert MICROSOFT_HOSTED.build_rule(Build.from_text(text)) is None, text
    # Exchange 2007/2010 ended at service pack 3: a higher minor is no on-premises product
    assert product_of(Build.from_text("14.16.423.0")) is None
    assert product_of(Build.from_text("8.4.1.0")) is None
    assert product_of(Build.from_text("14.3.509.0")) == "Exchange 2010"


def test_hop_records_why_it_is_hosted() -> None:
    hop = parse_hop(
        "from a.example (192.0.2.1) by CH1EHSMHS014.bigfish.com (10.43.70.14) with "
        "Microsoft SMTP Server (TLS) id 14.1.225.22; Fri, 11 Nov 2011 00:29:21 +0000",
        0,
    )
    assert hop is not None and hop.cloud and hop.product == "Exchange Online"
    assert hop.hosted is not None and "FOPE" in hop.hosted
    assert hop.to_json()["hosted"] == hop.hosted
    plain = parse_hop("from a by ex.contoso.example with Microsoft SMTP Server id 15.1.2507.6;", 0)
    assert plain is not None and plain.hosted is None and "hosted" not in plain.to_json()


def test_other_knowledge_can_be_passed_in() -> None:
    """Detection takes the rules as data: an operator's extra family works like a shipped one."""
    message = (
        "Received: from a.example by relay.partner-cloud.example with Microsoft SMTP Server "
        "id 15.1.2507.6; Mon, 1 Jun 2026 10:00:00 +0000\n"
    )
    assert detect(message).connecting is not None
    extra = hosted_from_data(
        [
            *microsoft_hosted.HOST_FAMILIES,
            {"suffix": ".partner-cloud.example", "service": "a test cloud", "source": "this test"},
        ],
        microsoft_hosted.POD_NAME_PATTERNS,
        microsoft_hosted.BUILD_RANGES,
    )
    assert detect(message, hosted=extra).connecting is None


@pytest.mark.parametrize(
    ("families", "pods", "builds", "message"),
    [
        ([{"suffix": "outlook.com", "service": "s", "source": "x"}], [], [], "suffix"),
        ([{"suffix": ".outlook.com", "service": "s"}], [], [], "source"),
        ([], [{"pattern": "(", "service": "s", "source": "x"}], [], "bad pattern"),
        (
            [],
            [],
            [{"low": "15.20.0.0", "high": "15.1.0.0", "service": "s", "source": "x"}],
            "low <= high",
        ),
        ([], [], [{"low": "x", "high": "15.1.0.0", "service": "s", "source": "x"}], "builds"),
    ],
)
def test_bad_data_is_refused_with_the_entry_named(
    families: list[dict[str, str]],
    pods: list[dict[str, str]],
    builds: list[dict[str, str]],
    message: str,
) -> None:
    with pytest.raises(HostedDataError, match=message):
        hosted_from_data(families, pods, builds)


def test_hostile_host_names_are_cheap_and_safe() -> None:
    assert MICROSOFT_HOSTED.host_rule("a" * 100_000 + ".outlook.com") is None  # cut at 255
    assert MICROSOFT_HOSTED.host_rule("") is None
    assert MICROSOFT_HOSTED.host_rule(None) is None
    assert MICROSOFT_HOSTED.host_rule("\x00\xff.bigfish.com") is not None
