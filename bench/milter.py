"""Benchmark: Postfix alone, Postfix + a no-op C milter, Postfix + drossel, in one invocation.

    smtp-source (20 sessions, 1 message per connection) -> private Postfix [+ milter] -> smtp-sink

Every variant gets the same load: the same message (two Exchange ``Received:`` lines of a
current Exchange SE build, so drossel detects, grades and accepts every message), the same
session count and message count.  Variants run interleaved in each round, forward in odd
rounds and backward in even ones (A B C, C B A, ...: see :func:`round_order`), each drossel
variant beside its anchor, so that a noisy neighbour on the shared machine hits both alike.
Each variant's median rate is reported; a ratio such as drossel/no-op is the median of the
rounds' own ratios (the two ran one after the other), with the spread of the rounds and the
ratio of the medians.
Each run also reads the whole machine's CPU time (``/proc/stat``) while the messages go
through: ``cpu-ratio drossel/noop`` is the no-op's CPU per message over drossel's (median of
the rounds), the throughput ratio a CPU-bound machine would show, without its scheduling
noise.

Variants (``--variants`` picks some):

* ``postfix``: no milter.
* ``noop``: ``bench/noop_milter.c``, built here with gcc against libmilter (Debian
  ``libmilter-dev``): negotiates every step away and accepts at end of headers.  The cost of
  *having* a milter at all.  On ``inet:`` it runs with ``bench/quickack_shim.c`` preloaded,
  which acknowledges each read at once as drossel's milter does: a plain libmilter program
  leaves the ACK to the kernel's 40 ms delayed-ACK timer, and Postfix's next packet waits
  behind Nagle's algorithm for it (about 44 ms per message, 22 messages/s on one session),
  which made the plain no-op a slow anchor rather than the limit.
* ``noop-unix``: the same no-op on a ``unix:`` socket (no Nagle, no delayed ACKs).
* ``noop-headers``: the same no-op on ``inet:``, but taking the headers (without a reply to
  each) instead of negotiating them away, as any filter that reads ``Received:`` lines must:
  Postfix then sends every header of every message.  ``drossel/noop-headers`` is drossel's
  own cost above reading headers at all.
* ``drossel``: ``drossel milter`` with the defaults (``add_header = true``,
  ``event_loop = auto``: uvloop if installed), on
  ``inet:127.0.0.1``.
* ``drossel-asyncio``: the defaults, but on asyncio's own event loop.
* ``drossel-noheader``: ``add_header = false`` (decided at end of headers, no end-of-message
  round trip).
* ``drossel-unix``: the defaults on a ``unix:`` socket.
* ``drossel-workers``: the defaults with ``--workers N`` (N = number of cores).

drossel runs as real processes on throw-away SQLite state; their CPU time (user + system,
workers included) is read from /proc and printed per message, with the user-space part apart
(the no-op's is almost all the kernel's, drossel's the interpreter's).  Not a test::

    python bench/milter.py [--messages 2000] [--rounds 3] [--variants postfix,noop,drossel]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _postfix import find_free_port, run_postfix_throughput, unavailable_reason

HERE = Path(__file__).resolve().parent
#: in the order a round runs them: each drossel variant beside the anchor it is compared with
#: (``drossel`` between ``noop`` and ``noop-headers``), since neighbours run seconds apart
ALL_VARIANTS = (
    "postfix",
    "noop",
    "drossel",
    "noop-headers",
    "drossel-noheader",
    "drossel-asyncio",
    "drossel-workers",
    "noop-unix",
    "drossel-unix",
)
DEFAULT_VARIANTS = ALL_VARIANTS


def _cpu_seconds(pid: int) -> tuple[float, float]:
    """User and system CPU of ``pid`` and of its live children (the workers)."""
    ticks = os.sysconf("SC_CLK_TCK")
    user = system = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(stat.parent.name) == pid or int(fields[1]) == pid:
            user += int(fields[11]) / ticks
            system += int(fields[12]) / ticks
    return user, system


def _wait_listening(address: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"milter exited ({process.returncode}); see {log}")
        try:
            if address.startswith("unix:"):
                with socket.socket(socket.AF_UNIX) as s:
                    s.connect(address[5:])
            else:
                port = int(address.rsplit(":", 1)[1])
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"milter not listening on {address}; see {log}")


@dataclass
class Milter:
    """A milter process serving one variant for the whole invocation."""

    name: str
    address: str  # Postfix smtpd_milters notation
    process: subprocess.Popen[bytes]
    runs: list[float] = field(default_factory=list)
    cpu_ms: list[float] = field(default_factory=list)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


def build_noop(workdir: Path) -> Path:
    """Compile bench/noop_milter.c (gcc + libmilter-dev) and, beside it, the
    bench/quickack_shim.c library its TCP variant runs with (see :func:`start_noop`)."""
    gcc = shutil.which("gcc")
    if not gcc or not Path("/usr/include/libmilter/mfapi.h").exists():
        raise RuntimeError("needs gcc and libmilter-dev (apt-get install gcc libmilter-dev)")
    binary = workdir / "noop_milter"
    subprocess.run(
        [gcc, "-O2", "-o", str(binary), str(HERE / "noop_milter.c"), "-lmilter", "-lpthread"],
        check=True,
    )
    subprocess.run(
        [gcc, "-O2", "-shared", "-fPIC", "-o", str(workdir / "quickack_shim.so"),
         str(HERE / "quickack_shim.c"), "-ldl"],
        check=True,
    )  # fmt: skip
    return binary


def start_noop(binary: Path, workdir: Path, unix: bool = False, headers: bool = False) -> Milter:
    name = "noop-unix" if unix else "noop-headers" if headers else "noop"
    log = workdir / f"{name}.log"
    env = dict(os.environ)
    if unix:
        path = workdir / f"{name}.sock"
        listen, address = f"unix:{path}", f"unix:{path}"
    else:
        port = find_free_port()
        listen, address = f"inet:{port}@127.0.0.1", f"inet:127.0.0.1:{port}"
        # Acknowledge each read at once, as drossel does: without it Postfix's next packet
        # waits for the 40 ms delayed-ACK timer (bench/quickack_shim.c says why).
        env["LD_PRELOAD"] = str(binary.parent / "quickack_shim.so")
    process = subprocess.Popen(
        [str(binary), listen, *(["headers"] if headers else [])],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        env=env,
        umask=0o000,  # its socket must be writable for Postfix's smtpd (user postfix)
    )
    _wait_listening(address, process, log)
    return Milter(name, address, process)


def start_drossel(
    name: str,
    workdir: Path,
    *,
    add_header: bool = True,
    unix: bool = False,
    workers: int = 1,
    event_loop: str = "auto",
    src: str | None = None,
    core: int | None = None,
) -> Milter:
    """``src``: import drossel from this source directory (``bench/milter_replay.py`` compares
    two); ``core``: pin the milter to this CPU."""
    home = workdir / name
    home.mkdir()
    home.chmod(0o755)
    config = home / "drossel.toml"
    config.write_text(
        "[milter]\n"
        f"add_header = {str(add_header).lower()}\n"
        f'event_loop = "{event_loop}"\n'
        f'[storage]\njournal = "{home / "journal.jsonl"}"\n'
    )
    address = f"unix:{home / 'milter.sock'}" if unix else f"inet:127.0.0.1:{find_free_port()}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("DROSSEL_")}
    env["DROSSEL_CONFIG"] = str(config)
    if src:
        env["PYTHONPATH"] = str(Path(src).resolve())
    log = home / "milter.log"
    profile = os.environ.get("DROSSEL_BENCH_PROFILE")  # a directory: cProfile each variant
    wrapper = ["-m", "cProfile", "-o", str(Path(profile) / f"{name}.prof")] if profile else []
    command = [
        sys.executable, *wrapper, "-m", "drossel.cli.main", "milter", "--listen", address,
        "--db", f"sqlite:///{home / 'state.db'}",
    ]  # fmt: skip
    if workers > 1:
        command += ["--workers", str(workers)]
    pin = (lambda: os.sched_setaffinity(0, {core})) if core is not None else None
    process = subprocess.Popen(
        command, stdout=log.open("wb"), stderr=subprocess.STDOUT, env=env, cwd=home,
        preexec_fn=pin,
    )  # fmt: skip
    _wait_listening(address, process, log)
    return Milter(name, address, process)


def start_variant(name: str, workdir: Path, noop_binary: Callable[[], Path]) -> Milter | None:
    if name == "postfix":
        return None
    if name == "noop":
        return start_noop(noop_binary(), workdir)
    if name == "noop-unix":
        return start_noop(noop_binary(), workdir, unix=True)
    if name == "noop-headers":
        return start_noop(noop_binary(), workdir, headers=True)
    if name == "drossel":
        return start_drossel(name, workdir)
    if name == "drossel-asyncio":
        return start_drossel(name, workdir, event_loop="asyncio")
    if name == "drossel-noheader":
        return start_drossel(name, workdir, add_header=False)
    if name == "drossel-unix":
        return start_drossel(name, workdir, unix=True)
    if name == "drossel-workers":
        return start_drossel(name, workdir, workers=os.cpu_count() or 1)
    raise ValueError(f"unknown variant {name!r}")


def run_once(
    milter: Milter | None, messages: int, sessions: int
) -> tuple[float, tuple[float, float] | None, float]:
    """One throughput run; (messages/s, milter (user, system) CPU ms per message, the whole
    machine's CPU ms per message)."""
    cpu_before = _cpu_seconds(milter.process.pid) if milter else (0.0, 0.0)
    result = run_postfix_throughput(
        milter.address if milter else None,
        messages,
        sessions,
        milter_default_action="tempfail",  # a failing milter shows up as missing mail
    )
    if not result["complete"]:
        raise RuntimeError(f"incomplete run ({milter.name if milter else 'postfix'}): {result}")
    cpu: tuple[float, float] | None = None
    if milter:
        user, system = _cpu_seconds(milter.process.pid)
        cpu = (
            1000 * (user - cpu_before[0]) / messages,
            1000 * (system - cpu_before[1]) / messages,
        )
    return float(result["msgs_per_s"]), cpu, float(result["machine_cpu_ms_per_msg"])


def round_order(names: Sequence[str], round_no: int) -> list[str]:
    """The variants in the order round ``round_no`` (from 1) runs them: forward in odd
    rounds, backward in even ones.  Neighbours stay neighbours in every round, and of each
    pair the one that ran second runs first in the next round (A B, B A: a machine that
    speeds up or slows down over two rounds favours neither)."""
    return list(names) if round_no % 2 else list(reversed(names))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=200, help="messages per milter first")
    parser.add_argument("--variants", default=",".join(DEFAULT_VARIANTS))
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    reason = unavailable_reason()
    if reason:
        print(f"cannot run: {reason}", file=sys.stderr)
        return 2
    names = [v.strip() for v in args.variants.split(",") if v.strip()]
    for name in names:
        if name not in ALL_VARIANTS:
            parser.error(f"unknown variant {name!r}; known: {', '.join(ALL_VARIANTS)}")

    workdir = Path(tempfile.mkdtemp(prefix="drossel-bench-milter-"))
    workdir.chmod(0o755)
    built: list[Path] = []

    def noop_binary() -> Path:
        if not built:
            built.append(build_noop(workdir))
        return built[0]

    milters: dict[str, Milter | None] = {}
    rates: dict[str, list[float]] = {name: [] for name in names}
    cpu: dict[str, list[float]] = {name: [] for name in names}
    cpu_user: dict[str, list[float]] = {name: [] for name in names}
    machine: dict[str, list[float]] = {name: [] for name in names}
    try:
        for name in names:
            milters[name] = start_variant(name, workdir, noop_binary)
            if milters[name] is not None and args.warmup:
                run_once(milters[name], args.warmup, args.sessions)
        for round_no in range(1, args.rounds + 1):
            for name in round_order(names, round_no):
                rate, ms, machine_ms = run_once(milters[name], args.messages, args.sessions)
                rates[name].append(rate)
                machine[name].append(machine_ms)
                extra = f", machine CPU {machine_ms:.3f} ms/msg"
                if ms is not None:
                    cpu[name].append(ms[0] + ms[1])
                    cpu_user[name].append(ms[0])
                    extra += f", milter CPU {ms[0] + ms[1]:.3f} ms/msg (user {ms[0]:.3f})"
                if not args.json:
                    print(f"round {round_no} {name:18} {rate:8.1f} msgs/s{extra}", flush=True)
    finally:
        for m in milters.values():
            if m is not None:
                m.stop()
        shutil.rmtree(workdir, ignore_errors=True)

    median = {name: statistics.median(values) for name, values in rates.items()}
    result: dict[str, object] = {
        "messages": args.messages,
        "sessions": args.sessions,
        "rounds": args.rounds,
        "cores": os.cpu_count(),
        "msgs_per_s": {name: rates[name] for name in names},
        "median_msgs_per_s": {name: round(v, 1) for name, v in median.items()},
        "median_milter_cpu_ms_per_message": {
            name: round(statistics.median(v), 3) for name, v in cpu.items() if v
        },
        "median_milter_user_cpu_ms_per_message": {
            name: round(statistics.median(v), 3) for name, v in cpu_user.items() if v
        },
    }
    pairs: list[tuple[str, str]] = []
    for name in names:
        if not name.startswith("drossel"):
            continue
        pairs += [(name, "postfix"), (name, "noop")]
        if name == "drossel-unix":
            pairs.append((name, "noop-unix"))
        if name in ("drossel", "drossel-noheader"):
            pairs.append((name, "noop-headers"))
    pairs += [(anchor, "postfix") for anchor in ("noop", "noop-unix", "noop-headers")]
    pairs = [(a, b) for a, b in pairs if a in median and b in median]
    # The headline: the median of the rounds' own ratios.  Both variants of a round ran
    # minutes apart at most, so a machine that is slower for a while slows both; the ratio of
    # the two medians (also given) can pair a fast round of one with a slow round of the other.
    round_ratios = {
        f"{a}/{b}": [x / y for x, y in zip(rates[a], rates[b], strict=True)] for a, b in pairs
    }
    ratios = {key: round(statistics.median(values), 3) for key, values in round_ratios.items()}
    result["ratios"] = ratios
    # The same comparison by cost: the whole machine's CPU per message with the anchor over
    # that with the variant.  Both cores are busy throughout, so this is what the throughput
    # ratio would be without the scheduling noise of a shared machine.
    cpu_round_ratios = {
        f"{a}/{b}": [y / x for x, y in zip(machine[a], machine[b], strict=True)] for a, b in pairs
    }
    cpu_ratios = {k: round(statistics.median(v), 3) for k, v in cpu_round_ratios.items()}
    result["median_machine_cpu_ms_per_message"] = {
        name: round(statistics.median(v), 3) for name, v in machine.items()
    }
    result["cpu_ratios"] = cpu_ratios
    result["round_ratios"] = {k: [round(v, 3) for v in vs] for k, vs in round_ratios.items()}
    result["ratios_of_medians"] = {f"{a}/{b}": round(median[a] / median[b], 3) for a, b in pairs}
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print()
        for name in names:
            line = f"median {name:18} {median[name]:8.1f} msgs/s"
            line += f", machine CPU {statistics.median(machine[name]):.3f} ms/msg"
            if cpu[name]:
                line += f", milter CPU {statistics.median(cpu[name]):.3f} ms/msg"
                line += f" (user {statistics.median(cpu_user[name]):.3f})"
            print(line)
        for key, value in ratios.items():
            spread = round_ratios[key]
            print(
                f"ratio  {key:26} {value:.3f}  (rounds {min(spread):.3f}-{max(spread):.3f}; "
                f"ratio of the medians {median[key.split('/')[0]] / median[key.split('/')[1]]:.3f})"
            )
        for key, value in cpu_ratios.items():
            spread = cpu_round_ratios[key]
            print(f"cpu-ratio {key:23} {value:.3f}  (rounds {min(spread):.3f}-{max(spread):.3f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
