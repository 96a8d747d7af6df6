"""Database passwords never appear in what drossel prints or logs: ``drossel db upgrade`` and
``drossel serve`` with a real PostgreSQL URL carrying a password, once with credentials the
server refuses and once with working ones."""

from __future__ import annotations

import logging
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from tests.cli.running import clean_env, run, serve
from tests.pg import ADMIN_URL, _connect_admin, ensure_running

from drossel.redact import RedactingFilter, display_url, redact

PASSWORD = "Pw-" + uuid.uuid4().hex[:16]


def _url(user: str, database: str, password: str = PASSWORD) -> str:
    host = ADMIN_URL.split("@", 1)[1].rsplit("/", 1)[0]
    return f"postgresql+psycopg://{user}:{password}@{host}/{database}"


@contextmanager
def role_with_password() -> Iterator[str]:
    """A login role with a password owning a fresh database; yields its URL."""
    ensure_running()
    name = f"drossel_pw_{uuid.uuid4().hex[:8]}"
    with _connect_admin() as conn:
        conn.execute(f"CREATE ROLE {name} LOGIN PASSWORD '{PASSWORD}'")
        conn.execute(f'CREATE DATABASE "{name}" OWNER {name}')
    try:
        yield _url(name, name)
    finally:
        with _connect_admin() as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                (name,),
            )
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
            conn.execute(f"DROP ROLE IF EXISTS {name}")


def refused_url() -> str:
    ensure_running()
    return _url(f"drossel_nobody_{uuid.uuid4().hex[:6]}", "postgres")


def test_passwords_are_masked_in_urls_messages_and_log_records() -> None:
    url = "postgresql+psycopg://drossel:p%40ss%2Fw0rd!@db.example:5432/drossel"
    assert display_url(url) == "postgresql+psycopg://drossel:***@db.example:5432/drossel"
    assert "p@ss/w0rd!" not in redact("FATAL: password p@ss/w0rd! rejected for " + url)
    assert "p%40ss%2Fw0rd" not in redact(url)
    record = logging.LogRecord("drossel", logging.WARNING, __file__, 1, "url=%s", (url,), None)
    try:
        raise RuntimeError("cannot parse " + url)
    except RuntimeError:
        record.exc_info = sys.exc_info()
    assert RedactingFilter().filter(record)
    text = logging.Formatter().format(record)
    assert "cannot parse" in text and "RuntimeError" in text
    assert "p%40ss" not in text and "p@ss/w0rd!" not in text


@pytest.mark.postgres
def test_db_upgrade_refused_does_not_print_the_password(tmp_path: Path) -> None:
    result = run("db", "upgrade", "--db", refused_url(), cwd=tmp_path)
    assert result.returncode != 0
    assert "drossel: error" in result.stderr
    assert PASSWORD not in result.stdout + result.stderr
    broken = _url("someone", "x").replace(":5432", ":notaport")
    result = run("db", "upgrade", "--db", broken, cwd=tmp_path)
    assert result.returncode != 0
    assert PASSWORD not in result.stdout + result.stderr


@pytest.mark.postgres
def test_db_upgrade_working_shows_the_url_masked(tmp_path: Path) -> None:
    with role_with_password() as url:
        result = run("db", "upgrade", cwd=tmp_path, env=clean_env(DROSSEL_DB=url))
    assert result.returncode == 0, result.stderr
    assert "database schema is up to date" in result.stdout
    assert ":***@" in result.stdout
    assert PASSWORD not in result.stdout + result.stderr


@pytest.mark.postgres
def test_serve_never_prints_the_password(tmp_path: Path) -> None:
    with role_with_password() as url:
        assert run("db", "upgrade", "--db", url, cwd=tmp_path).returncode == 0
        served = serve(tmp_path, "--db", url)
        output = served.stop()
        assert served.process.returncode == 0, output
    assert "state       postgresql+psycopg://" in output and ":***@" in output
    assert PASSWORD not in output
    # refused credentials: serve starts offline and says so in the log, without the password
    elsewhere = tmp_path / "refused"
    elsewhere.mkdir()
    served = serve(elsewhere, "--db", refused_url())
    output = served.stop()
    assert "unreachable at start" in output
    assert PASSWORD not in output
