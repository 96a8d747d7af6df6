"""Gateway throughput against a Postfix relay (not a test).

    A:  smtp-source (N sessions) --> drossel gateway (1 process)          --> smtp-sink
    A': smtp-source (N sessions) --> drossel gateway (--workers = cores)  --> smtp-sink
    B:  smtp-source (N sessions) --> private Postfix (relay)              --> smtp-sink

Same message (relayed by a current Exchange SE, so every message is accepted), same counts,
same run, one message per client connection.  The gateway answers only after the next hop
accepted (in-line relay, next-hop connections pooled; smtp-sink offers XCLIENT, so the gateway
hands the client over once per pooled connection); Postfix queues first and delivers
afterwards, so B is measured until smtp-sink has the last message too.  Each round runs the
three variants back to back (order rotated per round); the reported ratio is the median of the
per-round ratios, so load from elsewhere on the machine hits both sides of a ratio alike.

Usage (as root, Postfix installed, drossel installed):

    python bench/gateway.py [--messages 10000] [--sessions 20] [--rounds 3] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _postfix import (
    _tool,
    _wait_port,
    exchange_message,
    find_free_port,
    run_postfix_throughput,
    smtp_source_command,
    unavailable_reason,
)


def run_gateway_throughput(
    messages: int, sessions: int, timeout: float | None = None, workers: int = 1
) -> dict[str, Any]:
    smtp_source, smtp_sink = _tool("smtp-source"), _tool("smtp-sink")
    timeout = timeout or max(60.0, messages / 50)
    base = Path(tempfile.mkdtemp(prefix="drossel-bench-gw-"))
    base.chmod(0o755)
    msg_file = base / "message.eml"
    msg_file.write_text(exchange_message())
    sink_port, gw_port = find_free_port(), find_free_port()
    config = base / "drossel.toml"
    config.write_text(
        "[storage]\n"
        f'url = "sqlite:///{base / "drossel.db"}"\n'
        "[gateway]\n"
        f'listen = "127.0.0.1:{gw_port}"\n'
        f'relay = "127.0.0.1:{sink_port}"\n'
        'hostname = "gw.bench.drossel"\n'
        'relay_tls = "none"\n'
        "max_recipients = 10\n"
        # like the Postfix reference (smtpd_peername_lookup = no): no DNS on loopback
        "reverse_lookup = false\n"
    )
    drossel = shutil.which("drossel")
    gw_cmd = [drossel] if drossel else [sys.executable, "-m", "drossel.cli.main"]
    profile = os.environ.get("DROSSEL_BENCH_PROFILE")  # a directory: cProfile the gateway
    if profile and workers == 1:
        prof = Path(profile) / f"gateway-{messages}.prof"
        gw_cmd = [sys.executable, "-m", "cProfile", "-o", str(prof), "-m", "drossel.cli.main"]
    sink_proc = gw_proc = None
    result: dict[str, Any] = {
        "path": "gateway",
        "workers": workers,
        "messages": messages,
        "sessions": sessions,
    }
    try:
        with (base / "smtp-sink.out").open("wb") as out:
            sink_proc = subprocess.Popen(
                [smtp_sink, "-u", "postfix", "-M", str(messages), f"127.0.0.1:{sink_port}", "256"],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        with (base / "gateway.log").open("wb") as log:
            gw_proc = subprocess.Popen(
                [*gw_cmd, "gateway", "--config", str(config), "--workers", str(workers)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        _wait_port(sink_port, 10, sink_proc)
        _wait_port(gw_port, 30, gw_proc)
        cmd = smtp_source_command(smtp_source, f"127.0.0.1:{gw_port}", messages, sessions, msg_file)
        t0 = time.perf_counter()
        source = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        t_submit = time.perf_counter() - t0
        if source.returncode != 0:
            raise RuntimeError(f"smtp-source failed ({source.returncode}): {source.stderr}")
        complete = True
        try:
            sink_proc.wait(max(1.0, timeout - t_submit))
        except subprocess.TimeoutExpired:
            complete = False
        elapsed = time.perf_counter() - t0
        result.update(
            {
                "complete": complete,
                "seconds": round(elapsed, 3),
                "msgs_per_s": round(messages / elapsed, 1) if complete and elapsed else 0.0,
            }
        )
        return result
    finally:
        for proc in (gw_proc, sink_proc):
            if proc is not None and proc.poll() is None:
                proc.terminate()  # SIGTERM: the gateway stops gracefully with a final flush
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)
        result["gateway_exit"] = gw_proc.returncode if gw_proc is not None else None
        shutil.rmtree(base, ignore_errors=True)


def _rate(run: dict[str, Any]) -> float:
    return float(run["msgs_per_s"]) if run["complete"] else 0.0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--messages", type=int, default=10000)
    ap.add_argument("--sessions", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument(
        "--workers", type=int, default=os.cpu_count() or 1, help="for A' (default: the cores)"
    )
    ap.add_argument("--json", action="store_true", help="print the full results as JSON")
    args = ap.parse_args(argv)
    reason = unavailable_reason()
    if reason:
        print(f"cannot run: {reason}", file=sys.stderr)
        return 2
    variants: dict[str, Any] = {
        "gateway": lambda: run_gateway_throughput(args.messages, args.sessions),
        f"gateway x{args.workers}": lambda: run_gateway_throughput(
            args.messages, args.sessions, workers=args.workers
        ),
        "postfix": lambda: run_postfix_throughput(None, args.messages, args.sessions),
    }
    names = list(variants)
    rounds: list[dict[str, Any]] = []
    for r in range(args.rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        runs = {name: variants[name]() for name in order}
        pf = _rate(runs["postfix"])
        ratios = {
            name: round(_rate(runs[name]) / pf, 3) if pf else 0.0
            for name in names
            if name != "postfix"
        }
        rounds.append({"runs": runs, "ratios": ratios})
        if not args.json:
            print(
                f"round {r + 1}: "
                + ", ".join(f"{n} {_rate(runs[n]):.1f} msgs/s" for n in names)
                + " | "
                + ", ".join(f"{n}/postfix {v:.2f}" for n, v in ratios.items()),
                flush=True,
            )
    summary = {
        name: {
            "median_msgs_per_s": round(
                statistics.median(_rate(x["runs"][name]) for x in rounds), 1
            ),
            **(
                {"median_ratio": round(statistics.median(x["ratios"][name] for x in rounds), 3)}
                if name != "postfix"
                else {}
            ),
        }
        for name in names
    }
    complete = all(run["complete"] for x in rounds for run in x["runs"].values())
    if args.json:
        print(json.dumps({"rounds": rounds, "summary": summary, "complete": complete}, indent=2))
    else:
        print(f"{args.messages} messages, {args.sessions} sessions, {args.rounds} rounds (median)")
        for name in names:
            line = f"  {name:<14} {summary[name]['median_msgs_per_s']:8.1f} msgs/s"
            if "median_ratio" in summary[name]:
                line += f"   ratio to postfix {summary[name]['median_ratio']:.2f} (target >= 1.0)"
            print(line)
        if not complete:
            print("  (INCOMPLETE runs counted as 0 msgs/s)")
    return 0 if complete else 1


if __name__ == "__main__":
    raise SystemExit(main())
