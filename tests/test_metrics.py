"""``metrics.FastHistogram`` and ``FastCounter`` are exported exactly as ``prometheus_client``'s
``Histogram`` and ``Counter`` would be."""

from __future__ import annotations

import math
import threading

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from drossel.metrics import FastCounter, FastHistogram

BUCKETS = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.1, 0.5)
VALUES = [0.0, 0.00005, 0.00002, 0.00007, 0.0003, 0.5, 0.7, 12.0, 0.0025, 0.00249, math.inf]


def _without_created(text: bytes) -> list[str]:
    return [line for line in text.decode().splitlines() if "_created" not in line]


@pytest.mark.parametrize("values", [[], VALUES, VALUES * 3 + [math.nan]])
def test_exposition_is_the_histograms(values: list[float]) -> None:
    theirs, ours = CollectorRegistry(), CollectorRegistry()
    reference = Histogram("x_seconds", "Time to decide", buckets=BUCKETS, registry=theirs)
    fast = FastHistogram("x_seconds", "Time to decide", buckets=BUCKETS, registry=ours)
    for value in values:
        reference.observe(value)
        fast.observe(value)
    expected, got = generate_latest(theirs), generate_latest(ours)
    assert _without_created(got) == _without_created(expected)
    assert b"x_seconds_created" in got and b"x_seconds_created" in expected


def test_concurrent_observations_are_all_counted() -> None:
    fast = FastHistogram("y_seconds", "doc", buckets=(0.001, 1.0), registry=None)

    def work() -> None:
        for _ in range(20_000):
            fast.observe(0.0005)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    (metric,) = fast.collect()
    count = next(s.value for s in metric.samples if s.name == "y_seconds_count")
    assert count == 80_000


def test_buckets_must_increase() -> None:
    with pytest.raises(ValueError, match="increasing"):
        FastHistogram("z_seconds", "doc", buckets=(0.5, 0.1), registry=None)


def test_counter_exposition_is_the_counters() -> None:
    theirs, ours = CollectorRegistry(), CollectorRegistry()
    names = ["action", "product", "stage"]
    reference = Counter("v_total", "Verdicts given", names, registry=theirs)
    fast = FastCounter("v_total", "Verdicts given", names, registry=ours)
    for labels, n in [
        (("accept", "Exchange 2019", 0), 3),
        (("throttle", "Exchange 2016", 3), 1),
        (("accept", "Exchange 2019", 0), 2),
        (("block", 'odd "name"\\', 8), 1),
    ]:
        for _ in range(n):
            reference.labels(*labels).inc()
            fast.labels(*labels).inc()
    reference.labels("accept", "Exchange SE", "0").inc(0.5)
    fast.labels("accept", "Exchange SE", "0").inc(0.5)
    expected, got = generate_latest(theirs), generate_latest(ours)
    assert _without_created(got) == _without_created(expected)
    assert got.count(b"v_created{") == expected.count(b"v_created{") == 4
    with pytest.raises(ValueError):
        fast.labels("accept")
    with pytest.raises(ValueError):
        fast.labels("accept", "x", "0").inc(-1)
