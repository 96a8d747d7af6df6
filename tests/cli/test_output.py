"""Readable command output: 80-column tables, ``--wide``, ``--csv``, a closed pipe, ``--version``;
and ``drossel demo --db`` leaving its servers for ``drossel report``."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import drossel

AT = "2026-12-01T12:00:00Z"
DEMO_SERVERS = {"ex2013.contoso.example", "ex2016.contoso.example", "mail.fabrikam.example"}


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DROSSEL_")}
    env.pop("COLUMNS", None)
    return subprocess.run(
        [sys.executable, "-m", "drossel", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env=env,
        timeout=180,
    )


def ok(*args: str, cwd: Path) -> str:
    done = run(*args, cwd=cwd)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def demo_db(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    """A database a 35-day demo was replayed into (throttling has begun for the old servers)."""
    base = tmp_path_factory.mktemp("demo")
    url = f"sqlite:///{base / 'state.db'}"
    ok("demo", "--days", "35", "--quiet", "--db", url, "--at", AT, cwd=base)
    return url, base


def test_demo_db_keeps_its_servers_for_report(demo_db: tuple[str, Path]) -> None:
    url, base = demo_db
    rows = json.loads(ok("report", "--json", "--db", url, "--at", AT, cwd=base))
    by_server = {r["server_fqdn"].lower(): r for r in rows}
    assert set(by_server) == DEMO_SERVERS
    # the replay ended at --at, so the report shows the demo's final stage, not stage 1
    assert by_server["ex2013.contoso.example"]["stage"] == 2
    assert by_server["ex2013.contoso.example"]["tenant"] == "contoso"
    # current: nothing scheduled, nothing applied
    assert by_server["mail.fabrikam.example"]["stage"] == 0
    assert by_server["mail.fabrikam.example"]["scheduled_stage"] is None
    assert by_server["ex2016.contoso.example"]["counts"]["throttle"] > 0
    # a second demo into the same database reuses its tenants and connectors
    ok("demo", "--days", "1", "--quiet", "--db", url, "--at", AT, cwd=base)
    tenants = json.loads(ok("tenant", "list", "--json", "--db", url, cwd=base))
    assert sorted(t["name"] for t in tenants) == ["contoso", "fabrikam"]


def test_report_csv_has_header_and_one_row_per_server(demo_db: tuple[str, Path]) -> None:
    url, base = demo_db
    out = ok("report", "--csv", "--db", url, "--at", AT, cwd=base)
    reader = csv.DictReader(io.StringIO(out))
    rows = list(reader)
    assert reader.fieldnames is not None
    assert reader.fieldnames[:2] == ["tenant", "server_fqdn"]
    assert {"stage", "status", "throttle_minutes", "recommended_builds"} <= set(reader.fieldnames)
    assert {r["server_fqdn"].lower() for r in rows} == DEMO_SERVERS
    as_json = json.loads(ok("report", "--json", "--db", url, "--at", AT, cwd=base))
    assert len(rows) == len(as_json)
    assert set(reader.fieldnames) == set(as_json[0])  # every field, also ones added later
    old = next(r for r in rows if r["server_fqdn"].lower() == "ex2013.contoso.example")
    assert old["stage"] == "2" and old["persistently_vulnerable"] == "true"


def test_report_table_fits_80_columns_and_wide_shows_all(demo_db: tuple[str, Path]) -> None:
    url, base = demo_db
    narrow = ok("report", "--db", url, "--at", AT, cwd=base)
    lines = narrow.splitlines()
    assert max(len(line) for line in lines) <= 80
    assert "unsupported" in narrow and "status" in lines[0]
    assert "recommended_builds" not in narrow
    wide = ok("report", "--wide", "--db", url, "--at", AT, cwd=base)
    header = wide.splitlines()[0].split()
    assert {"server_fqdn", "recommended_builds", "first_detected", "counts"} <= set(header)
    # nothing wrapped: one line per server below the header
    assert len(wide.splitlines()) == 1 + len(DEMO_SERVERS)
    assert any("ex2013.contoso.example" in line for line in wide.splitlines())


def test_audit_csv(demo_db: tuple[str, Path]) -> None:
    url, base = demo_db
    rows = list(csv.DictReader(io.StringIO(ok("audit", "--csv", "--db", url, cwd=base))))
    assert rows and set(rows[0]) == {"at", "actor", "tenant", "action", "detail"}
    assert {"contoso", "fabrikam"} <= {r["tenant"] for r in rows}


def test_closed_pipe_is_quiet(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DROSSEL_")}
    done = subprocess.run(
        f"{sys.executable} -m drossel catalog | head -n 2",
        shell=True,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert len(done.stdout.splitlines()) == 2
    assert done.stderr == ""


def test_version(tmp_path: Path) -> None:
    out = ok("--version", cwd=tmp_path)
    assert out.strip() == f"drossel {drossel.__version__}"
    pyproject = (Path(__file__).resolve().parents[2] / "pyproject.toml").read_text()
    assert f'version = "{drossel.__version__}"' in pyproject


def test_demo_db_then_web_report_shows_the_demo_servers(demo_db: tuple[str, Path]) -> None:
    """The documented two-step: ``drossel demo --db URL``, then the web on the same state."""
    from datetime import UTC, datetime

    from fastapi.testclient import TestClient

    from drossel.config import Config
    from drossel.storage.store import Store
    from drossel.web.app import create_app

    url, base = demo_db
    token = ok("token", "create", "--operator", "--db", url, cwd=base).strip()
    store = Store(url)
    try:
        now = datetime(2026, 12, 1, 12, tzinfo=UTC)
        app = create_app(store, Config(), lambda: now)
        with TestClient(app) as client:
            response = client.get("/api/v1/report", headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 200, response.text
        rows = response.json()
        assert {r["server_fqdn"].lower() for r in rows} == DEMO_SERVERS
    finally:
        store.dispose()


def test_report_and_pause_list_show_what_is_applied_and_charged(
    demo_db: tuple[str, Path], tmp_path: Path
) -> None:
    """Issue 9 through the command line: ``report --json`` shows the applied stage (0/0 while
    paused or report-only by rollout) and why; ``pause list --json`` the days charged (a pause
    ended on its first day costs that day)."""
    _, base = demo_db
    shutil.copy(base / "state.db", tmp_path / "state.db")
    db = ("--db", f"sqlite:///{tmp_path / 'state.db'}")
    server = ("--tenant", "contoso", "--server", "ex2013.contoso.example")
    pause = json.loads(
        ok(
            "pause",
            "add",
            *server,
            "--days",
            "10",
            "--json",
            *db,
            "--at",
            "2026-12-01T00:01:00Z",
            cwd=tmp_path,
        )
    )
    assert pause["charged_days"] == 10
    ok("pause", "end", str(pause["id"]), *db, "--at", "2026-12-01T11:00:00Z", cwd=tmp_path)
    (listed,) = json.loads(ok("pause", "list", "--json", *db, "--at", AT, cwd=tmp_path))
    assert (listed["end"], listed["charged_days"], listed["charged_by_year"]) == (
        "2026-12-02",
        1,
        {"2026": 1},
    )

    def applied(*config: str) -> dict[str, tuple[Any, ...]]:
        rows = json.loads(ok("report", "--json", *config, *db, "--at", AT, cwd=tmp_path))
        return {
            r["server_fqdn"].lower(): (
                r["stage"],
                r["throttle_minutes"],
                r["block_minutes"],
                r["scheduled_stage"],
                r["applied_reason"],
            )
            for r in rows
        }

    rows = applied()
    assert rows["ex2013.contoso.example"] == (0, 0, 0, 2, "paused until 2026-12-02")
    assert rows["ex2016.contoso.example"] == (2, 5, 0, 2, None)
    (tmp_path / "rollout.toml").write_text(
        '[policy]\nrollout = { "Exchange 2016" = "report-only" }\n'
    )
    rows = applied("--config", str(tmp_path / "rollout.toml"))
    assert rows["ex2016.contoso.example"] == (0, 0, 0, 2, "Exchange 2016 is report-only by rollout")
