"""A separate "node" process for the concurrency tests: N threads hitting one Store.

    worker.py pause URL START_AT FIRST COUNT   add COUNT 5-day pauses (budget 90)
    worker.py claim URL START_AT SEED COUNT    claim the same 25 notification keys

Threads wait until the wall-clock time START_AT so all processes fire together; prints JSON.
"""

from __future__ import annotations

import json
import random
import sys
import threading
import time
from datetime import UTC, datetime, timedelta

from drossel.app.errors import AppError
from drossel.app.services import Services
from drossel.core.policy import Policy
from drossel.storage.store import Store

T0 = datetime(2026, 3, 2, 12, tzinfo=UTC)


def main() -> None:
    kind, url, start_at, first, count = sys.argv[1:6]
    store = Store(url)
    store.engine.pool.dispose()
    lock = threading.Lock()
    granted: list[int] = []
    claimed: list[str] = []
    barrier = threading.Barrier(int(count))

    def pause(i: int) -> None:
        barrier.wait(30)
        time.sleep(max(0.0, float(start_at) - time.time()))
        try:
            Services(store, Policy()).add_pause(
                "contoso", T0.date() + timedelta(days=5 * i), 5, [], f"w{i}", T0
            )
        except AppError as exc:
            assert "budget" in str(exc), exc
            return
        with lock:
            granted.append(i)

    def claim(seed: int) -> None:
        keys = [f"stage:contoso:ex{i:02}:{i % 3}" for i in range(25)]
        random.Random(seed).shuffle(keys)
        barrier.wait(30)
        time.sleep(max(0.0, float(start_at) - time.time()))
        for key in keys:
            if store.claim_notification(key, "contoso", None, "stage", "body", T0):
                with lock:
                    claimed.append(key)

    if kind == "pause":
        targets = [
            threading.Thread(target=pause, args=(int(first) + i,)) for i in range(int(count))
        ]
    else:
        targets = [
            threading.Thread(target=claim, args=(int(first) * 100 + i,)) for i in range(int(count))
        ]
    for th in targets:
        th.start()
    for th in targets:
        th.join(60)
    store.dispose()
    print(json.dumps({"granted": len(granted), "claimed": claimed}))


if __name__ == "__main__":
    main()
