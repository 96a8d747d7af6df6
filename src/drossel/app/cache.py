"""The decision cache: what the per-message path reads without a database round trip (SPEC §9).

* server records by (tenant, server), ``None`` for "asked the database, not there";
* records observed while the database could not be asked (*blind* records), which must not be
  dropped before their observations are written;
* assessments by (build, day), keyed by the build's short form;
* the shared state (connectors, pauses, overrides), refreshed every ``refresh_seconds`` and on
  change notifications.

It holds no rules: the enforcer decides what to put in and when.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from drossel.app.records import Connector
from drossel.core.assessment import Assessment
from drossel.core.build import Build
from drossel.core.decision import Override, ServerRecord
from drossel.core.schedule import Pause

ServerKey = tuple[str, str]

#: bound on cached assessments: days × builds seen; cleared when full (cheap to recompute)
MAX_ASSESSMENTS = 10_000


@dataclass(slots=True)
class SharedState:
    connectors: list[Connector] = field(default_factory=list)
    pauses: list[Pause] = field(default_factory=list)
    overrides: list[Override] = field(default_factory=list)
    refreshed_at: datetime | None = None


class DecisionCache:
    """In-memory records, assessments and shared state (the enforcer holds the lock)."""

    def __init__(self) -> None:
        self.records: dict[ServerKey, ServerRecord | None] = {}
        self.blind: set[ServerKey] = set()
        #: by (short build, day): a string key is cheaper to look up than a Build
        self.assessments: dict[tuple[str, date], Assessment] = {}
        self.shared = SharedState()

    def has(self, key: ServerKey) -> bool:
        return key in self.records

    def put(self, key: ServerKey, record: ServerRecord | None, *, blind: bool = False) -> None:
        self.records[key] = record
        if blind:
            self.blind.add(key)

    def drop(self, key: ServerKey) -> None:
        """Forget a record (changed elsewhere), unless it waits to be written."""
        if key not in self.blind:
            self.records.pop(key, None)

    def drop_tenant(self, tenant: str | None) -> None:
        for key in [k for k in self.records if tenant is None or k[0] == tenant]:
            self.drop(key)

    def written(self, key: ServerKey, record: ServerRecord) -> None:
        """A blind record reached the database: it is an ordinary cached record again."""
        self.records[key] = compact(record, key)
        self.blind.discard(key)

    def assessment(self, build: Build, day: date) -> Assessment | None:
        return self.assessments.get((build.short, day))

    def remember_assessment(self, build: Build, day: date, assessment: Assessment) -> None:
        if len(self.assessments) >= MAX_ASSESSMENTS:
            self.assessments.clear()
        self.assessments[(build.short, day)] = assessment


_NO_TIME = timedelta(0)


def compact(record: ServerRecord, key: ServerKey) -> ServerRecord:
    """``record`` as read from the database, made to share what it repeats: the key's own
    tenant and server strings, one interned copy of its build, product, status, connector type,
    evidence and client, and one time object where the clock started at the first detection.
    Equal in every field (and in how each prints); a cached server costs about a third less.
    A record that does not belong to ``key`` is returned as it is."""
    tenant, server = key
    if record.tenant != tenant or record.server != server:
        return record
    first = record.first_detected
    clock_start = record.clock_start
    if clock_start is not None and clock_start == first and clock_start.tzinfo is first.tzinfo:
        clock_start = first
    credit = record.clock_credit
    intern = sys.intern
    via = record.via
    return ServerRecord(
        tenant,
        server,
        first,
        record.last_seen,
        intern(record.build),
        intern(record.product),
        intern(record.status),  # type: ignore[arg-type]  # the same literal, interned
        clock_start,
        _NO_TIME if credit == _NO_TIME else credit,
        record.remediated_at,
        intern(record.connector_type),
        intern(record.evidence),  # type: ignore[arg-type]
        None if via is None else intern(via),
        record.trusted,
    )
