#!/usr/bin/env bash
# System tools the tests use, from Debian's packages:
#   chromium        dashboard tests via Playwright (no browser download)
#   docker-compose  validates deploy/ files
#   postgresql      the event store on a real PostgreSQL (started by the tests as `postgres`)
#   mosquitto       a real MQTT broker for the notifier tests (+ mosquitto-clients)
set -euo pipefail
missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v docker-compose >/dev/null 2>&1 || missing+=(docker-compose)
ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || missing+=(postgresql)
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || missing+=(mosquitto)
command -v mosquitto_sub >/dev/null 2>&1 || missing+=(mosquitto-clients)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "==> installing ${missing[*]} (Debian packages) for the browser, storage, MQTT and deployment tests"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null) \
    || echo "!! could not install ${missing[*]}; the tests that need them will be skipped" >&2
  # Debian starts the packaged services on install; the tests run their own private servers.
  for svc in postgresql mosquitto; do
    (command -v systemctl >/dev/null 2>&1 && systemctl stop "$svc" >/dev/null 2>&1) || service "$svc" stop >/dev/null 2>&1 || true
  done
else
  echo "!! ${missing[*]} not found and not root: tests that need them are skipped (apt-get install ${missing[*]})" >&2
fi
