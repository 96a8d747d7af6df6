#!/usr/bin/env bash
# Set up (scripts/setup.sh), audit the installed dependencies (scripts/audit.py) and run the
# whole test suite: unit, milter protocol, real Postfix, gateway, PostgreSQL, web and browser
# tests. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
# Known vulnerabilities in the installed dependencies fail the run (pip-audit; an unreachable
# vulnerability service is reported, not failed on).
.venv/bin/python scripts/audit.py
# PostgreSQL: the tests start the machine's cluster themselves if it is down (tests/pg.py).
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
