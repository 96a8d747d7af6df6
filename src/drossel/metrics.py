"""Prometheus metrics, served at ``/metrics`` by the web app (and by ``drossel serve``)."""

from __future__ import annotations

import math
import threading
import time
from bisect import bisect_left
from collections.abc import Iterable, Sequence

import prometheus_client.metrics
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString


class FastHistogram(Collector):
    """A histogram without labels for the per-message path, exported exactly as
    ``prometheus_client.Histogram`` exports one.

    ``Histogram.observe`` walks the buckets and takes two locks (the sum's and the bucket's),
    about 1 µs; here it is one binary search and one lock, counting per bucket and adding the
    buckets up when scraped."""

    def __init__(
        self,
        name: str,
        documentation: str,
        buckets: Sequence[float],
        registry: CollectorRegistry | None = REGISTRY,
    ) -> None:
        bounds = [float(b) for b in buckets]
        if bounds != sorted(bounds) or not bounds:
            raise ValueError("buckets must be in increasing order")
        if bounds[-1] != math.inf:
            bounds.append(math.inf)
        self.name = name
        self.documentation = documentation
        self._bounds = tuple(bounds)
        self._le = tuple(floatToGoString(b) for b in bounds)  # type: ignore[no-untyped-call]
        self._counts = [0] * len(bounds)
        self._sum = 0.0
        self._lock = threading.Lock()
        self._created = time.time()
        if registry is not None:
            registry.register(self)

    def observe(self, amount: float) -> None:
        """Count ``amount`` in the first bucket whose bound is at least ``amount``."""
        if amount != amount:  # NaN: in no bucket, only in the sum (as Histogram does)
            with self._lock:
                self._sum += amount
            return
        index = bisect_left(self._bounds, amount)
        with self._lock:
            self._counts[index] += 1
            self._sum += amount

    def collect(self) -> Iterable[Metric]:
        with self._lock:
            counts, total = list(self._counts), self._sum
        metric = Metric(self.name, self.documentation, "histogram")
        acc = 0.0
        for le, count in zip(self._le, counts, strict=True):
            acc += count
            metric.add_sample(f"{self.name}_bucket", {"le": le}, acc)
        metric.add_sample(f"{self.name}_count", {}, acc)
        if self._bounds[0] >= 0:
            metric.add_sample(f"{self.name}_sum", {}, total)
        if getattr(prometheus_client.metrics, "_use_created", True):
            metric.add_sample(f"{self.name}_created", {}, self._created)
        yield metric


class _CounterChild:
    """One label set of a :class:`FastCounter`."""

    __slots__ = ("_lock", "created", "value")

    def __init__(self, lock: threading.Lock) -> None:
        self._lock = lock
        self.value = 0.0
        self.created = time.time()

    def inc(self, amount: float = 1) -> None:
        if amount < 0:
            raise ValueError("Counters can only be incremented by non-negative amounts.")
        with self._lock:
            self.value += amount


class FastCounter(Collector):
    """A labelled counter for the per-message path, exported exactly as
    ``prometheus_client.Counter`` exports one: ``labels(...)`` gives a child whose ``inc`` is
    one lock and one addition (the library's takes three calls and a lock, ~0.4 µs)."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        registry: CollectorRegistry | None = REGISTRY,
    ) -> None:
        self.name = name.removesuffix("_total")
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self._lock = threading.Lock()
        self._children: dict[tuple[str, ...], _CounterChild] = {}
        if registry is not None:
            registry.register(self)

    def labels(self, *values: object) -> _CounterChild:
        if len(values) != len(self.labelnames):
            raise ValueError("Incorrect label count")
        key = tuple(str(v) for v in values)
        with self._lock:
            child = self._children.get(key)
            if child is None:
                child = self._children[key] = _CounterChild(self._lock)
        return child

    def collect(self) -> Iterable[Metric]:
        with self._lock:
            children = [(key, child.value, child.created) for key, child in self._children.items()]
        metric = Metric(self.name, self.documentation, "counter")
        created = getattr(prometheus_client.metrics, "_use_created", True)
        for key, value, since in children:
            labels = dict(zip(self.labelnames, key, strict=True))
            metric.add_sample(f"{self.name}_total", labels, value)
            if created:
                metric.add_sample(f"{self.name}_created", labels, since)
        yield metric


VERDICTS = FastCounter(
    "drossel_verdicts_total",
    "Verdicts given, by action, product and stage",
    ["action", "product", "stage"],
)
DECISION_SECONDS = FastHistogram(
    "drossel_decision_seconds",
    "Time to decide one message (detection, assessment, state, decision)",
    buckets=(0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.1, 0.5),
)
SERVERS_BY_STATUS = Gauge(
    "drossel_servers", "Tracked sending servers by assessment status", ["status"]
)
NOTIFICATIONS = Counter(
    "drossel_notifications_total", "Notification mails by outcome", ["event", "outcome"]
)
DB_ERRORS = Counter("drossel_db_errors_total", "State database operations that failed", ["op"])
