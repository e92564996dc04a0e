#!/usr/bin/env bash
# Podman schedules HEALTHCHECKs with systemd timers; on a host without systemd they
# never run and compose's `condition: service_healthy` waits forever. This loop runs
# every running container's healthcheck each INTERVAL seconds (default 5) instead.
# Started by scripts/ensure_deploy_tools.sh; stop it with kill "$(cat /run/sentri-deploy/podman-healthd.pid)".
set -uo pipefail
INTERVAL="${INTERVAL:-5}"
while true; do
  for id in $(podman ps -q --filter health=starting --filter health=healthy --filter health=unhealthy 2>/dev/null | sort -u); do
    podman healthcheck run "$id" >/dev/null 2>&1 &
  done
  wait
  sleep "$INTERVAL"
done
