"""Audit the installed environment (.venv) for dependencies with known vulnerabilities.

Runs ``pip-audit`` and fails (exit 1) when any installed package has a known vulnerability.
When the vulnerability service cannot be reached (offline, or a mirror without PyPI's JSON API,
where pip-audit reports every package as "not found"), it says plainly that nothing was audited
and exits 0, so an offline test run still runs the tests.  Part of ``scripts/test.sh``.
"""

from __future__ import annotations

import json
import subprocess
import sys


def main() -> int:
    command = [
        sys.executable, "-m", "pip_audit", "--skip-editable", "--progress-spinner", "off",
        "--format", "json", "--timeout", "30",
    ]  # fmt: skip
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=900)
    except (OSError, subprocess.TimeoutExpired) as exc:
        print(f"audit: pip-audit did not run ({exc}); dependencies NOT audited")
        return 0
    try:
        report = json.loads(result.stdout)
        dependencies = report["dependencies"]
    except (ValueError, KeyError, TypeError):
        reason = (result.stderr.strip().splitlines() or ["no output"])[-1]
        print(f"audit: the vulnerability service could not be reached ({reason}); "
              "dependencies NOT audited")  # fmt: skip
        return 0
    audited = [d for d in dependencies if not d.get("skip_reason")]
    skipped = [d for d in dependencies if d.get("skip_reason")]
    vulnerable = [d for d in audited if d.get("vulns")]
    for dep in vulnerable:
        for vuln in dep["vulns"]:
            fixed = ", ".join(vuln.get("fix_versions") or []) or "no fix yet"
            print(f"audit: {dep['name']} {dep['version']}: {vuln['id']} (fixed in {fixed})")
    if vulnerable:
        print(f"audit: FAILED: {len(vulnerable)} installed package(s) with known vulnerabilities")
        return 1
    if not audited:
        print(f"audit: the vulnerability service gave no data for any of {len(skipped)} "
              "packages (unreachable, or a mirror without the PyPI JSON API); "
              "dependencies NOT audited")  # fmt: skip
        return 0
    note = f" ({len(skipped)} skipped: not on PyPI or editable)" if skipped else ""
    print(f"audit: no known vulnerabilities in {len(audited)} installed packages{note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
