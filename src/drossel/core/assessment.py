"""Grade an Exchange build at a date: current, behind, unsupported, unknown or not applicable.

Every rule is derived from catalog data, never from a hand-kept "supported" flag:

* past the product's end of extended support → unsupported;
* the build's servicing line (RTM/SP/CU) no longer serviced → unsupported.  A line is serviced if
  the product's most recent security release (at that date) shipped an update for it, or the line
  itself is newer than that release;
* otherwise behind if a newer security update for its line was out by then; persistently
  vulnerable once the first missing one is older than ``max_patch_lag_days``.

Hotfix updates (HU) are not security updates. A build missing from the catalog is graded as the
nearest lower known build; one newer than anything known is "unknown" and never enforced.

Builds that no on-premises product ever had (Exchange Online's 14.16.x, 15.20+, or a 15.x CU line
absent from the catalog) are "not_applicable": they are Microsoft's hosted service, not a server
to grade.

Extended Security Updates (ESU): a 2016/2019 server running an update that Microsoft shipped only
to ESU customers is graded as if its product were still supported until the last ESU period of
the catalog ends (current, or behind by the usual rules against the other ESU updates of its CU),
then unsupported.  A public build of those products is unsupported after the extended end.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date

from drossel.core.build import PRODUCT_ONLINE, PRODUCT_SE, Build, product_of
from drossel.core.catalog import Catalog, EsuPeriod, Release
from drossel.core.hosted import MICROSOFT_HOSTED
from drossel.core.policy import Policy, Status

_VERSION_SUFFIX_RE = re.compile(r"v\d+$", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Assessment:
    build: Build
    product: str | None
    update_name: str | None
    release_date: date | None
    status: Status
    persistently_vulnerable: bool
    reasons: tuple[str, ...]
    recommended_builds: tuple[str, ...] = field(default=())
    first_missing_update: Release | None = None

    def to_json(self) -> dict[str, object]:
        return {
            "build": self.build.short,
            "product": self.product,
            "update_name": self.update_name,
            "release_date": self.release_date.isoformat() if self.release_date else None,
            "status": self.status,
            "persistently_vulnerable": self.persistently_vulnerable,
            "reasons": list(self.reasons),
            "recommended_builds": list(self.recommended_builds),
        }


def describe(release: Release) -> str:
    return f"{release.update_name} ({release.build.short})"


def describe_update(release: Release) -> str:
    """Name, build and KB article of an update, so an admin can look it up."""
    kb = f", {release.kb}" if release.kb else ""
    return f"{release.update_name} ({release.build.short}{kb})"


MAX_NAMED_UPDATES = 6
"""At most this many missing updates are named one by one in a reason; the rest are counted."""


def _name_updates(updates: list[Release]) -> str:
    named = ", ".join(describe_update(r) for r in updates[:MAX_NAMED_UPDATES])
    more = len(updates) - MAX_NAMED_UPDATES
    return named + (f" and {more} more" if more > 0 else "")


def _not_on_premises(build: Build, catalog: Catalog) -> str | None:
    """Why ``build`` is no on-premises server at all, or ``None`` if it could be one."""
    rule = MICROSOFT_HOSTED.build_rule(build)
    if rule is not None:
        return f"{build} is a Microsoft-hosted service build: {rule.service}"
    if build.major in (8, 14) and product_of(build) is None:
        return (
            f"no on-premises Exchange ever had build {build} "
            "(Exchange 2007 and 2010 ended at service pack 3, minor 3)"
        )
    if not catalog.is_on_premises_line(build):
        line = ".".join(str(part) for part in build.cu_key)
        product = product_of(build)
        newest = max((r.build for r in catalog.releases if r.product == product), default=None)
        if newest is not None and build > newest:
            last = ".".join(str(part) for part in newest.cu_key)
            return (
                f"no on-premises {product} release has build line {line}: its last CU line is "
                f"{last} and no CU can follow after its end of support "
                f"(catalog {catalog.version})"
            )
        return (
            f"no on-premises {product_of(build)} release has build line {line} "
            f"(catalog {catalog.version}); Exchange Online stamped such builds"
        )
    return None


def _esu_of(catalog: Catalog, release: Release) -> tuple[EsuPeriod, date] | None:
    """The ESU period of an ESU-only update and the day the product's last ESU period ends."""
    period = catalog.esu_period_of(release.build)
    last_end = catalog.esu_end(release.product)
    if period is None or last_end is None:
        return None
    return period, last_end


def _release_key(release: Release) -> str:
    """Which security "release" an update belongs to: SUs by name (Mar24SU, Mar24SUv2 → Mar24SU),
    rollups by month (several service packs got their RU on the same patch day)."""
    if release.kind == "SU":
        token = release.update_name.rsplit(" ", 1)[-1]
        return _VERSION_SUFFIX_RE.sub("", token).lower()
    return release.release_date.strftime("%Y-%m")


def _known(catalog: Catalog, product: str, at: date) -> list[Release]:
    return [r for r in catalog.releases if r.product == product and r.release_date <= at]


def _lines_serviced(catalog: Catalog, known: list[Release]) -> tuple[set[Build], date | None]:
    """Base builds of the lines the latest security release covered, and that release's date."""
    security = [r for r in known if r.is_security_update]
    if not security:
        return set(), None
    latest = max(security, key=lambda r: (r.release_date, r.build))
    key = _release_key(latest)
    covered = {catalog.line_of(r).build for r in security if _release_key(r) == key}
    return covered, latest.release_date


def _latest_in_line(catalog: Catalog, known: list[Release], base: Release) -> Release:
    in_line = [r for r in known if catalog.line_of(r) == base]
    security = [r for r in in_line if r.is_security_update or r.is_base]
    return max(security or in_line, key=lambda r: r.build)


def _recommendations(
    catalog: Catalog, known: list[Release], base: Release, at: date, line_ok: bool
) -> tuple[str, ...]:
    recs: list[str] = []
    if line_ok:
        recs.append(describe(_latest_in_line(catalog, known, base)))
    bases = [r for r in known if r.is_base]
    newest_base = max(bases, key=lambda r: r.build)
    if newest_base != base:
        recs.append(describe(_latest_in_line(catalog, known, newest_base)))
    return tuple(dict.fromkeys(recs))


def _migrate_to_se(catalog: Catalog, at: date) -> tuple[str, ...]:
    known = _known(catalog, PRODUCT_SE, at)
    if not known:
        return ("Migrate to a supported Exchange Server version",)
    newest_base = max((r for r in known if r.is_base), key=lambda r: r.build)
    return (f"Migrate to {describe(_latest_in_line(catalog, known, newest_base))}",)


def assess(build: Build, at: date, catalog: Catalog, policy: Policy) -> Assessment:
    """Grade ``build`` as of the end of day ``at``."""
    hosted_reason = _not_on_premises(build, catalog)
    if hosted_reason is not None:
        return Assessment(
            build, product_of(build), None, None, "not_applicable", False, (hosted_reason,)
        )
    product = product_of(build)
    if product is None:
        return Assessment(build, None, None, None, "unknown", False, ("not an Exchange build",))
    if product == PRODUCT_ONLINE:
        return Assessment(
            build, product, None, None, "not_applicable", False, ("Exchange Online is not graded",)
        )
    lifecycle = catalog.products.get(product)
    all_of_product = catalog.releases_of(product)
    if not all_of_product or lifecycle is None:
        return Assessment(build, product, None, None, "unknown", False, ("product not in catalog",))
    if build > max(r.build for r in all_of_product):
        return Assessment(
            build,
            product,
            None,
            None,
            "unknown",
            False,
            (f"{build} is newer than every {product} build in catalog {catalog.version}",),
        )
    reasons: list[str] = []
    release = catalog.exact(build)
    if release is None:
        release = catalog.nearest_lower(build)
        if release is None:
            reason = f"{build} is below every known build"
            return Assessment(build, product, None, None, "unknown", False, (reason,))
        reasons.append(f"{build} is not in the catalog; graded as {describe(release)}")
    known = _known(catalog, product, at)
    if not known:
        return Assessment(
            build, product, None, None, "unknown", False, (f"{product} was not released by {at}",)
        )
    base = catalog.line_of(release)
    esu = _esu_of(catalog, release)
    past_end = lifecycle.extended_end is not None and at > lifecycle.extended_end
    if past_end and esu is not None and at <= esu[1]:
        period, last_end = esu
        reasons.append(
            f"{release.update_name} is an Extended Security Update ({period.name}, "
            f"{period.start} to {period.end}); {product} reached end of extended support on "
            f"{lifecycle.extended_end} but is graded as supported until the last ESU period "
            f"ends on {last_end}"
        )
    elif past_end:
        if esu is not None:
            reasons.append(
                f"{release.update_name} is an Extended Security Update; the last ESU period "
                f"for {product} ended on {esu[1]}"
            )
        reasons.append(f"{product} reached end of extended support on {lifecycle.extended_end}")
        return Assessment(
            build,
            product,
            release.update_name,
            release.release_date,
            "unsupported",
            True,
            tuple(reasons),
            _migrate_to_se(catalog, at),
        )
    serviced, latest_date = _lines_serviced(catalog, known)
    line_ok = latest_date is None or base.build in serviced or base.release_date > latest_date
    if not line_ok:
        reasons.append(
            f"{base.update_name} no longer receives security updates "
            f"(the last security release on {latest_date} did not include it)"
        )
        return Assessment(
            build,
            product,
            release.update_name,
            release.release_date,
            "unsupported",
            True,
            tuple(reasons),
            _recommendations(catalog, known, base, at, line_ok=False),
        )
    missing = sorted(
        (
            r
            for r in known
            if r.is_security_update and r.build > build and catalog.line_of(r) == base
        ),
        key=lambda r: (r.release_date, r.build),
    )
    recs = _recommendations(catalog, known, base, at, line_ok=True)
    if not missing:
        reasons.append(f"no newer security update for {base.update_name} as of {at}")
        newer_line = recs[1:] if len(recs) > 1 else ()
        return Assessment(
            build,
            product,
            release.update_name,
            release.release_date,
            "current",
            False,
            tuple(reasons),
            newer_line,
        )
    first = missing[0]
    lag = (at - first.release_date).days
    vulnerable = lag > policy.max_patch_lag_days
    reasons.append(
        f"missing {len(missing)} security update(s); the first, {first.update_name}, "
        f"was released {lag} days before {at}"
        + (f" (more than the {policy.max_patch_lag_days} days allowed)" if vulnerable else "")
    )
    reasons.append(f"missing: {_name_updates(missing)}")
    return Assessment(
        build,
        product,
        release.update_name,
        release.release_date,
        "behind",
        vulnerable,
        tuple(reasons),
        recs,
        first,
    )
