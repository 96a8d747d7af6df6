#!/usr/bin/env bash
# Set up (scripts/setup.sh) and run the whole test suite: unit, milter protocol, real Postfix,
# gateway, PostgreSQL, web and browser tests. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
# PostgreSQL: the tests start the machine's cluster themselves if it is down (tests/pg.py).
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
