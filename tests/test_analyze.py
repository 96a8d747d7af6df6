"""``drossel analyze``: the same result from an mbox, a Maildir and a directory of .eml files
(all three written with Python's ``mailbox``), through the real command line."""

from __future__ import annotations

import csv
import io
import json
import mailbox
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import pytest

from drossel.analyze import message_time, scan
from drossel.archive import open_archive
from drossel.core.detection import parse_headers
from drossel.core.policy import Policy
from drossel.core.schedule import window_action

OLD = ("ex01.contoso.example", "15.1.2507.6")  # Exchange 2016 CU23 without updates: unsupported
CURRENT = ("mail.fabrikam.example", "15.2.2562.53")
START = datetime(2026, 9, 1, 6, 0, tzinfo=UTC)


def exchange_message(server: str, build: str, when: datetime, n: int) -> bytes:
    stamp = format_datetime(when)
    return (
        f"Received: from mx.operator.example by mailbox.operator.example with ESMTP; {stamp}\r\n"
        f"Received: from MBX01.local (10.0.0.5) by {server} (10.0.0.6) with Microsoft SMTP\r\n"
        f" Server (version=TLS1_2) id {build}; {stamp}\r\n"
        f"From: a{n}@{server.split('.', 1)[1]}\r\n"
        "To: b@operator.example\r\n"
        f"Subject: message {n}\r\n"
        f"Date: {stamp}\r\n"
        "\r\n"
        "From the body: a line an mbox must escape.\r\n"
    ).encode()


def plain_message(when: datetime, n: int) -> bytes:
    return (
        f"Received: from a.example by mx.operator.example with ESMTPS; {format_datetime(when)}\n"
        f"Subject: plain {n}\n\nbody\n"
    ).encode()


def corpus() -> list[bytes]:
    """Ten days: the old server 7 a day at spread minutes, the current one 2, plain mail 3."""
    out: list[bytes] = []
    n = 0
    for day in range(10):
        for i in range(12):
            when = START + timedelta(days=day, hours=i, minutes=(day * 13 + i * 17) % 60)
            n += 1
            if i < 7:
                out.append(exchange_message(*OLD, when, n))
            elif i < 9:
                out.append(exchange_message(*CURRENT, when, n))
            else:
                out.append(plain_message(when, n))
    return out


@pytest.fixture(scope="module")
def archives(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("archives")
    messages = corpus()
    mbox = mailbox.mbox(base / "mail.mbox")
    maildir = mailbox.Maildir(base / "Maildir")
    (base / "eml").mkdir()
    for i, raw in enumerate(messages):
        mbox.add(raw)
        maildir.add(raw)
        (base / "eml" / f"{i:04d}.eml").write_bytes(raw)
    mbox.flush()
    mbox.close()
    return {"mbox": base / "mail.mbox", "maildir": base / "Maildir", "eml": base / "eml"}


def analyze(path: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "drossel", "analyze", str(path), "--at", "2026-10-01", *flags],
        capture_output=True,
        text=True,
        timeout=120,
        env={k: v for k, v in os.environ.items() if not k.startswith("DROSSEL_")},
    )


def test_archive_kinds_are_recognised(archives: dict[str, Path]) -> None:
    kinds = {name: open_archive(path).kind for name, path in archives.items()}
    assert kinds == {"mbox": "mbox", "maildir": "maildir", "eml": "directory"}


def test_mbox_maildir_and_directory_give_the_same_result(archives: dict[str, Path]) -> None:
    results = {}
    for name, path in archives.items():
        done = analyze(path, "--json")
        assert done.returncode == 0, done.stderr
        result = json.loads(done.stdout)
        result.pop("source")
        results[name] = result
    assert results["mbox"] == results["maildir"] == results["eml"]
    result = results["mbox"]
    assert result["messages"] == 120
    assert result["messages_from_on_premises_exchange"] == 90
    servers = {s["server"]: s for s in result["servers"]}
    assert set(servers) == {OLD[0], CURRENT[0]}
    old, current = servers[OLD[0]], servers[CURRENT[0]]
    assert (old["messages"], current["messages"]) == (70, 20)
    assert old["status"] == "unsupported" and old["enforced"] is True
    assert current["status"] == "current" and current["enforced"] is False
    assert old["first_seen"].startswith("2026-09-01T06:")
    assert old["last_seen"].startswith("2026-09-10T")
    assert old["messages_per_day"] == 7.0
    assert OLD[1] in old["evidence"]
    # schedule from --at with the default policy: throttling from day 30, blocking from day 60
    assert old["throttle_start"].startswith("2026-10-31")
    assert old["block_start"].startswith("2026-11-30")
    assert current["throttle_start"] is None and current["block_start"] is None
    # the final stage refuses everything: all of the server's daily mail
    assert old["refused_per_day_final"] == 7.0
    assert old["stages"][0]["throttled_per_day"] == 0.0


def test_refusals_per_day_follow_the_server_windows(archives: dict[str, Path]) -> None:
    """Recount independently: each dated message of the old server in each stage's windows."""
    policy = Policy()
    expected = {n: 0 for n in range(1, len(policy.stages) + 1)}
    for block in mailbox.mbox(archives["mbox"]):
        headers = parse_headers(block.as_bytes().decode())
        if OLD[0] not in str(block.get_all("Received")):
            continue
        when = message_time(headers)
        assert when is not None
        for n, stage in enumerate(policy.stages, 1):
            expected[n] += window_action(stage, f"default/{OLD[0]}", when) != "accept"
    result = json.loads(analyze(archives["maildir"], "--json").stdout)
    old = next(s for s in result["servers"] if s["server"] == OLD[0])
    got = {s["stage"]: s["throttled_per_day"] + s["blocked_per_day"] for s in old["stages"]}
    assert got == {n: pytest.approx(c / 10, abs=0.011) for n, c in expected.items()}
    assert any(0 < c < 70 for c in expected.values())  # the windows really partition the hour


def test_csv_has_a_header_and_one_row_per_server(archives: dict[str, Path]) -> None:
    done = analyze(archives["eml"], "--csv")
    assert done.returncode == 0, done.stderr
    rows = list(csv.DictReader(io.StringIO(done.stdout)))
    assert [r["server"] for r in rows] == [OLD[0], CURRENT[0]]
    assert rows[0]["messages"] == "70" and rows[0]["status"] == "unsupported"


def test_table_fits_80_columns(archives: dict[str, Path]) -> None:
    done = analyze(archives["mbox"])
    assert done.returncode == 0, done.stderr
    assert OLD[0] in done.stdout.replace("\n", "") or "ex01" in done.stdout
    assert max(len(line) for line in done.stdout.splitlines()) <= 80
    assert "120 messages, 90 from 2 on-premises Exchange servers" in done.stdout


def test_missing_path_is_a_clear_error(tmp_path: Path) -> None:
    done = analyze(tmp_path / "nope.mbox")
    assert done.returncode == 2
    assert done.stderr.startswith("drossel: error: cannot read") and "Traceback" not in done.stderr


def test_garbage_and_empty_messages_are_counted_not_fatal(tmp_path: Path) -> None:
    (tmp_path / "a.eml").write_bytes(b"\x00\xff garbage without headers\n")
    (tmp_path / "b.eml").write_bytes(b"")
    (tmp_path / "c.eml").write_bytes(b"Received: from x by y with Microsoft SMTP Server id 99;\n")
    archive = open_archive(tmp_path)
    analysis = scan(archive, Policy())
    assert analysis.messages == 3
    assert analysis.servers == {}


def test_reading_only_received_and_date_detects_the_same() -> None:
    """The header filter analyze uses before detection changes no detection result."""
    from drossel.analyze import wanted_fields
    from drossel.core.detection import detect, header_block

    fixtures = Path(__file__).resolve().parent / "fixtures" / "headers"
    samples = sorted(fixtures.iterdir())
    shared = Path(__file__).resolve().parents[2] / "shared" / "research" / "header-samples"
    samples += sorted(shared.glob("*.txt")) if shared.is_dir() else []
    found = 0
    for sample in samples:
        block = header_block(sample.read_bytes())
        raw = block.encode("utf-8", "surrogateescape") if isinstance(block, str) else block
        full, filtered = detect(raw), detect(wanted_fields(raw))
        assert filtered == full, sample.name
        found += full.connecting is not None
    assert found >= 3


def test_a_single_message_file(tmp_path: Path) -> None:
    path = tmp_path / "one.eml"
    path.write_bytes(exchange_message(*OLD, START, 1))
    archive = open_archive(path)
    assert archive.kind == "message"
    analysis = scan(archive, Policy())
    assert analysis.messages == 1
    assert [t.server for t in analysis.servers.values()] == [OLD[0]]
