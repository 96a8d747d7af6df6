#!/usr/bin/env bash
# Install drossel in .venv and run it on the embedded default (SQLite file ./drossel.db):
# `drossel serve` with the sample configuration, unless you pass your own arguments.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q -e . >/dev/null
if [ "$#" -eq 0 ]; then
  set -- serve --config examples/drossel.toml
fi
exec .venv/bin/drossel "$@"
