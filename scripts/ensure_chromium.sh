#!/usr/bin/env bash
# The dashboard tests drive Debian's Chromium with Playwright (no browser download).
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then exit 0; fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "==> installing chromium (Debian package) for the dashboard browser tests"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
    || echo "!! could not install chromium; browser tests will be skipped" >&2
else
  echo "!! chromium not found and not root: browser tests will be skipped (apt-get install chromium)" >&2
fi
