"""Issue 6.4: the database goes away under a running ``drossel milter``; mail keeps flowing
from memory, events are queued (spilled to the journal beyond the memory bound), a restart
during the outage keeps them, and after recovery the stored counters equal what was sent.

Runs its own PostgreSQL instance (initdb into a temporary directory) so the machine's shared
cluster is never stopped.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from pg_nodes import T0, Node, db_upgrade, free_port, wait_until, write_config

from drossel.core.decision import ServerRecord
from drossel.storage.store import Store

pytestmark = pytest.mark.postgres

PG_BIN = Path("/usr/lib/postgresql/15/bin")
OLD_BUILD = "15.1.2507.6"


class PrivatePostgres:
    def __init__(self) -> None:
        if not (PG_BIN / "initdb").exists():
            pytest.skip("PostgreSQL 15 binaries not installed")
        try:
            self.user = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("no postgres system user")
        self.base = Path(tempfile.mkdtemp(prefix="drossel-pg-"))
        os.chmod(self.base, 0o755)
        os.chown(self.base, self.user.pw_uid, self.user.pw_gid)
        self.data = self.base / "data"
        self.port = free_port()
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"
        self._as_postgres(
            str(PG_BIN / "initdb"),
            "-D",
            str(self.data),
            "-A",
            "trust",
            "-U",
            "postgres",
            "--no-sync",
            "-E",
            "UTF8",
        )

    def _as_postgres(self, *args: str) -> None:
        result = subprocess.run(
            ["runuser", "-u", "postgres", "--", *args], capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 0, result.stderr + result.stdout

    def start(self) -> None:
        self._as_postgres(
            str(PG_BIN / "pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.base / "log"),
            "-w",
            "-t",
            "30",
            "-o",
            f"-p {self.port} -k {self.base} -c listen_addresses=127.0.0.1 -c fsync=off",
            "start",
        )

    def stop(self) -> None:
        self._as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")

    def destroy(self) -> None:
        subprocess.run(
            [
                "runuser",
                "-u",
                "postgres",
                "--",
                str(PG_BIN / "pg_ctl"),
                "-D",
                str(self.data),
                "-m",
                "immediate",
                "stop",
            ],
            capture_output=True,
            timeout=30,
        )
        shutil.rmtree(self.base, ignore_errors=True)


@pytest.fixture
def private_pg() -> Iterator[PrivatePostgres]:
    pg = PrivatePostgres()
    pg.start()
    try:
        yield pg
    finally:
        pg.destroy()


def test_outage_keeps_mail_flowing_and_loses_no_event(
    private_pg: PrivatePostgres, node_factory: Callable[..., Node], tmp_path: Path
) -> None:
    db_upgrade(private_pg.url)
    journal = tmp_path / "journal.jsonl"
    config = write_config(
        tmp_path / "node.toml",
        flush_seconds=0.2,
        refresh_seconds=0.5,
        journal=str(journal),
        journal_memory_events=3,
    )
    node = node_factory(private_pg.url, "a", now_env=T0.isoformat(), config=config).start()
    sent: dict[str, int] = {}

    def send(server: str, n: int, verdict: str = "accept") -> None:
        for _ in range(n):
            assert node.send(server, OLD_BUILD) == verdict
        sent[server] = sent.get(server, 0) + n

    store = Store(private_pg.url)
    store.save_server(blocked_record(), "Received: ...", T0)  # stage 8 at T0: blocked
    store.dispose()
    send("known1.contoso.example", 5)
    send("known2.contoso.example", 4)
    send("blocked.contoso.example", 2, "reject")
    wait_until(lambda: not node_has_unflushed(private_pg.url, sent), timeout=10)

    private_pg.stop()
    send("known1.contoso.example", 6)  # from memory
    send("known2.contoso.example", 2)
    send("new1.contoso.example", 3)  # first detected during the outage: accepted
    send("new2.contoso.example", 2)
    send("blocked.contoso.example", 2, "reject")  # still blocked: decided from the cache
    # more than journal_memory_events queued: spilled to the journal while running
    wait_until(journal.exists, timeout=10)
    send("known2.contoso.example", 1)  # stays in memory (below the bound) until shutdown

    # restart during the outage: the queue goes to the journal, the node starts without a DB
    assert node.stop() == 0
    assert journal.exists() and journal.with_name(journal.name + ".state").exists()
    node.start()
    send("known1.contoso.example", 3)
    send("new1.contoso.example", 2)
    send("new3.contoso.example", 1)  # first detected after the restart
    # not in the fresh cache and the database is away: fail_mode=cache accepts
    send("blocked.contoso.example", 1, "accept")

    private_pg.start()
    wait_until(lambda: not node_has_unflushed(private_pg.url, sent), timeout=20)
    wait_until(lambda: not journal.exists(), timeout=5)

    store = Store(private_pg.url)
    for server, n in sent.items():
        stored = store.get_server("default", server)
        assert stored is not None, server
        expected = {"accept": 1, "block": 4} if server.startswith("blocked") else {"accept": n}
        assert store.total_counts(stored.id) == expected, server
        assert [b for b, _, _ in store.build_history(stored.id)] == [OLD_BUILD]
    blocked = store.get_server("default", "blocked.contoso.example")
    assert blocked is not None and blocked.record.first_detected == blocked_record().first_detected
    new1 = store.get_server("default", "new1.contoso.example")
    known1 = store.get_server("default", "known1.contoso.example")
    assert new1 is not None and known1 is not None
    assert known1.record.first_detected < new1.record.first_detected
    assert new1.record.last_seen > new1.record.first_detected  # last-seen from after restart
    store.dispose()
    assert node.stop() == 0
    assert "unreachable" in node.output()


def blocked_record() -> ServerRecord:
    first = T0 - timedelta(days=95)
    return ServerRecord(
        tenant="default",
        server="blocked.contoso.example",
        first_detected=first,
        last_seen=first,
        build=OLD_BUILD,
        product="Exchange 2016",
        status="unsupported",
        clock_start=first,
    )


def node_has_unflushed(url: str, sent: dict[str, int]) -> bool:
    """True while the stored counters differ from what was sent."""
    try:
        store = Store(url)
        try:
            for server, n in sent.items():
                stored = store.get_server("default", server)
                if stored is None or sum(store.total_counts(stored.id).values()) != n:
                    return True
            return False
        finally:
            store.dispose()
    except Exception:
        return True
