"""Assessment rules (issue #2 §4), checked against catalog facts at chosen dates."""

from datetime import date

import pytest

from drossel.core.assessment import assess
from drossel.core.build import Build
from drossel.core.catalog import Catalog
from drossel.core.policy import Policy


def grade(catalog: Catalog, build: str, at: str, policy: Policy | None = None):  # type: ignore[no-untyped-def]
    return assess(Build.from_text(build), date.fromisoformat(at), catalog, policy or Policy())


def test_latest_su_of_supported_cu_is_current(catalog: Catalog) -> None:
    result = grade(catalog, "15.2.1544.9", "2024-03-20")  # 2019 CU14 Mar24SU
    assert result.status == "current"
    assert result.update_name == "Exchange Server 2019 CU14 Mar24SU"
    assert not result.persistently_vulnerable


def test_past_extended_support_is_unsupported_and_recommends_se(catalog: Catalog) -> None:
    result = grade(catalog, "15.2.1748.39", "2026-11-23")  # 2019 CU15 Oct25SU
    assert result.status == "unsupported"
    assert result.persistently_vulnerable
    assert any("end of extended support" in r for r in result.reasons)
    assert result.recommended_builds and "Exchange Server SE" in result.recommended_builds[0]
    # the day before the end of extended support, the same build was current
    assert grade(catalog, "15.2.1748.39", "2025-10-14").status == "current"


def test_cu_no_longer_serviced_is_unsupported(catalog: Catalog) -> None:
    # 2016 CU22 got SUs until Nov22SU; once Jan23SU shipped for CU23 only, CU22 is out.
    assert grade(catalog, "15.1.2375.37", "2022-12-01").status == "current"
    late = grade(catalog, "15.1.2375.37", "2023-02-01")
    assert late.status == "unsupported"
    assert any("no longer receives security updates" in r for r in late.reasons)
    assert any("CU23" in r for r in late.recommended_builds)


def test_newer_cu_than_last_security_release_is_serviced(catalog: Catalog) -> None:
    # 2016 CU23 (15.1.2507.6) shipped 2022-04-20, after Mar22SU: serviced although no SU yet.
    result = grade(catalog, "15.1.2507.6", "2022-04-25")
    assert result.status == "current"


def test_behind_and_persistently_vulnerable_by_lag(catalog: Catalog) -> None:
    # SE RTM Aug25SU (.20): Oct25SU (.29) released 2025-10-14 is the first missing SU
    # (Sep25HU is a hotfix, not a security update).
    soon = grade(catalog, "15.2.2562.20", "2025-11-01")
    assert soon.status == "behind"
    assert not soon.persistently_vulnerable
    assert soon.first_missing_update is not None
    assert soon.first_missing_update.update_name == "Exchange Server SE RTM Oct25SU"
    late = grade(catalog, "15.2.2562.20", "2026-01-13")
    assert late.status == "behind" and late.persistently_vulnerable
    strict = grade(catalog, "15.2.2562.20", "2025-11-01", Policy(max_patch_lag_days=10))
    assert strict.persistently_vulnerable


def test_hotfix_update_is_not_a_missing_security_update(catalog: Catalog) -> None:
    # SE RTM Aug25SU on the day after Sep25HU: no newer SU yet.
    result = grade(catalog, "15.2.2562.20", "2025-09-20")
    assert result.status == "current"


def test_unlisted_revision_maps_to_nearest_lower(catalog: Catalog) -> None:
    result = grade(catalog, "15.0.1497.38", "2022-09-21")
    assert result.update_name == "Exchange Server 2013 CU23 May22SU"
    assert any("not in the catalog" in r for r in result.reasons)
    assert result.status == "behind"


def test_long_form_accepted(catalog: Catalog) -> None:
    assert grade(catalog, "15.02.1544.009", "2024-03-20") == grade(
        catalog, "15.2.1544.9", "2024-03-20"
    )


def test_newer_than_catalog_is_unknown_and_never_vulnerable(catalog: Catalog) -> None:
    result = grade(catalog, "15.2.9999.1", "2026-11-23")
    assert result.status == "unknown"
    assert not result.persistently_vulnerable


@pytest.mark.parametrize("build", ["15.20.5588.10", "15.21.92.10"])
def test_exchange_online_is_not_applicable(catalog: Catalog, build: str) -> None:
    result = grade(catalog, build, "2026-11-23")
    assert result.status == "not_applicable"
    assert not result.persistently_vulnerable


def test_exchange_2007_and_2010_are_unsupported_today(catalog: Catalog) -> None:
    for build in ("8.3.485.1", "14.3.513.0"):
        result = grade(catalog, build, "2026-11-23")
        assert result.status == "unsupported" and result.persistently_vulnerable


def test_2010_older_sp_unsupported_while_sp3_serviced(catalog: Catalog) -> None:
    # 2015: rollups go to SP3 only, so SP2 RU8 is out while SP3's latest RU is current.
    assert grade(catalog, "14.2.390.3", "2015-06-20").status == "unsupported"
    assert grade(catalog, "14.3.248.2", "2015-10-01").status in ("current", "behind")
