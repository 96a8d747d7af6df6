"""Extended Security Updates (SPEC section 2): a 2016/2019 server on an ESU-only update is graded
as if its product were still supported until the last ESU period ends, then unsupported.

The walk below checks every ESU build of the catalog on every day it could be running, from
its release to a month after the last period, against expectations computed here from the
catalog data (not from the assessment code)."""

from __future__ import annotations

from datetime import date, timedelta

import pytest

from drossel.core.assessment import assess
from drossel.core.build import Build
from drossel.core.catalog import Catalog, Release
from drossel.core.policy import Policy

POLICY = Policy()


def _esu_releases(catalog: Catalog) -> list[Release]:
    out = []
    for period in catalog.esu_periods:
        for build in sorted(period.builds):
            release = catalog.exact(build)
            assert release is not None
            out.append(release)
    return out


def test_catalog_has_both_esu_periods_with_their_updates(catalog: Catalog) -> None:
    names = [p.name for p in catalog.esu_periods]
    assert names == ["ESU Period 1", "ESU Period 2"]
    first, second = catalog.esu_periods
    assert (first.start, first.end) == (date(2025, 10, 15), date(2026, 4, 14))
    assert (second.start, second.end) == (date(2026, 5, 1), date(2026, 10, 31))
    for period in catalog.esu_periods:
        assert set(period.products) == {"Exchange 2016", "Exchange 2019"}
        assert "techcommunity" in period.source or "petri.com" in period.source
    tokens = {catalog.exact(b).update_name.split()[-1] for b in first.builds}  # type: ignore[union-attr]
    assert tokens == {"Dec25SU", "Feb26SU"}
    tokens = {catalog.exact(b).update_name.split()[-1] for b in second.builds}  # type: ignore[union-attr]
    assert tokens == {"Jun26SU", "Jul26SU", "Aug26SU", "Sep26SU", "Sep26SUv2"}
    # every SU of 2016/2019 released after the end of extended support is an ESU update
    for release in catalog.releases:
        if release.product in ("Exchange 2016", "Exchange 2019") and release.kind == "SU":
            esu = catalog.esu_period_of(release.build) is not None
            assert esu == (release.release_date > date(2025, 10, 14)), release.update_name
    assert catalog.esu_end("Exchange 2019") == date(2026, 10, 31)
    assert catalog.esu_end("Exchange SE") is None


def _days(start: date, end: date, step: int) -> list[date]:
    days, day = [], start
    while day <= end:
        days.append(day)
        day += timedelta(days=step)
    return days


def test_every_esu_build_across_the_periods(catalog: Catalog) -> None:
    checked = 0
    last_end = max(p.end for p in catalog.esu_periods)
    for release in _esu_releases(catalog):
        period = catalog.esu_period_of(release.build)
        assert period is not None
        base = catalog.line_of(release)
        interesting = {
            release.release_date,
            *(p.start for p in catalog.esu_periods),
            *(p.end for p in catalog.esu_periods),
            date(2026, 4, 20),  # between the periods
            last_end,
            last_end + timedelta(days=1),
        }
        days = sorted(
            d
            for d in interesting | set(_days(release.release_date, last_end + timedelta(30), 9))
            if d >= release.release_date
        )
        for day in days:
            result = assess(release.build, day, catalog, POLICY)
            text = " ".join(result.reasons)
            if day > last_end:
                assert result.status == "unsupported", (release.update_name, day)
                assert result.persistently_vulnerable
                assert f"last ESU period for {release.product} ended on {last_end}" in text
                continue
            newer = sorted(
                (
                    r
                    for r in catalog.releases
                    if r.is_security_update
                    and catalog.line_of(r) == base
                    and r.build > release.build
                    and r.release_date <= day
                ),
                key=lambda r: (r.release_date, r.build),
            )
            expected = "behind" if newer else "current"
            assert result.status == expected, (release.update_name, day, result.reasons)
            assert f"is an Extended Security Update ({period.name}" in text
            assert f"until the last ESU period ends on {last_end}" in text
            if newer:
                lag = (day - newer[0].release_date).days
                assert result.persistently_vulnerable == (lag > POLICY.max_patch_lag_days)
                assert result.first_missing_update == newer[0]
                # the reasons name the missing updates and their KB articles
                for missing in newer[:6]:
                    assert missing.update_name in text
                    assert missing.kb is not None and missing.kb in text
            else:
                assert not result.persistently_vulnerable
            checked += 1
    assert checked > 300


@pytest.mark.parametrize(
    ("build", "day", "status"),
    [
        ("15.2.1748.39", "2025-10-14", "current"),  # Oct25SU, last public, still supported
        ("15.2.1748.39", "2025-10-15", "unsupported"),  # public build after the end
        ("15.2.1748.39", "2026-06-01", "unsupported"),
        ("15.1.2507.61", "2026-01-01", "unsupported"),
        ("15.2.1748.42", "2025-12-20", "current"),  # Dec25SU, ESU Period 1
        ("15.2.1748.42", "2026-03-01", "behind"),  # Feb26SU is out
        ("15.2.1748.43", "2026-04-20", "current"),  # between the periods, still graded
        ("15.2.1748.43", "2026-10-10", "behind"),  # Period 2 updates are out
        ("15.2.1748.53", "2026-10-31", "current"),  # Sep26SUv2 on the last ESU day
        ("15.2.1748.53", "2026-11-01", "unsupported"),  # the day after
        ("15.2.1748.44", "2026-05-01", "current"),  # unlisted revision graded as Feb26SU
    ],
)
def test_esu_grading_at_chosen_dates(catalog: Catalog, build: str, day: str, status: str) -> None:
    result = assess(Build.from_text(build), date.fromisoformat(day), catalog, POLICY)
    assert result.status == status, result.reasons


def test_public_build_after_end_is_unsupported_with_the_reason(catalog: Catalog) -> None:
    result = assess(Build.from_text("15.1.2507.61"), date(2026, 2, 1), catalog, POLICY)
    assert result.status == "unsupported" and result.persistently_vulnerable
    assert not any("Extended Security Update" in r for r in result.reasons)
    assert any("end of extended support on 2025-10-14" in r for r in result.reasons)


def test_esu_behind_far_enough_is_persistently_vulnerable(catalog: Catalog) -> None:
    # Dec25SU on 2026-09-30: Feb26SU (2026-02-10) missing for 232 days
    result = assess(Build.from_text("15.1.2507.63"), date(2026, 9, 30), catalog, POLICY)
    assert result.status == "behind" and result.persistently_vulnerable
    assert any("KB5074995" in r for r in result.reasons)  # Feb26SU's article
