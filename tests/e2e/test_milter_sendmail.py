"""drossel's milter behind a real Sendmail (Debian's sendmail-bin, private instance on loopback).

The README promises Sendmail support through ``INPUT_MAIL_FILTER``; this proves it the way the
Postfix tests do: a real ``drossel milter`` process, a Sendmail daemon with its own ``.cf``
(built from an ``.mc`` by m4), port, queue and traffic log, relaying to an SMTP sink.  We check
what an SMTP client sees: acceptance with ``X-Drossel`` in stage 1, ``450 4.7.230`` in a
throttle window, ``550 5.7.230`` in stage 8, and Sendmail's filter-unavailable behaviour
(``F=T`` tempfails, no flags accepts unfiltered).
"""

from __future__ import annotations

import json
import os
import smtplib
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from harness.drossel_milter import DrosselMilter
from harness.exchange import (
    BLOCK_TEXT,
    OLD_BUILD,
    SERVER,
    T0,
    THROTTLE_TEXT,
    exchange_message,
    window_start,
)
from harness.postfix import AUTHOR, find_free_port
from harness.sendmail import SendmailInstance, unavailable_reason
from harness.sink import SmtpSink

pytestmark = pytest.mark.sendmail

RECIPIENT = "bob@remote.example"


@pytest.fixture
def milter(tmp_path: Path) -> Iterator[DrosselMilter]:
    m = DrosselMilter(tmp_path / "state.db", find_free_port(), tmp_path / "milter.log")
    yield m
    m.stop()


@pytest.fixture
def sendmail(tmp_path: Path, sink: SmtpSink) -> Iterator[Callable[..., SendmailInstance]]:
    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    instances: list[SendmailInstance] = []

    def make(milter_port: int, flags: str = "T") -> SendmailInstance:
        instance = SendmailInstance(
            tmp_path / f"sendmail{len(instances) + 1}",
            find_free_port(),
            sink.port,
            milter=f"inet:{milter_port}@127.0.0.1",
            flags=flags,
        )
        instances.append(instance)
        return instance.start()

    yield make
    for instance in instances:
        print(f"===== {instance!r}\n{instance.log_tail(40)}")  # shown when a test fails
        instance.stop()


def send(instance: SendmailInstance, subject: str, **kw: str) -> None:
    with smtplib.SMTP(instance.host, instance.port, timeout=30) as client:
        client.send_message(exchange_message(subject, **kw), AUTHOR, [RECIPIENT])


def report(db: Path, at: str) -> dict[str, dict[str, object]]:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "drossel",
            "report",
            "--json",
            "--db",
            f"sqlite:///{db}",
            "--at",
            at,
            "--config",  # the milter's own configuration (it enforces unverified evidence)
            str(db.parent / "drossel.toml"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={k: v for k, v in os.environ.items() if not k.startswith("DROSSEL_")},
    )
    assert done.returncode == 0, done.stderr
    return {r["server_fqdn"]: r for r in json.loads(done.stdout)}


def test_accept_with_header_then_450_then_550(
    milter: DrosselMilter, sendmail: Callable[..., SendmailInstance], sink: SmtpSink
) -> None:
    milter.start(T0)
    mta = sendmail(milter.port)

    # Stage 1 (report only): accepted, relayed to the sink, tagged by the milter.
    send(mta, "stage 1")
    (delivered,) = sink.wait_for(1, timeout=30)
    assert delivered.header("X-Drossel") == (
        f"server={SERVER}; build={OLD_BUILD}; status=unsupported; stage=1"
    )
    # it really came through Sendmail (its Received line names its version)
    assert "by mx.sendmail.test (8." in (delivered.header("Received") or "")

    # Day 30, inside the throttle window: Sendmail answers 450 4.7.230 with drossel's text.
    milter.restart(window_start(30))
    with pytest.raises(smtplib.SMTPDataError) as throttled:
        send(mta, "stage 2")
    assert throttled.value.smtp_code == 450
    assert throttled.value.smtp_error.decode() == THROTTLE_TEXT

    # Day 95: stage 8 blocks with 550 5.7.230; a current server is still accepted.
    milter.restart(window_start(95) + timedelta(minutes=20))
    with pytest.raises(smtplib.SMTPDataError) as blocked:
        send(mta, "stage 8")
    assert blocked.value.smtp_code == 550
    assert blocked.value.smtp_error.decode() == BLOCK_TEXT
    send(mta, "current", server="ex02.contoso.example", build="15.2.2562.53")
    assert len(sink.wait_for(2, timeout=30)) == 2
    mta.wait_queue_empty(timeout=30)  # refused mail is not left queued in Sendmail

    milter.stop()
    servers = report(milter.db, window_start(95).isoformat())
    assert servers[SERVER]["stage"] == 8
    assert servers[SERVER]["counts"] == {"accept": 1, "throttle": 1, "block": 1}
    assert "450 4.7.230" in mta.log_text() and "550 5.7.230" in mta.log_text()


@pytest.mark.parametrize(("flags", "delivered"), [("T", False), ("", True)])
def test_filter_unavailable(
    flags: str,
    delivered: bool,
    milter: DrosselMilter,
    sendmail: Callable[..., SendmailInstance],
    sink: SmtpSink,
) -> None:
    """Nothing listens on the filter's port: ``F=T`` defers the mail, no flags let it through
    unfiltered (the same choice as Postfix's milter_default_action)."""
    mta = sendmail(milter.port, flags=flags)  # the milter is never started
    if delivered:
        send(mta, "no filter")
        (got,) = sink.wait_for(1, timeout=30)
        assert got.header("Subject") == "no filter"
        assert got.header("X-Drossel") is None
    else:
        with pytest.raises(smtplib.SMTPResponseException) as deferred:
            send(mta, "no filter")
        assert deferred.value.smtp_code == 451
        assert deferred.value.smtp_error.decode().startswith("4.3.")
        assert sink.messages == []
