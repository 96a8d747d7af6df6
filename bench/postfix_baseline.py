"""Baseline Postfix throughput without a milter (not a test).

    smtp-source --> private Postfix on 127.0.0.1 --> smtp-sink

Usage (as root, Postfix installed):

    python bench/postfix_baseline.py [--messages 10000] [--sessions 20] [--reuse] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _postfix import run_postfix_throughput, unavailable_reason


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=10000)
    ap.add_argument("--sessions", type=int, default=20)
    ap.add_argument(
        "--reuse", action="store_true", help="send many messages per connection (smtp-source -d)"
    )
    ap.add_argument("--json", action="store_true", help="print the full result as JSON")
    args = ap.parse_args(argv)

    reason = unavailable_reason()
    if reason:
        print(f"cannot run: {reason}", file=sys.stderr)
        return 2
    res = run_postfix_throughput(None, args.messages, args.sessions, reuse_connections=args.reuse)
    if args.json:
        print(json.dumps(res, indent=2))
    else:
        print(
            f"postfix baseline: {res['delivered']}/{res['messages']} messages, "
            f"{res['sessions']} sessions, {res['seconds']:.2f} s -> "
            f"{res['msgs_per_s']:.1f} msgs/s (injection {res['submit_msgs_per_s']:.1f} msgs/s)"
        )
    return 0 if res["complete"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
