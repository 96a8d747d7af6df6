"""``drossel detect --json`` on the Microsoft-hosted corpus, and ``drossel assess --json`` on
ESU builds, as operators run them (in-process for the corpus, one real process each as a check
that the console script behaves the same)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from tests.cli.test_cli import ok_json
from tests.conftest import FIXTURES

from drossel.cli.main import main
from drossel.core.hosted import MICROSOFT_HOSTED

CORPUS = sorted((FIXTURES / "hosted").iterdir())


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, object]:
    assert main([*args, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert isinstance(out, dict)
    return out


def test_detect_json_never_names_a_microsoft_hosted_hop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)  # no database here: the packaged catalog is used
    seen_hosted = 0
    for path in CORPUS:
        out = _run(capsys, "detect", str(path))
        meta = dict(re.findall(r"^# ([a-z-]+): (.*)$", path.read_text(), re.MULTILINE))
        connecting = out["connecting"]
        if meta["expect-connecting"].strip() == "none":
            assert connecting is None, path.name
        else:
            assert isinstance(connecting, dict), path.name
            host, build = meta["expect-connecting"].split()
            assert (connecting["server"], connecting["build"]) == (host.lower(), build)
            assert MICROSOFT_HOSTED.host_rule(str(connecting["server"])) is None
            assert connecting["product"] != "Exchange Online"
        hops = out["hops"]
        assert isinstance(hops, list)
        for hop in hops:
            if MICROSOFT_HOSTED.host_rule(hop["by"]) is not None:
                assert hop["cloud"] is True and "hosted" in hop, (path.name, hop)
                seen_hosted += 1
    assert seen_hosted > 100


def test_console_script_agrees_on_a_hybrid_case(tmp_path: Path) -> None:
    sample = FIXTURES / "hosted" / "hybrid2013_e2010sp3_to_eop_15_0.txt"
    out = ok_json("detect", str(sample), cwd=tmp_path)
    assert out["connecting"] == {
        "server": "hub01.contoso.example",
        "build": "14.3.123.4",
        "product": "Exchange 2010",
    }
    assert [h["cloud"] for h in out["hops"]] == [True, True, False]


@pytest.mark.parametrize(
    ("build", "at", "status", "words"),
    [
        ("15.2.1748.42", "2025-12-20T12:00:00Z", "current", "ESU Period 1"),
        ("15.1.2507.66", "2026-07-20T12:00:00Z", "behind", "KB5094144"),  # Jun26SU missing
        ("15.2.1544.48", "2026-10-31T12:00:00Z", "current", "ESU Period 2"),
        ("15.2.1544.48", "2026-11-01T12:00:00Z", "unsupported", "last ESU period"),
        ("15.2.1748.39", "2025-11-01T12:00:00Z", "unsupported", "end of extended support"),
        ("14.16.287.2", "2013-03-18T12:00:00Z", "not_applicable", "Microsoft-hosted"),
    ],
)
def test_assess_json_grades_esu_with_the_reason(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    build: str,
    at: str,
    status: str,
    words: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    out = _run(capsys, "assess", build, "--at", at)
    assert out["status"] == status
    reasons = out["reasons"]
    assert isinstance(reasons, list) and any(words in r for r in reasons), reasons
