#!/usr/bin/env bash
# System tools the tests use, from Debian's packages: Chromium (dashboard tests via
# Playwright, no browser download) and docker-compose (validates deploy/ files).
set -euo pipefail
missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v docker-compose >/dev/null 2>&1 || missing+=(docker-compose)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "==> installing ${missing[*]} (Debian packages) for the browser and deployment tests"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null) \
    || echo "!! could not install ${missing[*]}; the tests that need them will be skipped" >&2
else
  echo "!! ${missing[*]} not found and not root: tests that need them are skipped (apt-get install ${missing[*]})" >&2
fi
