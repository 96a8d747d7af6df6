"""Catalog data for ESU periods and KB articles: validated on load, kept on install."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from drossel.app.catalog_source import packaged_catalog
from drossel.core.build import Build
from drossel.core.catalog import Catalog, CatalogError, catalog_from_dict, catalog_to_dict


@pytest.fixture
def data(catalog: Catalog) -> dict[str, Any]:
    return copy.deepcopy(catalog_to_dict(catalog))


def test_round_trip_keeps_esu_periods_and_kb(catalog: Catalog) -> None:
    again = catalog_from_dict(json.loads(json.dumps(catalog_to_dict(catalog))))
    assert again.esu_periods == catalog.esu_periods
    assert [r.kb for r in again.releases] == [r.kb for r in catalog.releases]
    feb26 = again.exact(Build.from_text("15.1.2507.66"))
    assert feb26 is not None and feb26.kb == "KB5074995"
    assert sum(1 for r in catalog.releases if r.kb) > 300


def test_a_catalog_without_esu_section_still_loads(data: dict[str, Any]) -> None:
    del data["extended_security_updates"]
    for release in data["releases"]:
        release.pop("kb", None)
    older = catalog_from_dict(data)
    assert older.esu_periods == ()
    assert older.esu_period_of(Build.from_text("15.1.2507.66")) is None


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d["releases"][0].update(kb="5012345"), "'kb' must look like KB"),
        (lambda d: d.update(extended_security_updates={}), "must be a list"),
        (lambda d: d["extended_security_updates"][0].update(end="2025-01-01"), "before 'start'"),
        (
            lambda d: d["extended_security_updates"][0].update(start="2025-10-01"),
            "starts before Exchange 2016 left extended support",
        ),
        (
            lambda d: d["extended_security_updates"][0].update(products=["Exchange SE"]),
            "not a product with an extended end",
        ),
        (
            lambda d: d["extended_security_updates"][0]["builds"].append("15.1.2507.61"),
            "released outside it",
        ),
        (
            lambda d: d["extended_security_updates"][0]["builds"].append("15.1.2507.99"),
            "not a catalog release",
        ),
        (
            lambda d: d["extended_security_updates"][1]["builds"].append(
                d["extended_security_updates"][1]["builds"][0]
            ),
            "listed twice",
        ),
        (lambda d: d["extended_security_updates"][0].update(source=""), "non-empty strings"),
    ],
)
def test_bad_esu_or_kb_data_is_refused(data: dict[str, Any], change: Any, message: str) -> None:
    change(data)
    with pytest.raises(CatalogError, match=message):
        catalog_from_dict(data)


def test_packaged_catalog_is_the_one_under_test(catalog: Catalog) -> None:
    assert packaged_catalog().esu_periods == catalog.esu_periods
    assert catalog.version >= "2026-12-01"
