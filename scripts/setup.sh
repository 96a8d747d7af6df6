#!/usr/bin/env bash
# Set up everything drossel and its test suite need on a fresh Debian machine:
# system packages (Postfix for the end-to-end tests, Chromium for the browser test,
# dnsmasq for the gateway's DNS tests,
# PostgreSQL client libs), a virtual environment in .venv with drossel installed editable.
# Safe to run again; it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v postfix >/dev/null 2>&1 || need_apt+=(postfix)
command -v smtp-source >/dev/null 2>&1 || need_apt+=(postfix)
command -v swaks >/dev/null 2>&1 || need_apt+=(swaks)
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
command -v openssl >/dev/null 2>&1 || need_apt+=(openssl)
# a real DNS server on loopback for the gateway's reverse-lookup tests
command -v dnsmasq >/dev/null 2>&1 || [ -x /usr/sbin/dnsmasq ] || need_apt+=(dnsmasq-base)
if [ "${#need_apt[@]}" -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
    apt-get update -q >/dev/null
    apt-get install -y -q --no-install-recommends "${need_apt[@]}" >/dev/null
  else
    echo "setup: please install: ${need_apt[*]} (needs root); tests that need them will skip" >&2
  fi
fi

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -e '.[test]'
