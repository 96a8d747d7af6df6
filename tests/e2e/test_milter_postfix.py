"""drossel's milter behind real Postfix instances on loopback (issue #3).

A real ``drossel milter`` process (SQLite state, clock set with ``DROSSEL_NOW``) sits behind a
receiving Postfix. A client, or a second Postfix playing the sender's on-premises relay, sends
mail carrying Exchange ``Received:`` lines, and we check what SMTP shows: acceptance in stage 1,
``450 4.7.230`` in a throttle window (queued and delivered later), ``550 5.7.230`` in stage 8
(bounce to the author), and Postfix's default action when drossel is down.
"""

from __future__ import annotations

import json
import os
import signal
import smtplib
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from drossel.core.schedule import hour_offset
from harness.postfix import AUTHOR, PostfixInstance, find_free_port, make_message
from harness.sink import SmtpSink

SERVER = "ex01.contoso.example"
OLD_BUILD = "15.1.2507.6"  # Exchange 2016 CU23 without security updates: unsupported
T0 = datetime(2026, 9, 1, 8, 0, tzinfo=UTC)
EXCHANGE_RECEIVED = (
    "from MBX01.contoso.local (10.0.0.5) by {server} (10.0.0.6) with Microsoft SMTP "
    "Server (version=TLS1_2, cipher=TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384) id {build}; "
    "Tue, 1 Sep 2026 08:00:00 +0000"
)
THROTTLE_TEXT = (
    "4.7.230 Connecting Exchange server version is out-of-date; connection to this mail "
    "service throttled for 5 mins/hr. For more information see https://aka.ms/BlockUnsafeExchange"
)
BLOCK_TEXT = (
    "5.7.230 Connecting Exchange server version is out-of-date; connection to this mail "
    "service blocked for 60 mins/hr. For more information see https://aka.ms/BlockUnsafeExchange"
)


def exchange_message(subject: str, server: str = SERVER, build: str = OLD_BUILD):  # type: ignore[no-untyped-def]
    return make_message(
        sender=AUTHOR,
        subject=subject,
        extra_headers=[("Received", EXCHANGE_RECEIVED.format(server=server, build=build))],
    )


def window_start(days: int, server: str = SERVER, tenant: str = "default") -> datetime:
    """A moment ``days`` after T0, 10 seconds into the server's window of the hour."""
    day = T0 + timedelta(days=days)
    return day.replace(minute=hour_offset(f"{tenant}/{server}"), second=10)


def outside_windows(days: int, server: str = SERVER, tenant: str = "default") -> datetime:
    """A moment after the block and throttle windows of a stage with at most 35 minutes."""
    start = window_start(days, server, tenant)
    return start + timedelta(minutes=40)


class DrosselMilter:
    """A ``drossel milter`` process on a loopback port, clock starting at ``now``."""

    def __init__(self, db: Path, port: int, log: Path) -> None:
        self.db, self.port, self.log = db, port, log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, now: datetime) -> DrosselMilter:
        env = {k: v for k, v in os.environ.items() if not k.startswith("DROSSEL_")}
        env["DROSSEL_NOW"] = now.isoformat()
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "drossel.cli.main",
                    "milter",
                    "--listen",
                    f"inet:127.0.0.1:{self.port}",
                    "--db",
                    f"sqlite:///{self.db}",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log.read_text()
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return self
            except OSError:
                time.sleep(0.1)
        raise AssertionError("drossel milter did not start:\n" + self.log.read_text())

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            assert self.process.wait(timeout=15) == 0, self.log.read_text()
        finally:
            if self.process.poll() is None:
                self.process.kill()

    def restart(self, now: datetime) -> None:
        self.stop()
        self.start(now)


@pytest.fixture
def milter(tmp_path: Path) -> Iterator[DrosselMilter]:
    m = DrosselMilter(tmp_path / "state.db", find_free_port(), tmp_path / "milter.log")
    yield m
    m.stop()


def drossel_cli(db: Path, *args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "drossel.cli.main", *args, "--db", f"sqlite:///{db}"],
        capture_output=True,
        text=True,
        timeout=60,
        env={k: v for k, v in os.environ.items() if not k.startswith("DROSSEL_")},
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_client_sees_stage_1_throttle_and_block_replies(
    milter: DrosselMilter,
    receiving_postfix: Callable[..., PostfixInstance],
    sink: SmtpSink,
) -> None:
    milter.start(T0)
    postfix = receiving_postfix(milter.port, milter_default_action="accept")

    # Stage 1 (report only): accepted, delivered, tagged.
    postfix.send(exchange_message("stage 1"), AUTHOR, ["bob@remote.example"])
    delivered = sink.wait_for(1, timeout=20)
    tag = delivered[0].header("X-Drossel")
    assert tag == f"server={SERVER}; build={OLD_BUILD}; status=unsupported; stage=1"

    # Day 30, inside the 5-minute throttle window: 450 4.7.230 with the exact text.
    milter.restart(window_start(30))
    with pytest.raises(smtplib.SMTPDataError) as throttled:
        postfix.send(exchange_message("stage 2"), AUTHOR, ["bob@remote.example"])
    assert throttled.value.smtp_code == 450
    assert throttled.value.smtp_error.decode() == THROTTLE_TEXT

    # Day 95: stage 8 blocks with 550 5.7.230 ...
    milter.restart(window_start(95) + timedelta(minutes=20))
    with pytest.raises(smtplib.SMTPDataError) as blocked:
        postfix.send(exchange_message("stage 8"), AUTHOR, ["bob@remote.example"])
    assert blocked.value.smtp_code == 550
    assert blocked.value.smtp_error.decode() == BLOCK_TEXT
    # A current Exchange SE server behind the same relay is never refused.
    postfix.send(
        exchange_message("current", server="ex02.contoso.example", build="15.2.2562.53"),
        AUTHOR,
        ["bob@remote.example"],
    )
    assert len(sink.wait_for(2, timeout=20)) == 2

    # When the client is the blocked server itself (HELO ex01...), its next connection is
    # refused already at RCPT, before the message is transferred.
    def send_as_server(subject: str) -> None:
        with smtplib.SMTP(postfix.host, postfix.port, local_hostname=SERVER, timeout=15) as s:
            s.send_message(exchange_message(subject), AUTHOR, ["bob@remote.example"])

    with pytest.raises(smtplib.SMTPDataError):
        send_as_server("stage 8 from the server itself")
    with pytest.raises(smtplib.SMTPRecipientsRefused) as early:
        send_as_server("stage 8 again")
    code, text = early.value.recipients["bob@remote.example"]
    assert (code, text.decode()) == (550, BLOCK_TEXT)

    milter.stop()
    report = drossel_cli(milter.db, "report", "--json", "--at", window_start(95).isoformat())
    servers = {r["server_fqdn"]: r for r in json.loads(report)}
    assert servers[SERVER]["stage"] == 8
    assert servers[SERVER]["counts"] == {"accept": 1, "throttle": 1, "block": 3}
    assert servers["ex02.contoso.example"]["counts"] == {"accept": 1, "throttle": 0, "block": 0}


def test_sending_postfix_queues_on_450_and_gets_a_bounce_on_550(
    milter: DrosselMilter,
    receiving_postfix: Callable[..., PostfixInstance],
    sending_postfix: Callable[..., PostfixInstance],
    sink: SmtpSink,
    author_sink: SmtpSink,
) -> None:
    milter.start(T0)
    receiving = receiving_postfix(milter.port, milter_default_action="accept")
    sender = sending_postfix(receiving)
    sent = 0

    sender.send(exchange_message("day 0"), AUTHOR, ["bob@remote.example"])
    sent += 1
    sink.wait_for(1, timeout=30)

    # Throttle window: the on-premises relay keeps the message deferred with 4.7.230 ...
    milter.restart(window_start(31))
    sender.send(exchange_message("throttled then delivered"), AUTHOR, ["bob@remote.example"])
    sent += 1
    deferred = sender.wait_deferred("4.7.230", timeout=30)
    assert len(deferred) == 1
    assert len(sink.messages) == 1
    # ... and delivers it once the window has passed.
    milter.restart(outside_windows(31))
    sender.flush()
    sink.wait_for(2, timeout=30)
    sender.wait_queue_empty(timeout=30)

    # Stage 8: a permanent 550 5.7.230; the author receives a bounce (NDR) carrying it.
    milter.restart(window_start(92))
    for i in range(3):
        sender.send(exchange_message(f"blocked {i}"), AUTHOR, ["bob@remote.example"])
        sent += 1
    bounces = author_sink.wait_for(3, timeout=45)
    for bounce in bounces:
        assert bounce.mail_from == ""
        assert "5.7.230" in bounce.data.decode(errors="replace")
    sender.wait_queue_empty(timeout=30)
    assert len(sink.messages) + len(bounces) == sent  # nothing lost


def test_drossel_down_means_postfix_default_action(
    milter: DrosselMilter,
    receiving_postfix: Callable[..., PostfixInstance],
    sink: SmtpSink,
) -> None:
    # No drossel on that port at all: default_action=accept delivers.
    postfix = receiving_postfix(milter.port, milter_default_action="accept")
    postfix.send(exchange_message("milter down"), AUTHOR, ["bob@remote.example"])
    assert sink.wait_for(1, timeout=20)[0].header("X-Drossel") is None

    # drossel in stage 8, then stopped mid-flow: the next message is delivered, not lost.
    milter.start(T0)
    postfix.send(exchange_message("first detection"), AUTHOR, ["bob@remote.example"])
    sink.wait_for(2, timeout=20)
    milter.restart(window_start(95))
    with pytest.raises(smtplib.SMTPDataError):
        postfix.send(exchange_message("blocked"), AUTHOR, ["bob@remote.example"])
    milter.stop()
    postfix.send(exchange_message("after stop"), AUTHOR, ["bob@remote.example"])
    assert len(sink.wait_for(3, timeout=20)) == 3


def test_forged_verdict_headers_are_replaced_by_ours(
    milter: DrosselMilter,
    receiving_postfix: Callable[..., PostfixInstance],
    sink: SmtpSink,
) -> None:
    """A sender cannot pass its own X-Drossel off as drossel's (issue 10, SPEC §3)."""
    milter.start(T0)
    postfix = receiving_postfix(milter.port, milter_default_action="tempfail")
    message = make_message(
        sender=AUTHOR,
        subject="forged verdict",
        extra_headers=[
            ("X-Drossel", "server=ex01.contoso.example; build=15.2.2562.53; status=current"),
            ("Received", EXCHANGE_RECEIVED.format(server=SERVER, build=OLD_BUILD)),
            ("x-drossel", "stage=0"),
        ],
    )
    postfix.send(message, AUTHOR, ["bob@remote.example"])
    (delivered,) = sink.wait_for(1, timeout=20)
    assert delivered.header_all("X-Drossel") == [
        f"server={SERVER}; build={OLD_BUILD}; status=unsupported; stage=1"
    ]
    assert "stage=0" not in delivered.text and "status=current" not in delivered.text
