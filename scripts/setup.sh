#!/usr/bin/env bash
# Set up everything drossel and its test suite need on a fresh Debian machine:
# system packages (Postfix for the end-to-end tests, Chromium for the browser test,
# dnsmasq for the gateway's DNS tests, gcc and libmilter-dev for the benchmark's no-op milter,
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
command -v m4 >/dev/null 2>&1 || need_apt+=(m4)  # builds the Sendmail test instances' .cf
# bench/milter.py builds its no-op C milter anchor against libmilter
command -v gcc >/dev/null 2>&1 || need_apt+=(gcc)
[ -f /usr/include/libmilter/mfapi.h ] || need_apt+=(libmilter-dev)
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

# Sendmail for its end-to-end tests: sendmail-bin conflicts with postfix (both provide the
# machine's MTA), so its packages are unpacked into a private directory instead of installed;
# the tests run that binary with their own configuration (tests/harness/sendmail.py).
sendmail_root="${DROSSEL_SENDMAIL_ROOT:-/opt/drossel-sendmail}"
if [ ! -x "$sendmail_root/usr/libexec/sendmail/sendmail" ] && [ "$(id -u)" -eq 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  # the shared libraries sendmail-bin links against (none of them conflicts with postfix)
  sm_libs=(libdb5.3 libldap-2.5-0 liblockfile1 libnsl2 libsasl2-2 libwrap0 libssl3)
  missing=()
  for lib in "${sm_libs[@]}"; do
    dpkg -s "$lib" >/dev/null 2>&1 || missing+=("$lib")
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null 2>&1 ||
      { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null; }
  fi
  sm_tmp="$(mktemp -d)"
  if (cd "$sm_tmp" && { apt-get download sendmail-bin sendmail-base sendmail-cf >/dev/null 2>&1 ||
      { apt-get update -q >/dev/null && apt-get download sendmail-bin sendmail-base sendmail-cf >/dev/null; }; }); then
    mkdir -p "$sendmail_root"
    for deb in "$sm_tmp"/*.deb; do dpkg -x "$deb" "$sendmail_root"; done
  else
    echo "setup: could not download sendmail packages; Sendmail tests will skip" >&2
  fi
  rm -rf "$sm_tmp"
fi

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -e '.[test]'
# scripts/run.sh reinstalls only when the dependency files change: this install counts
sha256sum <pyproject.toml | cut -d' ' -f1 >.venv/.drossel-install-stamp
