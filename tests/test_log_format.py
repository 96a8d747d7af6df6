"""The daemon's log formatter writes exactly what ``logging.Formatter`` writes."""

from __future__ import annotations

import logging

from drossel.redact import RedactingFilter
from drossel.runtime import _Formatter

FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


def _record(created: float, msg: str = "decision action=%s n=%d", args: tuple = ("accept", 3)):  # type: ignore[type-arg]
    record = logging.LogRecord("drossel.decision", logging.INFO, __file__, 1, msg, args, None)
    record.created = created
    record.msecs = (created - int(created)) * 1000
    return record


def test_same_text_as_the_standard_formatter_across_seconds() -> None:
    ours, standard = _Formatter(FORMAT), logging.Formatter(FORMAT)
    base = 1_775_000_000.0
    for step in [0.0, 0.001, 0.5, 0.999, 1.0, 1.0004, 59.9999, 60.0, 3600.25, 86_400.75, 1.5]:
        record = _record(base + step)
        assert ours.format(record) == standard.format(record)
    with_datefmt = _Formatter(FORMAT, datefmt="%H:%M")
    record = _record(base + 7.25)
    assert with_datefmt.format(record) == logging.Formatter(FORMAT, "%H:%M").format(record)


def test_the_filter_formats_once_and_the_line_is_unchanged() -> None:
    record = _record(1_775_000_000.5, "reason=%r %s", ("it's 100%", "x"))
    expected = logging.Formatter(FORMAT).format(
        _record(1_775_000_000.5, "reason=%r %s", ("it's 100%", "x"))
    )
    assert RedactingFilter().filter(record)
    assert record.args is None and record.msg == 'reason="it\'s 100%" x'
    assert _Formatter(FORMAT).format(record) == expected
