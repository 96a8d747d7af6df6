"""The packaged Exchange build catalog: internal invariants, and a cross-check against the team's
reference compilation in ``../shared/research/exchange-builds.csv`` (skipped when absent)."""

from __future__ import annotations

import csv
import json
import re
from datetime import date, timedelta
from pathlib import Path

import pytest

import drossel
from drossel.core.build import SE_MIN_BUILD, Build, product_of
from drossel.core.catalog import RELEASE_KINDS, Catalog, Release, parse_catalog

CATALOG_PATH = Path(drossel.__file__).parent / "data" / "exchange-catalog.json"
REFERENCE_CSV = (
    Path(__file__).resolve().parents[2].parent / "shared" / "research" / "exchange-builds.csv"
)

PRODUCTS = {
    # name: (general availability, mainstream end, extended end)
    "Exchange 2007": ("2007-03-08", "2012-04-10", "2017-04-11"),
    "Exchange 2010": ("2009-11-09", "2015-01-13", "2020-10-13"),
    "Exchange 2013": ("2013-01-09", "2018-04-10", "2023-04-11"),
    "Exchange 2016": ("2015-10-01", "2020-10-13", "2025-10-14"),
    "Exchange 2019": ("2018-10-22", "2024-01-09", "2025-10-14"),
    "Exchange SE": ("2025-07-01", None, None),  # Modern Lifecycle: no fixed end dates
}

# Rows where the catalog deliberately differs from the reference CSV: build -> (CSV date,
# catalog date, reason).  Keep this list short; each entry needs a source-backed reason.
DATE_EXCEPTIONS: dict[str, tuple[str, str, str]] = {
    "8.1.278.2": (
        "2008-05-08",
        "2008-05-09",
        "Exchange 2007 SP1 RU2: Learn says May 9, 2008 (every stored copy); the CSV took "
        "Get-ExchangeBuildNumber's 5/8/2008. Learn wins where sources disagree.",
    ),
}

# Catalog builds the reference CSV does not list: build -> reason.  Currently none.
EXTRA_BUILDS: dict[str, str] = {}

MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_SU_TOKEN = re.compile(r"\b(" + "|".join(MONTHS) + r")(\d\d)(SU|HU)(v\d)?$")

LEARN_SU_START = date(2021, 3, 1)
"""Learn lists SU builds only from the March 2021 SU on; older SUs come from CSS-Exchange."""


@pytest.fixture(scope="module")
def raw() -> dict[str, object]:
    data = json.loads(CATALOG_PATH.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return parse_catalog(CATALOG_PATH.read_text(encoding="utf-8"))


def _patch_tuesday(year: int, month: int) -> date:
    first = date(year, month, 1)
    first_tuesday = first + timedelta(days=(1 - first.weekday()) % 7)
    return first_tuesday + timedelta(days=7)


# ---- internal invariants ------------------------------------------------------------------------


def test_builds_are_unique_and_short_form(raw: dict[str, object]) -> None:
    releases = raw["releases"]
    assert isinstance(releases, list)
    builds = [item["build"] for item in releases]
    assert len(builds) == len(set(builds))
    for text in builds:
        parsed = Build.parse(text)
        assert parsed is not None and parsed.short == text, text


def test_one_release_per_line_in_the_file() -> None:
    lines = CATALOG_PATH.read_text(encoding="utf-8").splitlines()
    release_lines = [line for line in lines if '"update_name"' in line]
    assert len(release_lines) == len(parse_catalog(CATALOG_PATH.read_text()).releases)


def test_every_product_has_releases(catalog: Catalog) -> None:
    assert set(catalog.products) == set(PRODUCTS)
    for name in PRODUCTS:
        assert catalog.releases_of(name), name


def test_product_lifecycle_dates(catalog: Catalog) -> None:
    def iso(d: date | None) -> str | None:
        return None if d is None else d.isoformat()

    for name, (ga, mainstream, extended) in PRODUCTS.items():
        product = catalog.products[name]
        assert iso(product.general_availability) == ga, name
        assert iso(product.mainstream_end) == mainstream, name
        assert iso(product.extended_end) == extended, name


def test_kinds_and_product_detection(catalog: Catalog) -> None:
    for release in catalog.releases:
        assert release.kind in RELEASE_KINDS
        assert product_of(release.build) == release.product, release.update_name
        b = release.build
        if release.product == "Exchange SE":
            assert (b.major, b.minor) == (15, 2) and b.build >= SE_MIN_BUILD
        elif release.product == "Exchange 2019":
            assert (b.major, b.minor) == (15, 2) and b.build < SE_MIN_BUILD
    assert SE_MIN_BUILD == 2562
    se_rtm = catalog.exact(Build(15, 2, 2562, 17))
    assert se_rtm is not None and se_rtm.kind == "RTM" and se_rtm.product == "Exchange SE"
    assert product_of(Build(15, 2, 2561, 99)) == "Exchange 2019"


def test_updates_are_not_older_than_their_base(catalog: Catalog) -> None:
    for release in catalog.releases:
        if release.is_base or release.kind == "Preview":
            continue
        base = catalog.line_of(release)
        assert base.is_base, release.update_name
        assert release.release_date >= base.release_date, (release.update_name, base.update_name)
        if release.kind in ("SU", "HU"):
            # An SU/HU patches one CU: same major.minor.build, named after it.
            assert release.build.cu_key == base.build.cu_key, release.update_name
            assert release.update_name.startswith(base.update_name + " "), release.update_name


def _su_token(release: Release) -> tuple[int, int, bool] | None:
    match = _SU_TOKEN.search(release.update_name)
    if match is None:
        return None
    month = MONTHS.index(match.group(1)) + 1
    return 2000 + int(match.group(2)), month, match.group(4) is not None


def test_su_and_hu_dates_match_their_names(catalog: Catalog) -> None:
    for release in catalog.releases:
        if release.kind not in ("SU", "HU"):
            continue
        token = _su_token(release)
        assert token is not None, release.update_name
        year, month, is_rerelease = token
        d = release.release_date
        if is_rerelease:  # a v2 ships after the original, possibly in the next month
            assert d >= date(year, month, 1), release.update_name
        else:
            assert (d.year, d.month) == (year, month), release.update_name
        if d < LEARN_SU_START:
            # CSS-Exchange-only SUs carry no date; the catalog derives the Patch Tuesday.
            assert d == _patch_tuesday(year, month), release.update_name


def test_catalog_reaches_the_september_2026_sus(catalog: Catalog) -> None:
    for build in ("15.2.2562.53", "15.2.1748.53", "15.2.1544.48", "15.1.2507.75"):
        release = catalog.exact(Build.from_text(build))
        assert release is not None and release.update_name.endswith("Sep26SUv2"), build
    newest_se = catalog.releases_of("Exchange SE")[-1]
    assert newest_se.build >= Build(15, 2, 2562, 53)


# ---- cross-check with the team's reference compilation -------------------------------------------


@pytest.fixture(scope="module")
def reference_rows() -> list[dict[str, str]]:
    if not REFERENCE_CSV.is_file():
        pytest.skip(f"reference data not present: {REFERENCE_CSV}")
    with REFERENCE_CSV.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert rows
    return rows


@pytest.mark.shared
def test_every_reference_row_is_in_the_catalog(
    catalog: Catalog, reference_rows: list[dict[str, str]]
) -> None:
    problems = []
    for row in reference_rows:
        build = row["build_short"]
        release = catalog.exact(Build.from_text(build))
        if release is None:
            problems.append(f"{build} {row['update_name']}: missing from catalog")
            continue
        if release.build.short != build:
            problems.append(f"{build}: catalog spells it {release.build.short}")
        if release.product != row["product"] or release.kind != row["kind"]:
            problems.append(
                f"{build}: CSV {row['product']}/{row['kind']}, "
                f"catalog {release.product}/{release.kind}"
            )
        catalog_date = release.release_date.isoformat()
        if build in DATE_EXCEPTIONS:
            csv_date, expected, _reason = DATE_EXCEPTIONS[build]
            if catalog_date != expected or row["release_date"] not in (csv_date, expected):
                problems.append(f"{build}: date exception no longer matches the data")
        elif catalog_date != row["release_date"]:
            problems.append(f"{build}: CSV date {row['release_date']}, catalog {catalog_date}")
    assert not problems, "\n".join(problems)


@pytest.mark.shared
def test_every_catalog_build_is_in_the_reference(
    catalog: Catalog, reference_rows: list[dict[str, str]]
) -> None:
    listed = {row["build_short"] for row in reference_rows}
    unexplained = [
        f"{r.build} {r.update_name}"
        for r in catalog.releases
        if r.build.short not in listed and r.build.short not in EXTRA_BUILDS
    ]
    assert not unexplained, "\n".join(unexplained)
    stale = [build for build in EXTRA_BUILDS if build in listed]
    assert not stale, f"listed as extras but present in the CSV: {stale}"


@pytest.mark.shared
def test_kb_articles_match_the_reference(
    catalog: Catalog, reference_rows: list[dict[str, str]]
) -> None:
    wrong = []
    for row in reference_rows:
        release = catalog.exact(Build.from_text(row["build_short"]))
        if release is not None and (release.kb or "") != row["kb"]:
            wrong.append(f"{row['build_short']}: CSV {row['kb']!r}, catalog {release.kb!r}")
    assert not wrong, "\n".join(wrong)


@pytest.mark.shared
def test_esu_periods_hold_exactly_the_esu_only_rows(
    catalog: Catalog, reference_rows: list[dict[str, str]]
) -> None:
    esu_rows = {row["build_short"] for row in reference_rows if "ESU" in row["notes"]}
    in_periods = {b.short for p in catalog.esu_periods for b in p.builds}
    assert esu_rows == in_periods
