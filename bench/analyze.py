"""``drossel analyze`` benchmark (not a test): messages per second and peak memory on a generated
mbox of N messages, against Python's own ``mailbox.mbox`` reading the same file's headers.

The archive is realistic in shape: 40 servers (Exchange 2013 to SE, a few build changes), a
quarter of the mail from senders without Exchange, each message with 4–6 ``Received:`` lines,
the usual headers and a 1–3 KB body.  Each measurement runs in its own process, timed from the
outside, with its peak RSS (``ru_maxrss``) taken from the kernel; a smaller archive is measured
too, so that "constant memory" shows as the same RSS at N/10 and N.

The reference is what an operator would write with the standard library: iterate
``mailbox.mbox`` and parse each message's headers with ``email`` (no detection at all); the
figure reported is drossel's time as a ratio of that.

    python bench/analyze.py                    # 100,000 messages
    python bench/analyze.py --messages 20000   # scale down
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

BUILDS = (
    "15.0.1497.2",
    "15.1.2375.7",
    "15.1.2507.6",
    "15.2.1544.4",
    "15.2.1748.39",
    "15.2.2562.53",
)
START = datetime(2026, 6, 1, tzinfo=UTC)

REFERENCE = """
import mailbox, sys
n = 0
for message in mailbox.mbox(sys.argv[1], factory=None, create=False):
    n += 1
print(n)
"""


def write_mbox(path: Path, messages: int, seed: int = 7) -> int:
    """Write ``messages`` messages; returns the file size."""
    rng = random.Random(seed)
    servers = [(f"ex{i:02d}.org{i % 13}.example", rng.choice(BUILDS)) for i in range(40)]
    body = "".join(f"line {i} of a quarterly report, nothing to see here.\n" for i in range(40))
    with path.open("w", encoding="ascii", newline="\n") as out:
        for n in range(messages):
            when = START + timedelta(seconds=n * 90 + rng.randrange(60))
            stamp = format_datetime(when)
            received = [
                f"Received: from mx-in.operator.example by mailbox.operator.example\n"
                f" with ESMTPS id {n:08x}; {stamp}",
                f"Received: from edge.operator.example ([192.0.2.{n % 250}]) by\n"
                f" mx-in.operator.example with ESMTPS; {stamp}",
            ]
            if rng.random() < 0.75:
                server, build = servers[rng.randrange(len(servers))]
                received += [
                    f"Received: from MBX01.local (10.0.0.5) by {server} (10.0.0.6) with "
                    f"Microsoft SMTP\n Server (version=TLS1_2, cipher=TLS_ECDHE_RSA_WITH_AES_256"
                    f"_GCM_SHA384) id {build}; {stamp}",
                    f"Received: from MBX01.local ([fe80::5]) by MBX01.local ([fe80::5%12]) with\n"
                    f" mapi id {build}; {stamp}",
                ]
            else:
                received.append(
                    f"Received: from relay{n % 7}.mailer.example by edge.operator.example "
                    f"with ESMTP; {stamp}"
                )
            out.write(f"From sender@example.org {when:%a %b %d %H:%M:%S %Y}\n")
            out.write("\n".join(received) + "\n")
            out.write(
                f"From: Sender {n} <s{n}@example.org>\nTo: <someone@operator.example>\n"
                f"Subject: report {n}\nDate: {stamp}\nMessage-ID: <{n}@example.org>\n"
                "MIME-Version: 1.0\nContent-Type: text/plain; charset=us-ascii\n\n"
            )
            out.write(body[: 1000 + (n % 3) * 700] + "\n")
    return path.stat().st_size


def measure(command: list[str]) -> tuple[float, int, str]:
    """Wall seconds, peak RSS (KiB) of that child alone (``wait4``), and its stdout."""
    with tempfile.TemporaryFile() as out:
        started = time.perf_counter()
        child = subprocess.Popen(command, stdout=out)
        _, status, usage = os.wait4(child.pid, 0)
        seconds = time.perf_counter() - started
        child.returncode = os.waitstatus_to_exitcode(status)
        if child.returncode != 0:
            raise RuntimeError(f"{command} exited {child.returncode}")
        out.seek(0)
        return seconds, usage.ru_maxrss, out.read().decode()


def run(messages: int) -> dict[str, object]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DROSSEL_")}
    os.environ.clear()
    os.environ.update(env)
    analyze = [
        sys.executable,
        "-m",
        "drossel",
        "analyze",
        "--json",
        "--quiet",
        "--at",
        "2026-10-01",
    ]
    results: dict[str, object] = {"messages": messages}
    with tempfile.TemporaryDirectory(prefix="drossel-bench-analyze-") as tmp:
        small_path, large_path = Path(tmp) / "small.mbox", Path(tmp) / "large.mbox"
        small = max(messages // 10, 1)
        write_mbox(small_path, small)
        size = write_mbox(large_path, messages)
        results["mbox_mb"] = round(size / 1e6, 1)
        s_small, rss_small, _ = measure([*analyze, str(small_path)])
        s_large, rss_large, out = measure([*analyze, str(large_path)])
        report = json.loads(out)
        assert report["messages"] == messages, report["messages"]
        s_ref, rss_ref, ref_out = measure([sys.executable, "-c", REFERENCE, str(large_path)])
        assert int(ref_out) == messages
    results.update(
        {
            "servers_found": len(report["servers"]),
            "analyze_seconds": round(s_large, 1),
            "messages_per_second": round(messages / s_large),
            "analyze_rss_mb_small": round(rss_small / 1024, 1),
            "analyze_rss_mb": round(rss_large / 1024, 1),
            "reference_mailbox_seconds": round(s_ref, 1),
            "reference_rss_mb": round(rss_ref / 1024, 1),
            "ratio_to_reference": round(s_large / s_ref, 2),
            f"seconds_for_{small}": round(s_small, 1),
        }
    )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=100_000)
    args = parser.parse_args()
    print(json.dumps(run(args.messages), indent=2))


if __name__ == "__main__":
    main()
