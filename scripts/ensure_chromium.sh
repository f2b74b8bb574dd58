#!/usr/bin/env bash
# Browser tests use Debian's Chromium. Install it when missing and we are root; CI fails without it.
set -euo pipefail
if command -v chromium >/dev/null 2>&1 || [ -x /usr/bin/chromium ]; then exit 0; fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing Debian's chromium for the browser tests"
  apt-get -o DPkg::Lock::Timeout=600 update -qq && DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq chromium >/dev/null
elif [ "${CI:-}" = "true" ]; then
  echo "chromium is missing and cannot be installed (not root): browser tests would fail" >&2
  exit 1
else
  echo "chromium is missing: browser tests will be skipped (install: apt-get install chromium)"
fi
