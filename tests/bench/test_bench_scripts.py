"""The benchmark scripts still run and report every row (tiny sizes; no figure is judged here:
speed is measured by the benchmarks themselves, never by tests)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


def _run(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def test_decision_benchmark_reports_every_row() -> None:
    result = _run(
        str(BENCH / "decision.py"), "--rounds", "1", "--iterations", "400", "--sets", "20",
        "--json", timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    rows = {row["row"]: row for row in json.loads(result.stdout)["decision"]}
    goal = "milter default (SQLite, process_async), cache"
    assert goal in rows and "reference: email HeaderParser" in rows and "detect only" in rows
    for row in rows.values():
        assert row["median_us"] > 0 and row["p99_us"] >= row["median_us"]


def test_scale_benchmark_times_both_sizes_side_by_side() -> None:
    """Both sizes get their own node runs and the side-by-side runs (the two engines in one
    process, taking turns message by message) that give the p99 ratio."""
    result = _run(
        str(BENCH / "scale.py"), "--backends", "sqlite", "--small", "50", "--servers", "400",
        "--known", "50", "--messages", "300", "--repeat", "2", timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    assert any(line.split()[:2] == ["sqlite", "50"] for line in lines)
    assert any(line.split()[:2] == ["sqlite", "400"] for line in lines)
    side = next(line for line in lines if "side by side:" in line)
    ratio = next(line for line in lines if "p99 ratio 400/50 = " in line)
    assert "median of 2 runs" in ratio
    assert float(ratio.split(" = ")[1].split()[0]) > 0
    assert side.count(" us") == 2


@pytest.mark.postfix
def test_milter_benchmark_runs_every_anchor_to_completion() -> None:
    """Postfix alone, the no-op C milter on inet: (with its quick-ACK shim) and on unix:, and
    drossel: every message of every variant arrives (the script fails on a missing one)."""
    if not shutil.which("gcc") or not Path("/usr/include/libmilter/mfapi.h").exists():
        pytest.skip("needs gcc and libmilter-dev (scripts/setup.sh installs them)")
    variants = "postfix,noop,noop-unix,drossel"
    result = _run(
        str(BENCH / "milter.py"), "--messages", "40", "--sessions", "4", "--rounds", "2",
        "--warmup", "4", "--variants", variants, "--json", timeout=600,
    )  # fmt: skip
    if result.returncode == 2:  # the script's "cannot run here" (no Postfix, no root)
        pytest.skip(result.stderr.strip()[-300:])
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)
    assert set(report["median_msgs_per_s"]) == set(variants.split(","))
    assert all(rate > 0 for rate in report["median_msgs_per_s"].values())
    assert {"drossel/noop", "noop/postfix", "noop-unix/postfix"} <= set(report["ratios"])
    # a ratio is the median of the rounds' own ratios (here: the mean of two)
    rates = report["msgs_per_s"]
    pair = [d / n for d, n in zip(rates["drossel"], rates["noop"], strict=True)]
    assert report["round_ratios"]["drossel/noop"] == [round(r, 3) for r in pair]
    assert report["ratios"]["drossel/noop"] == round(sum(pair) / 2, 3)
    # and by the machine's CPU per message (the anchor's over drossel's)
    cpu = report["median_machine_cpu_ms_per_message"]
    assert all(ms > 0 for ms in cpu.values())
    assert 0 < report["cpu_ratios"]["drossel/noop"] < 2


def test_milter_replay_compares_two_source_trees(tmp_path: Path) -> None:
    """``bench/milter_replay.py compare`` replays a conversation to two milters and prints both
    costs.  The conversation is made as ``record`` makes one: the recorded exchange of the
    milter tests sent to a real ``drossel milter``, with what it answered."""
    import asyncio
    import pickle

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "milter"))
    sys.path.insert(0, str(BENCH))
    import milter_replay
    from milter_helpers import EXCHANGE

    async def answers() -> bytes:
        milter = milter_replay.start_drossel("recording", tmp_path)
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", milter_replay._port(milter))
            writer.write(EXCHANGE)
            replies = await asyncio.wait_for(reader.read(-1), 30)  # drossel closes after QUIT
            writer.close()
            return replies
        finally:
            milter.stop()

    replies = asyncio.run(answers())
    assert len(milter_replay._packets(replies)) >= 2  # OPTNEG and end of message at least
    path = tmp_path / "conversations.pickle"
    path.write_bytes(pickle.dumps([[("mta", EXCHANGE), ("milter", replies)]]))
    src = str(BENCH.parent / "src")
    result = _run(
        str(BENCH / "milter_replay.py"), "compare", src, src, "--conversations", str(path),
        "--messages", "30", "--rounds", "2", "--warmup", "10", timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"A {src}: ") and lines[1].startswith(f"B {src}: ")
    assert lines[2].startswith("B / A: ")
