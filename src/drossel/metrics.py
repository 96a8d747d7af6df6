"""Prometheus metrics, served at ``/metrics`` by the web app (and by ``drossel serve``)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

VERDICTS = Counter(
    "drossel_verdicts_total",
    "Verdicts given, by action, product and stage",
    ["action", "product", "stage"],
)
DECISION_SECONDS = Histogram(
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
