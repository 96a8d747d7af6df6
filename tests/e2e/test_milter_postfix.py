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
    EXCHANGE_RECEIVED,
    OLD_BUILD,
    SERVER,
    T0,
    THROTTLE_TEXT,
    exchange_message,
    outside_windows,
    window_start,
)
from harness.postfix import AUTHOR, PostfixInstance, find_free_port, make_message
from harness.sink import SmtpSink


@pytest.fixture
def milter(tmp_path: Path) -> Iterator[DrosselMilter]:
    m = DrosselMilter(tmp_path / "state.db", find_free_port(), tmp_path / "milter.log")
    yield m
    m.stop()


def drossel_cli(db: Path, *args: str) -> str:
    result = subprocess.run(
        # with the milter's own configuration (it enforces unverified evidence)
        [
            *(sys.executable, "-m", "drossel.cli.main", *args, "--db", f"sqlite:///{db}"),
            *("--config", str(db.parent / "drossel.toml")),
        ],
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

    # The blocked server itself (HELO ex01...) is refused at the end of its headers, every
    # time; once patched, its very first message with the new build is accepted (SPEC §4).
    def send_as_server(subject: str, build: str = OLD_BUILD) -> None:
        with smtplib.SMTP(postfix.host, postfix.port, local_hostname=SERVER, timeout=15) as s:
            s.send_message(exchange_message(subject, build=build), AUTHOR, ["bob@remote.example"])

    for attempt in ("stage 8 from the server itself", "stage 8 again"):
        with pytest.raises(smtplib.SMTPDataError) as refused:
            send_as_server(attempt)
        assert (refused.value.smtp_code, refused.value.smtp_error.decode()) == (550, BLOCK_TEXT)
    send_as_server("patched", build="15.2.2562.53")
    assert len(sink.wait_for(3, timeout=20)) == 3

    milter.stop()
    later = (window_start(95) + timedelta(minutes=30)).isoformat()
    report = drossel_cli(milter.db, "report", "--json", "--at", later)
    servers = {r["server_fqdn"]: r for r in json.loads(report)}
    assert servers[SERVER]["remediated"] and servers[SERVER]["stage"] == 0
    assert servers[SERVER]["counts"] == {"accept": 2, "throttle": 1, "block": 3}
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
    sender.flush_until(lambda: len(sink.messages) >= 2, timeout=30)
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
