"""Benchmark: Postfix with drossel's milter vs. Postfix alone, in the same invocation.

    smtp-source (20 sessions) -> private Postfix [+ drossel milter] -> smtp-sink

Every message carries Exchange ``Received:`` lines (a current Exchange SE build, so all mail is
accepted and both runs deliver the same count). drossel runs as a real ``drossel milter``
process on a throw-away SQLite state; its CPU time is read from /proc after the run.
Prints messages/s of each run, the ratio (target >= 0.90) and the milter's CPU seconds per
message. Not a test: ``python bench/milter.py [--messages 10000] [--sessions 20] [--json]``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _postfix import find_free_port, run_postfix_throughput, unavailable_reason


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks  # utime + stime


def start_milter(port: int, workdir: Path, add_header: bool = True) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DROSSEL_")}
    config = workdir / "drossel.toml"
    config.write_text(f"[milter]\nadd_header = {'true' if add_header else 'false'}\n")
    env["DROSSEL_CONFIG"] = str(config)
    log = (workdir / "milter.log").open("wb")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "drossel.cli.main",
            "milter",
            "--listen",
            f"inet:127.0.0.1:{port}",
            "--db",
            f"sqlite:///{workdir / 'state.db'}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return process
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError("drossel milter did not start; see " + str(workdir / "milter.log"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--json", action="store_true")
    parser.add_argument(
        "--no-header", action="store_true", help="run drossel with [milter] add_header = false"
    )
    args = parser.parse_args()
    reason = unavailable_reason()
    if reason:
        print(f"cannot run: {reason}", file=sys.stderr)
        return 2
    baseline = run_postfix_throughput(None, args.messages, args.sessions)
    with tempfile.TemporaryDirectory(prefix="drossel-bench-") as tmp:
        port = find_free_port()
        milter = start_milter(port, Path(tmp), add_header=not args.no_header)
        cpu_before = _cpu_seconds(milter.pid)
        try:
            with_milter = run_postfix_throughput(
                f"inet:127.0.0.1:{port}",
                args.messages,
                args.sessions,
                milter_default_action="tempfail",
            )
            cpu = _cpu_seconds(milter.pid) - cpu_before
        finally:
            milter.send_signal(signal.SIGTERM)
            milter.wait(timeout=30)
    result = {
        "messages": args.messages,
        "sessions": args.sessions,
        "add_header": not args.no_header,
        "postfix_alone_msgs_per_s": round(baseline["msgs_per_s"], 1),
        "postfix_with_drossel_msgs_per_s": round(with_milter["msgs_per_s"], 1),
        "ratio": round(with_milter["msgs_per_s"] / baseline["msgs_per_s"], 3),
        "milter_cpu_ms_per_message": round(1000 * cpu / args.messages, 3),
        "complete": bool(baseline["complete"] and with_milter["complete"]),
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for key, value in result.items():
            print(f"{key:32} {value}")
    return 0 if result["complete"] else 1


if __name__ == "__main__":
    sys.exit(main())
