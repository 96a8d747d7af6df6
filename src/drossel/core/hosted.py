"""Recognise hops written by Microsoft's hosted mail (Exchange Online and its filtering layers of
every era), so that detection never blames Microsoft's own relay on the sending organisation.

The knowledge is data (``drossel/data/microsoft_hosted.py``, one public source per entry); this
module validates it and answers "is this hop Microsoft-hosted, and why?".  Three kinds of rule:

* host families: the hop's host lies in a Microsoft service zone (``*.outlook.com``,
  ``*.bigfish.com``, ``*.protection.gbl`` ...), whatever build it stamps;
* pod names: the host's first label is a Microsoft datacentre machine name
  (``BY2PR07MB042``, ``BN1BFFO11FD039``), which catches hosts whose zone was cut off;
* build ranges: builds no on-premises product ever had (14.16.x, 15.20 and up).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from drossel.core.build import Build
from drossel.data import microsoft_hosted

MAX_HOST_LENGTH = 255


class HostedDataError(ValueError):
    """The hosted-service data is malformed; the message names the offending entry."""


@dataclass(frozen=True, slots=True)
class HostedRule:
    """One entry of the data: what it matches, which service it is, and the public source."""

    kind: str  # "family", "pod" or "build"
    match: str  # suffix, pattern or "low-high"
    service: str
    source: str


@dataclass(frozen=True, slots=True)
class BuildRange:
    low: Build
    high: Build
    rule: HostedRule


@dataclass(frozen=True, slots=True)
class HostedServices:
    """Compiled rules; ``classify`` is total and cheap (a few suffix tests and regexes)."""

    families: tuple[tuple[str, HostedRule], ...]
    pods: tuple[tuple[re.Pattern[str], HostedRule], ...]
    builds: tuple[BuildRange, ...]

    def host_rule(self, host: str | None) -> HostedRule | None:
        """The rule that makes ``host`` a Microsoft-hosted machine, if any."""
        if not host:
            return None
        lowered = host[:MAX_HOST_LENGTH].strip("[]").rstrip(".").lower()
        for suffix, rule in self.families:
            if lowered.endswith(suffix) or lowered == suffix[1:]:
                return rule
        label = lowered.split(".", 1)[0]
        for pattern, rule in self.pods:
            if pattern.fullmatch(label):
                return rule
        return None

    def build_rule(self, build: Build | None) -> HostedRule | None:
        """The rule that makes ``build`` a hosted-service build, if any."""
        if build is None:
            return None
        for entry in self.builds:
            if entry.low <= build <= entry.high:
                return entry.rule
        return None

    def classify(self, host: str | None, build: Build | None) -> HostedRule | None:
        """Why a hop by ``host`` stamping ``build`` is Microsoft-hosted, or ``None``."""
        return self.host_rule(host) or self.build_rule(build)

    @property
    def rules(self) -> tuple[HostedRule, ...]:
        return (
            *(rule for _, rule in self.families),
            *(rule for _, rule in self.pods),
            *(entry.rule for entry in self.builds),
        )


def _text(item: Mapping[str, object], key: str, where: str) -> str:
    value = item.get(key)
    if not isinstance(value, str) or not value.strip():
        raise HostedDataError(f"{where}: '{key}' must be a non-empty string")
    return value


def hosted_from_data(
    families: Iterable[Mapping[str, object]],
    pods: Iterable[Mapping[str, object]],
    builds: Iterable[Mapping[str, object]],
) -> HostedServices:
    """Validate the data (every entry needs its service and source) and compile it."""
    compiled_families: list[tuple[str, HostedRule]] = []
    for i, item in enumerate(families):
        where = f"families[{i}]"
        suffix = _text(item, "suffix", where).lower()
        if not suffix.startswith(".") or ".." in suffix or len(suffix) < 4:
            raise HostedDataError(f"{where}: suffix must look like '.example.com'")
        rule = HostedRule(
            "family", suffix, _text(item, "service", where), _text(item, "source", where)
        )
        compiled_families.append((suffix, rule))
    compiled_pods: list[tuple[re.Pattern[str], HostedRule]] = []
    for i, item in enumerate(pods):
        where = f"pods[{i}]"
        text = _text(item, "pattern", where)
        try:
            pattern = re.compile(text, re.IGNORECASE)
        except re.error as exc:
            raise HostedDataError(f"{where}: bad pattern ({exc})") from None
        rule = HostedRule("pod", text, _text(item, "service", where), _text(item, "source", where))
        compiled_pods.append((pattern, rule))
    compiled_builds: list[BuildRange] = []
    for i, item in enumerate(builds):
        where = f"builds[{i}]"
        low = Build.parse(_text(item, "low", where))
        high = Build.parse(_text(item, "high", where))
        if low is None or high is None or low > high:
            raise HostedDataError(f"{where}: 'low' and 'high' must be builds with low <= high")
        rule = HostedRule(
            "build",
            f"{low}-{high}",
            _text(item, "service", where),
            _text(item, "source", where),
        )
        compiled_builds.append(BuildRange(low, high, rule))
    return HostedServices(tuple(compiled_families), tuple(compiled_pods), tuple(compiled_builds))


MICROSOFT_HOSTED = hosted_from_data(
    microsoft_hosted.HOST_FAMILIES,
    microsoft_hosted.POD_NAME_PATTERNS,
    microsoft_hosted.BUILD_RANGES,
)
"""The shipped knowledge, compiled once at import (pure data, no I/O)."""
