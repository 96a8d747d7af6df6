"""The catalog of Exchange releases and product lifecycles.

The catalog is data, not code: it ships as ``drossel/data/exchange-catalog.json`` and an operator
can install a newer one without a release (``drossel catalog load FILE``).  This module only parses
and validates that data and answers questions about it; reading files is the caller's job, so the
core stays free of I/O.
"""

from __future__ import annotations

import json
from bisect import bisect_right
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from drossel.core.build import ON_PREMISES_PRODUCTS, Build, product_of

RELEASE_KINDS = ("RTM", "SP", "RU", "CU", "SU", "HU", "Preview")
BASE_KINDS = ("RTM", "SP", "CU")
"""Kinds that start a servicing line ("CU" in HealthChecker's sense); RUs/SUs/HUs patch one."""
SECURITY_KINDS = ("SU", "RU")
"""Kinds that fix vulnerabilities. Hotfix updates (HU) are not security updates."""


class CatalogError(ValueError):
    """The catalog data is malformed; the message names the offending entry."""


@dataclass(frozen=True, slots=True)
class ProductLifecycle:
    name: str
    general_availability: date
    mainstream_end: date | None
    extended_end: date | None


@dataclass(frozen=True, slots=True)
class Release:
    product: str
    update_name: str
    build: Build
    release_date: date
    kind: str

    @property
    def is_base(self) -> bool:
        return self.kind in BASE_KINDS

    @property
    def is_security_update(self) -> bool:
        return self.kind in SECURITY_KINDS


@dataclass(frozen=True, slots=True)
class Catalog:
    """All known releases, sorted by build, with each product's lifecycle."""

    version: str
    products: dict[str, ProductLifecycle]
    releases: tuple[Release, ...]
    _builds: tuple[Build, ...] = field(init=False, repr=False, compare=False)
    _lines: dict[Build, Release] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        ordered = tuple(sorted(self.releases, key=lambda r: (r.build, r.release_date)))
        object.__setattr__(self, "releases", ordered)
        object.__setattr__(self, "_builds", tuple(r.build for r in ordered))
        lines: dict[Build, Release] = {}
        current: dict[str, Release] = {}
        for release in ordered:
            if release.is_base or release.product not in current:
                current[release.product] = release
            lines[release.build] = current[release.product]
        object.__setattr__(self, "_lines", lines)

    def exact(self, build: Build) -> Release | None:
        index = bisect_right(self._builds, build) - 1
        if index >= 0 and self._builds[index] == build:
            return self.releases[index]
        return None

    def nearest_lower(self, build: Build) -> Release | None:
        """The highest known release of the same product that is not newer than ``build``."""
        product = product_of(build)
        index = bisect_right(self._builds, build) - 1
        while index >= 0:
            release = self.releases[index]
            if release.product == product:
                return release
            if product_of(release.build) != product:
                return None
            index -= 1
        return None

    def releases_of(self, product: str) -> list[Release]:
        return [r for r in self.releases if r.product == product]

    def line_of(self, release: Release) -> Release:
        """The base release (RTM, SP or CU) whose servicing line ``release`` belongs to."""
        return self._lines.get(release.build, release)

    def search(self, text: str) -> list[Release]:
        needle = text.strip().lower()
        return [
            r
            for r in self.releases
            if needle in r.update_name.lower()
            or needle in r.build.short
            or needle in r.build.long
            or needle in r.product.lower()
        ]


def _date(value: Any, where: str) -> date:
    if not isinstance(value, str):
        raise CatalogError(f"{where}: expected an ISO date string, got {value!r}")
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise CatalogError(f"{where}: not an ISO date: {value!r}") from None


def _optional_date(value: Any, where: str) -> date | None:
    return None if value is None else _date(value, where)


def catalog_from_dict(data: Any) -> Catalog:
    """Validate decoded catalog data and build a :class:`Catalog` (or raise CatalogError)."""
    if not isinstance(data, dict):
        raise CatalogError("catalog: top level must be an object")
    version = data.get("version")
    if not isinstance(version, str) or not version:
        raise CatalogError("catalog: 'version' must be a non-empty string")
    raw_products = data.get("products")
    raw_releases = data.get("releases")
    if not isinstance(raw_products, list) or not isinstance(raw_releases, list):
        raise CatalogError("catalog: 'products' and 'releases' must be lists")
    products: dict[str, ProductLifecycle] = {}
    for i, item in enumerate(raw_products):
        where = f"products[{i}]"
        if not isinstance(item, dict) or item.get("name") not in ON_PREMISES_PRODUCTS:
            raise CatalogError(f"{where}: 'name' must be one of {', '.join(ON_PREMISES_PRODUCTS)}")
        name = str(item["name"])
        products[name] = ProductLifecycle(
            name=name,
            general_availability=_date(item.get("general_availability"), where),
            mainstream_end=_optional_date(item.get("mainstream_end"), where),
            extended_end=_optional_date(item.get("extended_end"), where),
        )
    releases: list[Release] = []
    seen: set[Build] = set()
    for i, item in enumerate(raw_releases):
        where = f"releases[{i}]"
        if not isinstance(item, dict):
            raise CatalogError(f"{where}: must be an object")
        build = Build.parse(str(item.get("build", "")))
        if build is None:
            raise CatalogError(f"{where}: bad build {item.get('build')!r}")
        product = item.get("product")
        if product not in products:
            raise CatalogError(f"{where}: unknown product {product!r}")
        if product_of(build) != product:
            raise CatalogError(f"{where}: build {build} does not belong to {product}")
        kind = item.get("kind")
        if kind not in RELEASE_KINDS:
            raise CatalogError(f"{where}: kind must be one of {', '.join(RELEASE_KINDS)}")
        update_name = item.get("update_name")
        if not isinstance(update_name, str) or not update_name:
            raise CatalogError(f"{where}: 'update_name' must be a non-empty string")
        if build in seen:
            raise CatalogError(f"{where}: duplicate build {build}")
        seen.add(build)
        releases.append(
            Release(
                product=str(product),
                update_name=update_name,
                build=build,
                release_date=_date(item.get("release_date"), where),
                kind=str(kind),
            )
        )
    if not releases:
        raise CatalogError("catalog: no releases")
    return Catalog(version=version, products=products, releases=tuple(releases))


def parse_catalog(text: str | bytes) -> Catalog:
    """Parse catalog JSON text."""
    try:
        data = json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise CatalogError(f"catalog: not valid JSON ({exc})") from None
    return catalog_from_dict(data)


def catalog_to_dict(catalog: Catalog) -> dict[str, Any]:
    def iso(d: date | None) -> str | None:
        return None if d is None else d.isoformat()

    return {
        "version": catalog.version,
        "products": [
            {
                "name": p.name,
                "general_availability": iso(p.general_availability),
                "mainstream_end": iso(p.mainstream_end),
                "extended_end": iso(p.extended_end),
            }
            for p in catalog.products.values()
        ],
        "releases": [
            {
                "product": r.product,
                "update_name": r.update_name,
                "build": r.build.short,
                "release_date": r.release_date.isoformat(),
                "kind": r.kind,
            }
            for r in catalog.releases
        ],
    }
