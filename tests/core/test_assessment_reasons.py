"""The grade explains itself: missing updates by name and KB; builds that no on-premises product
ever had are never graded as on-premises servers."""

from __future__ import annotations

from datetime import date

import pytest

from drossel.core.assessment import assess
from drossel.core.build import Build
from drossel.core.catalog import Catalog
from drossel.core.policy import Policy


def _grade(catalog: Catalog, build: str, day: str):  # type: ignore[no-untyped-def]
    return assess(Build.from_text(build), date.fromisoformat(day), catalog, Policy())


def test_missing_updates_are_named_with_their_kb(catalog: Catalog) -> None:
    # 2019 CU14 Mar24SU in December 2024: Apr24HU is a hotfix (not named), the SUs after are.
    result = _grade(catalog, "15.2.1544.9", "2024-12-20")
    assert result.status == "behind"
    missing = [
        r
        for r in catalog.releases
        if r.is_security_update
        and catalog.line_of(r).build == Build(15, 2, 1544, 4)
        and r.build > Build(15, 2, 1544, 9)
        and r.release_date <= date(2024, 12, 20)
    ]
    assert missing
    named = [r for r in result.reasons if r.startswith("missing: ")]
    assert len(named) == 1
    for release in missing:
        assert release.update_name in named[0]
        assert release.kb is not None and release.kb in named[0]
    assert "HU" not in named[0]


def test_long_lists_are_cut_and_counted(catalog: Catalog) -> None:
    # 2016 CU23 RTM build on its last public day: every CU23 SU is missing
    result = _grade(catalog, "15.1.2507.6", "2025-10-14")
    named = next(r for r in result.reasons if r.startswith("missing: "))
    assert named.count("KB") == 6 and " more" in named


@pytest.mark.parametrize(
    ("build", "why"),
    [
        ("14.16.287.2", "Microsoft-hosted service build"),  # Exchange Online, 2013
        ("14.4.1.0", "Microsoft-hosted service build"),
        ("8.5.1.0", "no on-premises Exchange ever had"),
        ("15.20.7472.33", "Microsoft-hosted service build"),
        ("15.0.1010.18", "no on-premises Exchange 2013 release has build line 15.0.1010"),
        ("15.1.1005.5", "no on-premises Exchange 2016 release has build line 15.1.1005"),
        ("15.0.400.1", "no on-premises Exchange 2013 release has build line 15.0.400"),
    ],
)
def test_builds_no_on_premises_product_had_are_not_graded(
    catalog: Catalog, build: str, why: str
) -> None:
    for day in ("2013-06-01", "2017-06-01", "2026-11-23"):
        result = _grade(catalog, build, day)
        assert result.status == "not_applicable", (build, day)
        assert not result.persistently_vulnerable
        assert any(why in r for r in result.reasons), result.reasons


def test_on_premises_lines_and_unlisted_revisions_still_graded(catalog: Catalog) -> None:
    # revisions below or between catalog entries of a real CU line are real servers
    for build in ("15.1.1713.4", "15.0.1156.0", "15.0.1497.38", "15.1.2375.34", "14.3.498.0"):
        assert catalog.is_on_premises_line(Build.from_text(build)), build
        assert _grade(catalog, build, "2026-11-23").status == "unsupported", build
    # newer than the catalog: unknown, never ruled out as hosted
    assert catalog.is_on_premises_line(Build.from_text("15.2.2600.1"))
    assert _grade(catalog, "15.2.2600.1", "2026-11-23").status == "unknown"


@pytest.mark.parametrize(
    ("build", "last_line"),
    [
        ("15.0.1500.1", "15.0.1497"),  # Exchange 2013 ended at CU23
        ("15.1.2600.5", "15.1.2507"),  # Exchange 2016 ended at CU23 (ESU updates keep 2507)
        ("15.2.1800.3", "15.2.1748"),  # Exchange 2019 ended at CU15; SE starts at 15.2.2562
    ],
)
def test_a_line_after_a_closed_products_last_cu_is_not_on_premises(
    catalog: Catalog, build: str, last_line: str
) -> None:
    """A closed product (support over before the catalog's newest release) gets no new CU, so
    a line above its last one is not an on-premises server; it is derived from the catalog's
    lifecycle dates, not listed by hand."""
    assert catalog.is_closed("Exchange 2013") and catalog.is_closed("Exchange 2019")
    assert not catalog.is_closed("Exchange SE")
    assert not catalog.is_on_premises_line(Build.from_text(build))
    result = _grade(catalog, build, "2026-11-23")
    assert result.status == "not_applicable" and not result.persistently_vulnerable
    assert any(f"its last CU line is {last_line}" in r for r in result.reasons), result.reasons
    # a later revision of the last line is a real (unlisted) update, never ruled out
    later = f"{last_line}.99"
    assert catalog.is_on_premises_line(Build.from_text(later))
    assert _grade(catalog, later, "2026-11-23").status != "not_applicable"


def test_a_live_or_future_product_is_never_closed(catalog: Catalog) -> None:
    """Closing needs the catalog to know releases after the end of support: a catalog that
    stops before a product's end keeps lines above its newest build open ("unknown")."""
    from dataclasses import replace

    cut = date(2025, 10, 1)  # before 2016/2019's end of extended support
    old = replace(catalog, releases=tuple(r for r in catalog.releases if r.release_date <= cut))
    assert not old.is_closed("Exchange 2016") and not old.is_closed("Exchange 2019")
    assert old.is_closed("Exchange 2013")
    assert old.is_on_premises_line(Build.from_text("15.1.2600.5"))
    assert not catalog.is_closed("Exchange SE")
    assert catalog.is_on_premises_line(Build.from_text("15.2.2600.1"))
