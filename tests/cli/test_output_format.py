"""The formatting rules of drossel.cli.output, on rows shaped like report rows."""

from __future__ import annotations

import csv
import io

from drossel.cli.output import print_table, write_csv


def test_csv_flattens_and_defuses_formulas() -> None:
    out = io.StringIO()
    rows = [
        {
            "server_fqdn": "ex01.example",
            "stage": 2,
            "delta": -3,
            "remediated": False,
            "recommended_builds": ["15.2.1748.39", "15.2.2562.53"],
            "counts": {"accept": 1, "block": 0},
            "evidence": '=HYPERLINK("http://x")',
            "paused_until": None,
        },
        {"server_fqdn": "ex02.example", "new_field": "flows through"},
    ]
    write_csv(rows, out)
    parsed = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert list(parsed[0]) == [*rows[0], "new_field"]
    first = parsed[0]
    assert (first["stage"], first["delta"], first["remediated"]) == ("2", "-3", "false")
    assert first["recommended_builds"] == "15.2.1748.39; 15.2.2562.53"
    assert first["counts"] == '{"accept": 1, "block": 0}'
    assert first["evidence"].startswith("'=")
    assert first["paused_until"] == ""
    assert parsed[1]["new_field"] == "flows through" and parsed[1]["stage"] == ""


def test_narrow_table_keeps_80_columns_and_wraps_long_values(capsys) -> None:  # type: ignore[no-untyped-def]
    long_name = "a-very-long-server-name-that-cannot-fit.mail.department.example"
    rows = [
        {
            "tenant": "contoso",
            "server_fqdn": long_name,
            "status": "unsupported",
            "stage": 3,
            "next_stage_start": "2026-12-06T08:00:00+00:00",
            "reasons": ["x" * 200],
        }
    ]
    print_table(rows, ["tenant", "server_fqdn", "status", "stage", "next_stage_start"], width=80)
    text = capsys.readouterr().out
    assert max(len(line) for line in text.splitlines()) <= 80
    lines = text.splitlines()
    start, end = lines[0].index("server"), lines[0].index("status")
    server_column = "".join(line[start:end].strip() for line in lines[2:])
    assert server_column == long_name  # wrapped over lines, not cut
    joined = "".join(text.split())
    assert "2026-12-06" in text and "08:00" not in text  # schedule dates as days
    assert "x" * 50 not in joined  # not a narrow column
