"""The operator command line, run as users run it (the ``drossel`` console script)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from tests.conftest import FIXTURES


def drossel(
    *args: str, cwd: Path, stdin: bytes | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("DROSSEL_")}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "drossel.cli.main", *args],
        cwd=cwd,
        input=stdin.decode("latin-1") if stdin else None,
        capture_output=True,
        text=True,
        env=full_env,
        timeout=60,
    )


def ok_json(*args: str, cwd: Path, **kw):  # type: ignore[no-untyped-def]
    result = drossel(*args, "--json", cwd=cwd, **kw)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_detect_json_from_file_and_stdin(tmp_path: Path) -> None:
    sample = FIXTURES / "headers" / "exchange2016_crlf_folded.eml"
    out = ok_json("detect", str(sample), cwd=tmp_path)
    assert set(out) == {"hops", "connecting", "origin"}
    assert out["connecting"] == {
        "server": "ex01.contoso.local",
        "build": "15.1.2507.16",
        "product": "Exchange 2016",
    }
    assert out["hops"][1] == {
        "by": "ex02.contoso.local",
        "from": "ex02.contoso.local",
        "build": "15.1.2507.23",
        "product": "Exchange 2016",
        "kind": "mapi",
        "cloud": False,
    }
    piped = ok_json("detect", "-", cwd=tmp_path, stdin=sample.read_bytes())
    assert piped == out
    garbage = ok_json("detect", "-", cwd=tmp_path, stdin=b"\xff\xfe\x00 not a message")
    assert garbage == {"hops": [], "connecting": None, "origin": None}


def test_assess_json(tmp_path: Path) -> None:
    out = ok_json("assess", "15.02.1748.039", "--at", "2026-11-23", cwd=tmp_path)
    assert out["product"] == "Exchange 2019"
    assert out["update_name"] == "Exchange Server 2019 CU15 Oct25SU"
    assert out["status"] == "unsupported" and out["persistently_vulnerable"] is True
    assert set(out) >= {"release_date", "reasons", "recommended_builds"}
    assert not (tmp_path / "drossel.db").exists()  # read-only commands create no state


def test_simulate_with_pause(tmp_path: Path) -> None:
    days = ok_json("simulate", "--days", "100", "--pause", "35:10", cwd=tmp_path)
    assert len(days) == 100
    assert days[29] == {
        "day": 29,
        "stage": 1,
        "throttle_minutes": 0,
        "block_minutes": 0,
        "paused": False,
    }
    assert days[30]["stage"] == 2 and days[30]["throttle_minutes"] == 5
    assert days[35]["paused"] and days[35]["throttle_minutes"] == 0
    assert days[45]["stage"] == 2 and not days[45]["paused"]
    assert days[50]["stage"] == 3
    assert days[99]["stage"] == 7  # 90 effective days are reached on day 100


def test_check_gives_the_exact_spec_reply(tmp_path: Path) -> None:
    sample = FIXTURES / "headers" / "exchange2016_crlf_folded.eml"
    out = ok_json(
        "check",
        str(sample),
        "--at",
        "2026-11-23T10:00:00Z",
        "--first-seen",
        "2026-08-01T00:00:00Z",
        cwd=tmp_path,
    )
    verdict = out["verdict"]
    assert verdict["action"] == "block" and verdict["stage"] == 8
    assert (verdict["code"], verdict["enhanced_code"]) == (550, "5.7.230")
    assert verdict["text"].startswith(
        "Connecting Exchange server version is out-of-date; "
        "connection to this mail service blocked for 60 mins/hr."
    )
    fresh = ok_json("check", str(sample), "--at", "2026-11-23T10:00:00Z", cwd=tmp_path)
    assert fresh["verdict"]["action"] == "accept" and fresh["verdict"]["stage"] == 1
    assert verdict["evidence"] == "connector"  # as if through an enforced OnPremises connector
    at = ("--at", "2026-11-23T10:00:00Z", "--first-seen", "2026-08-01T00:00:00Z")
    verified = ok_json("check", str(sample), *at, "--evidence", "verified", cwd=tmp_path)
    assert (verified["verdict"]["action"], verified["verdict"]["evidence"]) == ("block", "verified")
    forged = ok_json("check", str(sample), *at, "--evidence", "unverified", cwd=tmp_path)
    v = forged["verdict"]
    assert (v["action"], v["stage"], v["evidence"]) == ("accept", 0, "unverified")
    assert v["applied_reason"].startswith("unverified") and v["scheduled_stage"] == 1
    # "Default" is mail through no connector: with connector evidence that is a contradiction
    contradiction = drossel("check", str(sample), *at, "--connector-type", "Default", cwd=tmp_path)
    assert contradiction.returncode != 0 and contradiction.stdout == ""
    assert "--evidence verified or --evidence unverified" in contradiction.stderr
    assert "Traceback" not in contradiction.stderr
    no_connector = ok_json(
        "check",
        str(sample),
        *at,
        "--connector-type",
        "Default",
        "--evidence",
        "verified",
        cwd=tmp_path,
    )
    assert no_connector["verdict"]["evidence"] == "verified"


def test_state_commands_and_errors(tmp_path: Path) -> None:
    db = ["--db", f"sqlite:///{tmp_path / 's.db'}", "--at", "2026-03-01T10:00:00Z"]
    assert (
        drossel(
            "tenant", "add", "contoso", "--contact", "it@contoso.example", *db, cwd=tmp_path
        ).returncode
        == 0
    )
    assert (
        drossel(
            "connector",
            "add",
            "--tenant",
            "contoso",
            "--name",
            "onprem",
            "--ip",
            "192.0.2.0/24",
            *db,
            cwd=tmp_path,
        ).returncode
        == 0
    )
    assert ok_json("connector", "list", *db, cwd=tmp_path)[0]["ip_ranges"] == ["192.0.2.0/24"]
    pause = ok_json("pause", "add", "--tenant", "contoso", "--days", "30", *db, cwd=tmp_path)
    assert pause["days"] == 30 and pause["start"] == "2026-03-01"
    over = drossel(
        "pause",
        "add",
        "--tenant",
        "contoso",
        "--days",
        "61",
        "--start",
        "2026-05-01",
        *db,
        cwd=tmp_path,
    )
    assert over.returncode == 2
    assert over.stderr.strip().startswith("drossel: error: pause budget exceeded for 2026")
    assert "Traceback" not in over.stderr
    assert drossel("pause", "end", str(pause["id"]), *db, cwd=tmp_path).returncode == 0
    assert (
        drossel(
            "override",
            "add",
            "--server",
            "ex01.contoso.example",
            "--reason",
            "false positive",
            *db,
            cwd=tmp_path,
        ).returncode
        == 0
    )
    assert ok_json("override", "list", *db, cwd=tmp_path)[0]["reason"] == "false positive"
    audit = ok_json("audit", *db, cwd=tmp_path)
    assert {"tenant.add", "connector.add", "pause.add", "pause.end", "override.add"} <= {
        a["action"] for a in audit
    }
    assert ok_json("report", *db, cwd=tmp_path) == []
    for bad in (
        ["pause", "end", "999"],
        ["tenant", "add", "x", "--contact", "nope"],
        ["connector", "add", "--tenant", "zz", "--name", "n", "--ip", "1.2.3.4"],
        ["assess", "banana"],
        ["pause", "add", "--tenant", "ghost", "--days", "3"],
    ):
        result = drossel(*bad, *db, cwd=tmp_path)
        assert result.returncode != 0
        assert result.stderr.count("\n") <= 1 and "Traceback" not in result.stderr, result.stderr


def test_config_errors_are_one_line(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text("[policy]\nmode = 'loud'\n")
    result = drossel("simulate", "--days", "3", "--config", str(config), cwd=tmp_path)
    assert result.returncode == 2
    assert "policy.mode" in result.stderr and "Traceback" not in result.stderr
    missing = drossel("simulate", "--days", "3", "--config", "/nonexistent.toml", cwd=tmp_path)
    assert missing.returncode == 2 and "cannot read configuration" in missing.stderr


def test_environment_variables(tmp_path: Path) -> None:
    env = {"DROSSEL_DB": f"sqlite:///{tmp_path / 'env.db'}", "DROSSEL_NOW": "2026-01-01T00:00:00Z"}
    assert drossel("tenant", "add", "t1", cwd=tmp_path, env=env).returncode == 0
    assert (tmp_path / "env.db").exists()
    pause = ok_json("pause", "add", "--tenant", "t1", "--days", "2", cwd=tmp_path, env=env)
    assert pause["start"] == "2026-01-01"


def test_catalog_list_search_and_load(tmp_path: Path) -> None:
    found = ok_json("catalog", "--search", "CU14 Mar24SU", cwd=tmp_path)
    assert [r["build"] for r in found["releases"]] == ["15.2.1544.9"]
    db = ["--db", f"sqlite:///{tmp_path / 'c.db'}"]
    bad = tmp_path / "bad.json"
    bad.write_text('{"version": "2099-01-01", "products": [], "releases": [{"build": "x"}]}')
    result = drossel("catalog", "load", str(bad), *db, cwd=tmp_path)
    assert result.returncode == 2 and "bad build" in result.stderr
    full = ok_json("catalog", *db, cwd=tmp_path)
    assert len(full["releases"]) > 400  # old catalog kept
    newer = json.loads(
        (Path(__import__("drossel").__file__).parent / "data" / "exchange-catalog.json").read_text()
    )
    newer["version"] = "2099-01-01"
    newer["releases"].append(
        {
            "product": "Exchange SE",
            "update_name": "Exchange Server SE CU1",
            "build": "15.2.2700.5",
            "release_date": "2027-03-01",
            "kind": "CU",
        }
    )
    good = tmp_path / "newer.json"
    good.write_text(json.dumps(newer))
    loaded = drossel("catalog", "load", str(good), *db, cwd=tmp_path)
    assert loaded.returncode == 0, loaded.stderr
    assert ok_json("catalog", "--search", "SE CU1", *db, cwd=tmp_path)["version"] == "2099-01-01"
    out = ok_json("assess", "15.2.2700.5", "--at", "2027-03-02", *db, cwd=tmp_path)
    assert out["status"] == "current"


@pytest.mark.parametrize("command", ["detect", "check", "report", "pause", "milter"])
def test_help_works(tmp_path: Path, command: str) -> None:
    assert drossel(command, "--help", cwd=tmp_path).returncode == 0
