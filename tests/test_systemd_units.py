"""The example systemd units: valid for systemd, hardened, and starting real drossel commands."""

from __future__ import annotations

import configparser
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from drossel.cli.main import build_parser

UNITS = sorted((Path(__file__).resolve().parents[1] / "examples" / "systemd").glob("*.service"))
HARDENING = {
    "NoNewPrivileges": "yes",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "DynamicUser": "yes",
    "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
    "SystemCallArchitectures": "native",
}


def service(unit: Path) -> configparser.SectionProxy:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(unit)
    return parser["Service"]


def test_a_unit_per_daemon() -> None:
    assert {u.stem for u in UNITS} == {
        "drossel-milter",
        "drossel-gateway",
        "drossel-web",
        "drossel-serve",
    }


@pytest.mark.parametrize("unit", UNITS, ids=lambda u: u.stem)
def test_unit_is_hardened_and_runs_a_real_command(unit: Path) -> None:
    section = service(unit)
    for key, value in HARDENING.items():
        assert section.get(key) == value, key
    argv = shlex.split(section["ExecStart"])
    assert argv[0].endswith("/bin/drossel")
    args = build_parser().parse_args(argv[1:])  # exits (fails the test) on a bad command line
    assert args.command == unit.stem.removeprefix("drossel-")
    needs_port_25 = args.command in ("gateway", "serve")
    assert ("CAP_NET_BIND_SERVICE" in section["AmbientCapabilities"]) is needs_port_25


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze missing")
@pytest.mark.parametrize("unit", UNITS, ids=lambda u: u.stem)
def test_systemd_accepts_the_unit(unit: Path, tmp_path: Path) -> None:
    """``systemd-analyze verify``, with ExecStart pointed at this checkout's drossel."""
    drossel = Path(sys.executable).with_name("drossel")
    assert drossel.exists()
    copy = tmp_path / unit.name
    copy.write_text(unit.read_text().replace("/opt/drossel/.venv/bin/drossel", str(drossel)))
    done = subprocess.run(
        ["systemd-analyze", "verify", str(copy)], capture_output=True, text=True, timeout=60
    )
    problems = [line for line in done.stderr.splitlines() if unit.name in line]
    assert done.returncode == 0 and problems == [], done.stderr
