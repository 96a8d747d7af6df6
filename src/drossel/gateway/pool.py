"""Next-hop connections kept open between client sessions.

Connecting, the greeting and EHLO (and STARTTLS) cost more next-hop round trips than the mail
transaction itself; a client session that ends hands its idle next-hop connection back here and
the next client session takes it, as Postfix's own connection cache does.  Only a connection
with no open transaction comes back (a dropped client mid-transaction closes it, so nothing
half-sent is ever delivered); it is reused only while it is still connected, younger than
``idle_seconds`` since its last use and below ``max_uses`` transactions.  XCLIENT is sent again
only on a connection not yet handed over: one that speaks for another client is not reused
for this one (Postfix takes XCLIENT only from the gateway's own address, not twice).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from drossel.gateway.relay import Identity, NextHop


class NextHopPool:
    def __init__(
        self,
        factory: Callable[[], NextHop],
        *,
        max_idle: int = 32,
        idle_seconds: float = 5.0,
        max_uses: int = 100,
    ) -> None:
        self.factory = factory
        self.max_idle = max_idle
        self.idle_seconds = idle_seconds
        self.max_uses = max_uses
        self._idle: list[tuple[float, NextHop]] = []
        self.reused = 0
        self.created = 0

    @property
    def idle(self) -> int:
        return len(self._idle)

    def acquire(self, identity: Identity | None = None) -> NextHop:
        """The most recently used healthy idle connection that already speaks for
        ``identity`` (or was never handed over to any client), else a new one."""
        now = time.monotonic()
        fresh: list[tuple[float, NextHop]] = []
        for entry in self._idle:
            since, hop = entry
            if hop.connected and now - since < self.idle_seconds:
                fresh.append(entry)
            else:
                hop.close()
        self._idle = fresh
        for preferred in (identity, None):
            for index in range(len(fresh) - 1, -1, -1):
                hop = fresh[index][1]
                if hop.identity == preferred:
                    del fresh[index]
                    self.reused += 1
                    return hop
        self.created += 1
        return self.factory()

    def release(self, hop: NextHop) -> None:
        """Take ``hop`` back for the next client session, or close it."""
        keep = (
            hop.connected
            and not hop.in_transaction
            and hop.uses < self.max_uses
            and len(self._idle) < self.max_idle
        )
        if keep:
            self._idle.append((time.monotonic(), hop))
        else:
            hop.close()

    async def close(self) -> None:
        """QUIT every idle connection (the gateway stops)."""
        idle, self._idle = self._idle, []
        for _, hop in idle:
            await hop.quit()
