"""What "the real layer agrees with the model" means, field by field.

Why a module: the SPEC and the lead's decisions pin most of a verdict and a report row, but not
all of it.  Where they are silent the comparison leaves the field out, here, in one place, so a
reader can see exactly what is and is not checked:

* with the global mode ``off`` a message gets "accept, nothing recorded": its scheduled stage
  and whether a reason is given are not pinned, so they are not compared (nor in the report);
* an ``applied_reason`` is pinned only for a persistently vulnerable server (scheduled stage
  > 0): its presence is compared there, and left out for servers that are not vulnerable;
* ``remediated`` of a report row is not compared: the real row describes the record as the
  next message would leave it (a vulnerable build resumes or restarts a stopped clock, a build
  that is no longer vulnerable under a changed policy stops a running one), the model's is the
  stored state; both are fair readings (the example sequences check it where they agree);
* ``via`` (the client a sighting came through) is pinned for unverified evidence only;
* the reason's text is never compared.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from drossel.core.policy import Policy
from tests.model.reference import Answer


def comparable_answers(got: Answer, want: Answer, policy: Policy) -> tuple[Answer, Answer]:
    if policy.mode == "off":
        got = replace(got, scheduled_stage=0, reason=False)
        want = replace(want, scheduled_stage=0, reason=False)
    elif want.scheduled_stage == 0:
        got = replace(got, reason=False)
        want = replace(want, reason=False)
    return got, want


def comparable_rows(
    got: dict[str, dict[str, Any]], want: dict[str, dict[str, Any]], policy: Policy
) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    got = {server: dict(row) for server, row in got.items()}
    want = {server: dict(row) for server, row in want.items()}
    for server, row in want.items():
        other = got.get(server)
        if other is None:
            continue
        blank: tuple[str, ...] = ("remediated",)
        if row["scheduled_stage"] == 0:
            blank = (*blank, "applied_reason")
        if policy.mode == "off":
            blank = ("applied_reason", "scheduled_stage", "remediated")
        if row["evidence"] != "unverified":
            blank = (*blank, "via")
        for key in blank:
            row[key] = other[key] = None
    return got, want


def describe_row_differences(
    got: dict[str, dict[str, Any]], want: dict[str, dict[str, Any]]
) -> str:
    """Field by field, what the real report says and what the model says."""
    lines = []
    for server in sorted(set(got) | set(want)):
        if server not in got:
            lines.append(f"{server}: missing from the real report (model: {want[server]})")
        elif server not in want:
            lines.append(f"{server}: in the real report only ({got[server]})")
        else:
            for key in want[server]:
                if got[server].get(key) != want[server][key]:
                    lines.append(
                        f"{server}.{key}: real {got[server].get(key)!r}, "
                        f"model {want[server][key]!r}"
                    )
    return "; ".join(lines)
