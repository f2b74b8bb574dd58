#!/usr/bin/env bash
# Browser tests use Debian's Chromium, and a CJK font so the Japanese UI renders in screenshots (without one
# every Japanese label is a row of tofu boxes). Install what is missing when we are root; CI fails without.
set -euo pipefail
missing=()
if ! command -v chromium >/dev/null 2>&1 && [ ! -x /usr/bin/chromium ]; then missing+=(chromium); fi
if ! dpkg -s fonts-noto-cjk >/dev/null 2>&1; then missing+=(fonts-noto-cjk); fi
if [ ${#missing[@]} -eq 0 ]; then exit 0; fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing Debian's ${missing[*]} for the browser tests"
  apt-get -o DPkg::Lock::Timeout=600 update -qq \
    && DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq "${missing[@]}" >/dev/null
elif [ "${CI:-}" = "true" ]; then
  echo "${missing[*]} missing and cannot be installed (not root): browser tests would fail" >&2
  exit 1
else
  echo "${missing[*]} missing: browser tests will be skipped or fail (install: apt-get install ${missing[*]})"
fi
