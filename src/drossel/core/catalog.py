"""The catalog of Exchange releases and product lifecycles.

The catalog is data, not code: it ships as ``drossel/data/exchange-catalog.json`` and an operator
can install a newer one without a release (``drossel catalog load FILE``).  This module only parses
and validates that data and answers questions about it; reading files is the caller's job, so the
core stays free of I/O.
"""

from __future__ import annotations

import json
import re
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


_KB_RE = re.compile(r"^KB\d{6,8}$")


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
    kb: str | None = None  # Microsoft knowledge-base article, e.g. "KB5094144"

    @property
    def is_base(self) -> bool:
        return self.kind in BASE_KINDS

    @property
    def is_security_update(self) -> bool:
        return self.kind in SECURITY_KINDS


@dataclass(frozen=True, slots=True)
class EsuPeriod:
    """One period of Microsoft's paid Extended Security Update programme: the security updates
    shipped only to its customers, for products past their end of extended support."""

    name: str
    products: tuple[str, ...]
    start: date
    end: date
    builds: frozenset[Build]
    source: str


@dataclass(frozen=True, slots=True)
class Catalog:
    """All known releases, sorted by build, with each product's lifecycle and ESU periods."""

    version: str
    products: dict[str, ProductLifecycle]
    releases: tuple[Release, ...]
    esu_periods: tuple[EsuPeriod, ...] = ()
    _builds: tuple[Build, ...] = field(init=False, repr=False, compare=False)
    _lines: dict[Build, Release] = field(init=False, repr=False, compare=False)
    _cu_keys: frozenset[tuple[int, int, int]] = field(init=False, repr=False, compare=False)
    _newest: dict[str, Build] = field(init=False, repr=False, compare=False)
    _closed: frozenset[str] = field(init=False, repr=False, compare=False)

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
        object.__setattr__(self, "_cu_keys", frozenset(r.build.cu_key for r in ordered))
        # releases are sorted by build, so the last one seen of a product is its newest
        object.__setattr__(self, "_newest", {r.product: r.build for r in ordered})
        newest_date = max((r.release_date for r in ordered), default=None)
        closed = frozenset(
            name
            for name, lifecycle in self.products.items()
            if newest_date is not None
            and lifecycle.extended_end is not None
            and lifecycle.extended_end < newest_date
        )
        object.__setattr__(self, "_closed", closed)

    def is_on_premises_line(self, build: Build) -> bool:
        """False for an Exchange 2013/2016/2019/SE build whose CU line (major.minor.build) no
        release ever had, within the range the catalog covers: on-premises servers run released
        CUs (security updates keep the CU's build number), while Exchange Online stamped
        in-between lines such as 15.0.1010.x.

        A line above a product's newest one is ruled out only when that product is closed: its
        extended support ended before the newest release the catalog knows of (of any
        product), so the catalog was kept up after the product's last CU and no CU can follow
        (Extended Security Updates keep their CU's build number).  Builds newer than a live
        product's catalog, and 2007/2010 builds (their rollups changed the build number and
        the catalog does not list every one), are never ruled out here."""
        product = product_of(build)
        if build.major != 15 or product is None:
            return True
        newest = self._newest.get(product)
        if newest is None:
            return True
        if build > newest and not self.is_closed(product):
            return True
        return build.cu_key in self._cu_keys

    def is_closed(self, product: str) -> bool:
        """Whether ``product``'s extended support ended before the newest release in the
        catalog, so that every CU line it will ever have is listed."""
        return product in self._closed

    def esu_period_of(self, build: Build) -> EsuPeriod | None:
        """The ESU period whose updates include exactly this build."""
        for period in self.esu_periods:
            if build in period.builds:
                return period
        return None

    def esu_end(self, product: str) -> date | None:
        """The day the last ESU period of ``product`` ends, if it has any."""
        ends = [p.end for p in self.esu_periods if product in p.products]
        return max(ends) if ends else None

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
        kb = item.get("kb")
        if kb is not None and (not isinstance(kb, str) or not _KB_RE.match(kb)):
            raise CatalogError(f"{where}: 'kb' must look like KB5012345, got {kb!r}")
        releases.append(
            Release(
                product=str(product),
                update_name=update_name,
                build=build,
                release_date=_date(item.get("release_date"), where),
                kind=str(kind),
                kb=kb,
            )
        )
    if not releases:
        raise CatalogError("catalog: no releases")
    by_build = {r.build: r for r in releases}
    periods = _esu_periods(data.get("extended_security_updates", []), products, by_build)
    return Catalog(
        version=version, products=products, releases=tuple(releases), esu_periods=periods
    )


def _esu_periods(
    raw: Any, products: dict[str, ProductLifecycle], by_build: dict[Build, Release]
) -> tuple[EsuPeriod, ...]:
    """Validate the ESU periods: each lists products past their extended end, a date range
    after it, and SU builds of those products from the catalog, released within the range."""
    if not isinstance(raw, list):
        raise CatalogError("catalog: 'extended_security_updates' must be a list")
    periods: list[EsuPeriod] = []
    claimed: set[Build] = set()
    for i, item in enumerate(raw):
        where = f"extended_security_updates[{i}]"
        if not isinstance(item, dict):
            raise CatalogError(f"{where}: must be an object")
        name = item.get("name")
        source = item.get("source")
        if not isinstance(name, str) or not name or not isinstance(source, str) or not source:
            raise CatalogError(f"{where}: 'name' and 'source' must be non-empty strings")
        start = _date(item.get("start"), where)
        end = _date(item.get("end"), where)
        if end < start:
            raise CatalogError(f"{where}: 'end' is before 'start'")
        names = item.get("products")
        if not isinstance(names, list) or not names:
            raise CatalogError(f"{where}: 'products' must be a non-empty list")
        for product in names:
            lifecycle = products.get(product) if isinstance(product, str) else None
            if lifecycle is None or lifecycle.extended_end is None:
                raise CatalogError(f"{where}: {product!r} is not a product with an extended end")
            if start <= lifecycle.extended_end:
                raise CatalogError(f"{where}: starts before {product} left extended support")
        builds: set[Build] = set()
        raw_builds = item.get("builds")
        if not isinstance(raw_builds, list) or not raw_builds:
            raise CatalogError(f"{where}: 'builds' must be a non-empty list")
        for text in raw_builds:
            build = Build.parse(str(text))
            release = by_build.get(build) if build is not None else None
            if build is None or release is None:
                raise CatalogError(f"{where}: build {text!r} is not a catalog release")
            if release.product not in names or release.kind != "SU":
                raise CatalogError(f"{where}: {build} is not an SU of {', '.join(names)}")
            if not start <= release.release_date <= end:
                raise CatalogError(f"{where}: {release.update_name} was released outside it")
            if build in claimed:
                raise CatalogError(f"{where}: {build} is listed twice")
            claimed.add(build)
            builds.add(build)
        periods.append(
            EsuPeriod(name, tuple(str(p) for p in names), start, end, frozenset(builds), source)
        )
    return tuple(sorted(periods, key=lambda p: p.start))


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
                **({"kb": r.kb} if r.kb else {}),
            }
            for r in catalog.releases
        ],
        "extended_security_updates": [
            {
                "name": p.name,
                "products": list(p.products),
                "start": p.start.isoformat(),
                "end": p.end.isoformat(),
                "builds": [b.short for b in sorted(p.builds)],
                "source": p.source,
            }
            for p in catalog.esu_periods
        ],
    }
