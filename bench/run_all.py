"""Run every benchmark in ``bench/`` and write one markdown report (not a test).

    python bench/run_all.py            # small but meaningful sizes (a few minutes)
    python bench/run_all.py --full     # the sizes of issue 12 (20 to 30 minutes on 2 cores)
    python bench/run_all.py --only decision,memory

Each benchmark runs as its own process with the sizes below; its exit status decides what the
report says: ``ok``, ``skipped`` (the script said it cannot run here, e.g. no root or no
Postfix, or a backend is unreachable), ``failed`` (any other non-zero exit, with the end of its
error output) or ``timeout``.  Nothing is left out: every benchmark gets a row.  The report
(stdout and ``docs/benchmarks-latest.md``) starts with the machine (``uname -a``, CPU model,
cores, memory, Python) and the date, then a summary table, then each benchmark's own output.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
OUT = ROOT / "docs" / "benchmarks-latest.md"
#: the milter and gateway scripts exit with this status (and say why) when they cannot run
CANNOT_RUN = 2


@dataclass
class Bench:
    name: str
    what: str
    small: list[str]
    full: list[str]
    script: str
    needs_postgres: bool = False
    timeout_small: float = 900
    timeout_full: float = 4 * 3600
    extra: dict[str, str] = field(default_factory=dict)


#: the variants of issue 12's milter target: Postfix alone, the no-op, drossel at its defaults
#: and the no-op that reads headers (bench/milter.py runs them in this order, forward and back)
HEADLINE = "postfix,noop,drossel,noop-headers"
#: the one-session (latency) row: the anchors and drossel on inet: and unix:
ONE_SESSION = ["--variants", "postfix,noop,noop-unix,drossel,drossel-unix"]

BENCHES = [
    Bench(
        "decision",
        "detect + assess + decide per message, steady state (goal <= 20 µs median)",
        # not fewer calls per round: rows take turns in twentieths of a round, and slices of
        # a few hundred calls measure caches cooling between the turns (about 1.5 x slower)
        ["--rounds", "2", "--iterations", "20000"],
        ["--rounds", "5", "--iterations", "50000"],
        "decision.py",
    ),
    Bench(
        "memory",
        "RSS of a real `drossel milter` with N servers cached and with 1,000 idle connections, "
        "and of the engine on a MemoryStore (goal <= 150 MiB at 100,000 and at 1,000)",
        ["--no-decision", "--memory", "20000", "--connections", "1000"],
        ["--no-decision", "--memory", "100000", "--connections", "1000"],
        "decision.py",
    ),
    Bench(
        "analyze",
        "`drossel analyze` on an mbox vs mailbox.mbox + email parsing",
        ["--messages", "5000"],
        ["--messages", "100000"],
        "analyze.py",
    ),
    Bench(
        "scale (sqlite)",
        "decision latency and RSS, small vs large number of tracked servers, SQLite",
        ["--backends", "sqlite", "--servers", "20000", "--messages", "10000", "--repeat", "2"],
        ["--backends", "sqlite", "--servers", "300000"],
        "scale.py",
    ),
    Bench(
        "scale (postgres)",
        "as above on PostgreSQL ($DROSSEL_TEST_PG)",
        ["--backends", "postgres", "--servers", "20000", "--messages", "10000", "--repeat", "2"],
        ["--backends", "postgres", "--servers", "300000"],
        "scale.py",
        needs_postgres=True,
    ),
    Bench(
        "overview",
        "one page of the operator overview vs SELECT count(*), SQLite",
        ["--servers", "20000"],
        ["--servers", "100000"],
        "overview.py",
    ),
    Bench(
        "milter",
        "Postfix + drossel milter vs Postfix alone and a no-op C milter (needs root and Postfix)",
        ["--messages", "1000", "--sessions", "10", "--rounds", "3", "--variants", HEADLINE],
        # issue 12's load: smtp-source, 20 sessions, 4,000 messages, in one run, on the variants
        # of its target only, in 11 rounds: single rounds on a shared 2-core machine move by
        # 10 to 20 %, so the median of 5 still moved by more than the 5 % in question
        ["--messages", "4000", "--sessions", "20", "--rounds", "11", "--variants", HEADLINE],
        "milter.py",
    ),
    Bench(
        "milter (variants)",
        "every variant: the other anchors, add_header off, asyncio, unix:, --workers",
        ["--messages", "500", "--sessions", "10", "--rounds", "1"],
        ["--messages", "2000", "--sessions", "20", "--rounds", "3"],
        "milter.py",
    ),
    Bench(
        "milter (one session)",
        "the same with one SMTP session at a time: per-message latency, not throughput",
        ["--messages", "200", "--sessions", "1", "--rounds", "1", "--warmup", "20", *ONE_SESSION],
        ["--messages", "500", "--sessions", "1", "--rounds", "3", "--warmup", "50", *ONE_SESSION],
        "milter.py",
    ),
    Bench(
        "gateway",
        "drossel SMTP gateway vs Postfix relay (needs root and Postfix)",
        ["--messages", "1000", "--sessions", "10", "--rounds", "2"],
        ["--messages", "10000", "--sessions", "20", "--rounds", "3"],
        "gateway.py",
    ),
]


@dataclass
class Result:
    bench: Bench
    status: str
    seconds: float
    command: list[str]
    output: str
    detail: str = ""


def load_average() -> tuple[float, float, float] | None:
    return os.getloadavg() if hasattr(os, "getloadavg") else None


def shared(load: tuple[float, float, float] | None) -> bool:
    """Whether a 1-minute load average above half the cores says other work is running."""
    return load is not None and load[0] > (os.cpu_count() or 1) / 2


def settle(limit: float) -> float:
    """Wait (at most ``limit`` seconds) until the machine is not :func:`shared`, so that work
    that just ended does not count as other work; the seconds waited."""
    started = time.monotonic()
    while shared(load_average()) and time.monotonic() - started < limit:
        time.sleep(5)
    return time.monotonic() - started


def machine(
    started: datetime, start_load: tuple[float, float, float] | None
) -> list[tuple[str, str]]:
    cpu = "unknown"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory = "unknown"
    meminfo = Path("/proc/meminfo")
    if meminfo.exists():
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory = f"{int(line.split()[1]) / 2**20:.1f} GiB"
    try:
        uname = subprocess.run(["uname", "-a"], capture_output=True, text=True).stdout.strip()
    except OSError:
        uname = " ".join(platform.uname())
    load = ", ".join(f"{x:.2f}" for x in start_load) if start_load else "?"
    end_load = load_average()
    return [
        ("date", f"{started:%Y-%m-%d %H:%M} to {datetime.now(UTC):%H:%M} UTC"),
        ("uname -a", uname),
        ("CPU", cpu),
        ("cores", str(os.cpu_count())),
        ("memory", memory),
        ("Python", f"{platform.python_implementation()} {platform.python_version()}"),
        ("load average at start (1, 5, 15 min)", load),
        (
            "load average at the end (the milter and gateway runs load both cores themselves)",
            ", ".join(f"{x:.2f}" for x in end_load) if end_load else "?",
        ),
    ]


def postgres_unreachable() -> str | None:
    url = os.environ.get(
        "DROSSEL_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
    ).replace("+psycopg", "")
    try:
        import psycopg

        psycopg.connect(url, connect_timeout=5).close()
    except Exception as exc:  # any failure means: not here
        return f"PostgreSQL unreachable ({exc.__class__.__name__})"
    return None


def run(bench: Bench, full: bool) -> Result:
    command = [sys.executable, str(BENCH / bench.script), *(bench.full if full else bench.small)]
    if bench.needs_postgres:
        reason = postgres_unreachable()
        if reason:
            return Result(bench, "skipped", 0.0, command, "", reason)
    started = time.perf_counter()
    try:
        done = subprocess.run(
            command,
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=bench.timeout_full if full else bench.timeout_small,
        )
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        return Result(bench, "timeout", time.perf_counter() - started, command, out)
    seconds = time.perf_counter() - started
    err = done.stderr.strip()
    if done.returncode == 0:
        return Result(bench, "ok", seconds, command, done.stdout)
    last = err.splitlines()[-1] if err else f"exit status {done.returncode}"
    if done.returncode == CANNOT_RUN and "cannot run" in err:
        return Result(bench, "skipped", seconds, command, done.stdout, last)
    tail = "\n".join(err.splitlines()[-15:])
    return Result(bench, "failed", seconds, command, done.stdout + "\n" + tail, last)


def report(
    results: list[Result],
    full: bool,
    started: datetime,
    start_load: tuple[float, float, float] | None,
) -> str:
    lines = ["# Latest benchmark run", ""]
    lines.append(
        "Written by `python bench/run_all.py"
        + (" --full" if full else "")
        + "`; see docs/benchmarks.md for what each benchmark measures and how to read it. "
        + ("Issue sizes." if full else "Small sizes (`--full` gives the issue's sizes).")
        + " Figures depend on the machine and its load; compare ratios within one run."
    )
    lines += ["", "| machine | |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in machine(started, start_load)]
    if shared(start_load):
        assert start_load is not None
        lines += [
            "",
            f"**The machine was shared** (load average {start_load[0]:.1f} on "
            f"{os.cpu_count()} cores at the "
            "start): absolute figures are noisy, and p99 values of a few milliseconds are the "
            "scheduler giving the core to other work, not drossel. Ratios measured in the same "
            "run are the figures to compare.",
        ]
    lines += ["", "| benchmark | status | seconds | what | note |", "|---|---|---:|---|---|"]
    for r in results:
        note = r.detail.replace("|", "\\|")
        lines.append(
            f"| {r.bench.name} | **{r.status}** | {r.seconds:.0f} | {r.bench.what} | {note} |"
        )
    for r in results:
        lines += ["", f"## {r.bench.name}: {r.status}", ""]
        lines.append("    " + " ".join(["python", *r.command[1:]]).replace(str(ROOT) + "/", ""))
        lines.append("")
        if r.output.strip():
            lines += ["```", r.output.strip(), "```"]
        elif r.detail:
            lines.append(r.detail)
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--full", action="store_true", help="the sizes of issue 12")
    parser.add_argument("--only", help="comma-separated benchmark names (default: all)")
    parser.add_argument("--output", type=Path, default=OUT, help="markdown file to write")
    parser.add_argument(
        "--settle",
        type=float,
        default=180,
        help="wait at most this many seconds for the 1-minute load average to fall to half "
        "the cores first (a run just before, such as a test suite, still shows in it)",
    )
    args = parser.parse_args()
    chosen = BENCHES
    if args.only:
        wanted = {w.strip() for w in args.only.split(",")}
        chosen = [b for b in BENCHES if b.name in wanted or b.name.split(" ")[0] in wanted]
        unknown = wanted - {b.name for b in chosen} - {b.name.split(" ")[0] for b in chosen}
        if unknown:
            parser.error(f"unknown benchmark(s): {', '.join(sorted(unknown))}")
    waited = settle(args.settle)
    if waited >= 1:
        print(f"waited {waited:.0f} s for the load average to drop", file=sys.stderr)
    started, start_load = datetime.now(UTC), load_average()
    results = []
    for bench in chosen:
        print(f"running {bench.name} ...", file=sys.stderr, flush=True)
        result = run(bench, args.full)
        print(f"  {result.status} ({result.seconds:.0f} s) {result.detail}", file=sys.stderr)
        results.append(result)
    text = report(results, args.full, started, start_load)
    print(text)
    args.output.write_text(text, encoding="utf-8")
    return 0 if all(r.status in ("ok", "skipped") for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
