"""The daemon's log formatter writes exactly what ``logging.Formatter`` writes."""

from __future__ import annotations

import io
import logging
import re
import sys
import time
from collections.abc import Callable, Iterator
from datetime import datetime

import pytest

from drossel import redact
from drossel.app.enforcer import log_decision
from drossel.redact import RedactingFilter
from drossel.runtime import LINE_FORMAT, _Formatter, setup_logging

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


def test_the_line_format_is_the_documented_one() -> None:
    assert LINE_FORMAT == FORMAT


def test_records_with_exception_or_stack_text_get_the_standard_text() -> None:
    ours, standard = _Formatter(FORMAT), logging.Formatter(FORMAT)
    try:
        raise RuntimeError("broken")
    except RuntimeError:
        exc_info = sys.exc_info()
    with_exc = [_record(1_775_000_000.25) for _ in range(2)]
    for record in with_exc:
        record.exc_info = exc_info
    assert ours.format(with_exc[0]) == standard.format(with_exc[1])
    assert "RuntimeError: broken" in ours.format(with_exc[0])
    with_stack = [_record(1_775_000_000.25) for _ in range(2)]
    for record in with_stack:
        record.stack_info = "Stack (most recent call last):\n  here"
    assert ours.format(with_stack[0]) == standard.format(with_stack[1])
    other = "%(levelname)s %(message)s"
    assert _Formatter(other).format(_record(1.5)) == logging.Formatter(other).format(_record(1.5))


def test_without_a_remembered_password_the_filter_leaves_records_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(redact, "_ordered", ())
    record = _record(1_775_000_000.5)
    assert RedactingFilter().filter(record)
    assert record.msg == "decision action=%s n=%d" and record.args == ("accept", 3)


def test_a_remembered_password_is_blanked_in_message_and_arguments(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(redact, "_ordered", ("hunter22",))
    record = _record(1_775_000_000.5, "url=%s said %s", ("pg://u:hunter22@h/d", "x"))
    assert RedactingFilter().filter(record)
    assert "hunter22" not in _Formatter(FORMAT).format(record)
    assert record.msg == "url=pg://u:***@h/d said x"


def test_the_filter_formats_once_and_the_line_is_unchanged(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(redact, "_ordered", ("not-in-this-line",))
    record = _record(1_775_000_000.5, "reason=%r %s", ("it's 100%", "x"))
    expected = logging.Formatter(FORMAT).format(
        _record(1_775_000_000.5, "reason=%r %s", ("it's 100%", "x"))
    )
    assert RedactingFilter().filter(record)
    assert record.args is None and record.msg == 'reason="it\'s 100%" x'
    assert _Formatter(FORMAT).format(record) == expected


@pytest.fixture
def daemon_log(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[], io.StringIO]]:
    """Sets up the daemons' log (:func:`setup_logging`) on a string, when the test calls it
    (pytest puts its own handlers and stderr in place as the test starts)."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level, logging.getLogger("drossel").level

    def start() -> io.StringIO:
        stream = io.StringIO()
        monkeypatch.setattr(sys, "stderr", stream)
        setup_logging()
        return stream

    try:
        yield start
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
        logging.getLogger("drossel").setLevel(saved[2])


LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (?P<rest>.*)$")


def test_the_decision_line_reads_as_through_logging(daemon_log: Callable[[], io.StringIO]) -> None:
    stream = daemon_log()
    message = "decision action=accept server=ex01.contoso.local reason='it''s 100%'"
    # the direct way is taken: the daemon's handler is the only one
    assert [type(h).__name__ for h in logging.getLogger().handlers] == ["DaemonLogHandler"]
    before = time.time()
    log_decision(message)
    logging.getLogger("drossel.decision").info("%s", message)  # the standard way
    after = time.time()
    direct, standard = stream.getvalue().splitlines()
    for line in (direct, standard):
        match = LINE.match(line)
        assert match and match["rest"] == f"INFO drossel.decision {message}"
        stamp = datetime.strptime(line[:19], "%Y-%m-%d %H:%M:%S").timestamp()
        assert int(before) - 1 <= stamp <= after


def test_the_decision_line_is_redacted_too(
    daemon_log: Callable[[], io.StringIO], monkeypatch: pytest.MonkeyPatch
) -> None:
    stream = daemon_log()
    monkeypatch.setattr(redact, "_ordered", ("hunter22",))
    log_decision("decision tenant=hunter22.example")
    assert "hunter22" not in stream.getvalue()
    assert "tenant=***.example" in stream.getvalue()


def test_the_decision_line_respects_levels(daemon_log: Callable[[], io.StringIO]) -> None:
    stream = daemon_log()
    handler = logging.getLogger().handlers[0]
    handler.setLevel(logging.WARNING)
    log_decision("decision action=accept")
    assert stream.getvalue() == ""


def test_any_other_logging_set_up_gets_the_decision_line_the_standard_way(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO, logger="drossel.decision"):
        log_decision("decision action=throttle server=ex01")
    assert [(r.name, r.levelno, r.getMessage()) for r in caplog.records] == [
        ("drossel.decision", logging.INFO, "decision action=throttle server=ex01")
    ]


def test_time_text_is_the_standard_asctime() -> None:
    ours, standard = _Formatter(FORMAT), logging.Formatter(FORMAT)
    for created in (1_775_000_000.0, 1_775_000_000.9994, 1_775_000_059.5):
        record = _record(created)
        record.msecs = int((created - int(created)) * 1000) + 0.0
        assert ours.time_text(created) == standard.formatTime(record)
