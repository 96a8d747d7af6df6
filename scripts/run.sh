#!/usr/bin/env bash
# Run drossel from .venv on the embedded default (SQLite file ./drossel.db): `drossel serve`
# with the sample configuration, unless you pass your own arguments.
#
# The package is (re)installed only when the dependency files changed since the last install
# (a stamp in .venv), so every start after the first takes about a second and prints nothing
# but drossel's own output.
set -euo pipefail
cd "$(dirname "$0")/.."
stamp_file=.venv/.drossel-install-stamp
[ -x .venv/bin/python ] || python3 -m venv .venv
stamp="$(sha256sum <pyproject.toml | cut -d' ' -f1)"
if [ "$(cat "$stamp_file" 2>/dev/null)" != "$stamp" ] || ! .venv/bin/python -c 'import drossel' 2>/dev/null; then
  echo "run.sh: installing drossel into .venv (first start or changed dependencies)" >&2
  log="$(mktemp)"
  if ! .venv/bin/python -m pip install -q -e . >"$log" 2>&1; then
    cat "$log" >&2
    rm -f "$log"
    exit 1
  fi
  rm -f "$log"
  echo "$stamp" >"$stamp_file"
fi
if [ "$#" -eq 0 ]; then
  set -- serve --config examples/drossel.toml
fi
exec .venv/bin/drossel "$@"
