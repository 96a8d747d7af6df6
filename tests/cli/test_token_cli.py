"""``drossel token create|list|revoke`` against a running ``drossel serve``: a revoked token and
every session made with it are refused by the running web process on the very next request,
and by every web node sharing the database (PostgreSQL) within a second."""

from __future__ import annotations

import secrets
import stat
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from tests.cli.running import browser_login, clean_env, http, run, serve, token_json
from tests.pg import postgres_database


@contextmanager
def state(kind: str) -> Iterator[tuple[str, ...]]:
    """``--db`` arguments for the embedded SQLite default or a fresh PostgreSQL database."""
    if kind == "sqlite":
        yield ()
        return
    with postgres_database(f"drossel_test_{uuid.uuid4().hex[:10]}") as url:
        yield ("--db", url)


@pytest.mark.parametrize("kind", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_revoked_token_and_its_sessions_are_refused_by_a_running_server(
    tmp_path: Path, kind: str
) -> None:
    with state(kind) as db:
        _revocation_reaches_a_running_server(tmp_path, db)


def _revocation_reaches_a_running_server(tmp_path: Path, db: tuple[str, ...]) -> None:
    config = tmp_path / "drossel.toml"
    if db:
        assert run("db", "upgrade", *db, cwd=tmp_path).returncode == 0
    served = serve(tmp_path, *db)
    db = (*db, "--config", str(config))
    try:
        assert run("tenant", "add", "contoso", *db, cwd=tmp_path).returncode == 0
        created = run(
            "token",
            "create",
            "--tenant",
            "contoso",
            "--label",
            "alice",
            *db,
            cwd=tmp_path,
        )
        assert created.returncode == 0, created.stderr
        token = created.stdout.strip()
        assert token.startswith("drs_")
        assert http(served.url("/api/v1/me"), token=token)[0] == 200
        session = browser_login(served, token)
        assert http(served.url("/t/contoso"), cookie=session)[0] == 200

        (row,) = [r for r in token_json(tmp_path, *db) if r["label"] == "alice"]
        assert row["tenant"] == "contoso" and row["revoked"] is None
        assert row["last_used"] is not None  # the web process recorded the use
        revoked = run("token", "revoke", str(row["id"]), *db, cwd=tmp_path)
        assert revoked.returncode == 0, revoked.stderr

        # no cache to wait out: the first request after the command returned is refused
        assert http(served.url("/api/v1/me"), token=token)[0] == 401
        status, headers, _ = http(served.url("/t/contoso"), cookie=session)
        assert status == 303 and headers["location"].startswith("/login")
    finally:
        served.stop()
    (row,) = [r for r in token_json(tmp_path, *db) if r["label"] == "alice"]
    assert row["revoked"] is not None
    again = run("token", "revoke", str(row["id"]), *db, cwd=tmp_path)
    assert again.returncode != 0 and "already revoked" in again.stderr
    unknown = run("token", "revoke", "999", *db, cwd=tmp_path)
    assert unknown.returncode != 0 and "unknown token 999" in unknown.stderr


@pytest.mark.postgres
def test_revocation_reaches_every_node_within_a_second(tmp_path: Path) -> None:
    """Two ``drossel serve`` nodes on one PostgreSQL database with a shared session key (as
    docs/operations.md asks): after ``drossel token revoke`` returns, both nodes refuse the
    token and every session made with it, on either node, within one second."""
    env = clean_env(DROSSEL_SESSION_KEY=secrets.token_hex(32))
    with postgres_database(f"drossel_test_{uuid.uuid4().hex[:10]}") as url:
        db = ("--db", url)
        assert run("db", "upgrade", *db, cwd=tmp_path).returncode == 0
        nodes = []
        try:
            for name in ("node-a", "node-b"):
                (tmp_path / name).mkdir()
                nodes.append(serve(tmp_path / name, *db, env=env))
            assert run("tenant", "add", "contoso", *db, cwd=tmp_path).returncode == 0
            created = run("token", "create", "--tenant", "contoso", "--label", "bob", *db,
                          cwd=tmp_path)  # fmt: skip
            assert created.returncode == 0, created.stderr
            token = created.stdout.strip()
            sessions = [browser_login(node, token) for node in nodes]
            for node in nodes:
                assert http(node.url("/api/v1/me"), token=token)[0] == 200
                for session in sessions:  # the shared key: a session works on either node
                    assert http(node.url("/t/contoso"), cookie=session)[0] == 200

            (row,) = [r for r in token_json(tmp_path, *db) if r["label"] == "bob"]
            revoked = run("token", "revoke", str(row["id"]), *db, cwd=tmp_path)
            assert revoked.returncode == 0, revoked.stderr
            returned = time.monotonic()
            for node in nodes:
                assert http(node.url("/api/v1/me"), token=token)[0] == 401
                for session in sessions:
                    status, headers, _ = http(node.url("/t/contoso"), cookie=session)
                    assert status == 303 and headers["location"].startswith("/login")
            refused_within = time.monotonic() - returned
            print(f"\nrevoked token and 2 sessions refused by 2 nodes in {refused_within:.3f} s")
            assert refused_within < 1.0
        finally:
            for node in nodes:
                node.stop()


def test_token_list_table_and_private_state_files(tmp_path: Path) -> None:
    assert run("token", "create", "--operator", "--label", "ops", cwd=tmp_path).returncode == 0
    listed = run("token", "list", cwd=tmp_path)
    assert listed.returncode == 0
    assert "(operator)" in listed.stdout and "ops" in listed.stdout
    assert "drs_" not in listed.stdout
    for name in ("drossel.db", "drossel.db-wal", "drossel.db-shm"):
        path = tmp_path / name
        if path.exists():
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, name
    assert (tmp_path / "drossel.db").exists()


def test_shared_state_file_is_warned_about(tmp_path: Path) -> None:
    assert run("tenant", "list", cwd=tmp_path).returncode == 0
    (tmp_path / "drossel.db").chmod(0o644)
    result = run("tenant", "list", cwd=tmp_path)
    assert result.returncode == 0
    assert "drossel.db has mode 0644" in result.stderr
