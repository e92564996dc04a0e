#!/usr/bin/env bash
# Everything `make test-deploy` / `make up` need on a Debian 12 host without Docker:
#   podman + runc, fuse-overlayfs, slirp4netns, uidmap     the container engine
#   netavark + aardvark-dns                                 networks with DNS (service names)
#   debootstrap                                             scripts/build-base-image.sh
#   docker-compose                                          compose against podman's socket
# plus /etc/containers/containers.conf (runc: crun refuses hybrid cgroups; no raised
# RLIMIT_NOFILE: refused here), podman's Docker-API socket, and -- on hosts without
# systemd, where podman cannot schedule healthchecks -- scripts/podman-healthd.sh.
# Idempotent: re-running changes nothing that is already in place.
# Prints `export DOCKER_HOST=...` on its last line when the socket is podman's.
set -euo pipefail
cd "$(dirname "$0")/.."
log() { printf '==> %s\n' "$*" >&2; }

if command -v docker >/dev/null 2>&1 && docker compose version >/dev/null 2>&1 \
   && docker info 2>/dev/null | grep -qi 'server version' && ! docker info 2>/dev/null | grep -qi podman; then
  log "Docker Engine with the compose plugin found: nothing to set up"
  exit 0
fi

pkgs=()
command -v podman >/dev/null 2>&1 || pkgs+=(podman)
command -v runc >/dev/null 2>&1 || pkgs+=(runc)
command -v fuse-overlayfs >/dev/null 2>&1 || pkgs+=(fuse-overlayfs)
command -v slirp4netns >/dev/null 2>&1 || pkgs+=(slirp4netns)
command -v newuidmap >/dev/null 2>&1 || pkgs+=(uidmap)
command -v debootstrap >/dev/null 2>&1 || [ -x /usr/sbin/debootstrap ] || pkgs+=(debootstrap)
command -v docker-compose >/dev/null 2>&1 || pkgs+=(docker-compose)
[ -x /usr/lib/podman/netavark ] || command -v netavark >/dev/null 2>&1 || pkgs+=(netavark)
[ -x /usr/lib/podman/aardvark-dns ] || command -v aardvark-dns >/dev/null 2>&1 || pkgs+=(aardvark-dns)
if [ ${#pkgs[@]} -gt 0 ]; then
  [ "$(id -u)" = 0 ] || { echo "!! need root to apt-get install ${pkgs[*]}" >&2; exit 1; }
  log "installing ${pkgs[*]} (Debian packages)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
fi

# containers.conf: add each setting only when its key is absent (never rewrite a site's file).
conf=/etc/containers/containers.conf
mkdir -p /etc/containers
touch "$conf"
ensure_key() {  # section key value
  local section="$1" key="$2" value="$3"
  if grep -Eq "^[[:space:]]*${key}[[:space:]]*=" "$conf"; then return; fi
  log "containers.conf: [$section] $key = $value"
  if grep -q "^\[$section\]" "$conf"; then
    sed -i "/^\[$section\]/a $key = $value" "$conf"
  else
    printf '\n[%s]\n%s = %s\n' "$section" "$key" "$value" >>"$conf"
  fi
}
ensure_key engine runtime '"runc"'
ensure_key containers default_ulimits '[]'
# netavark+aardvark: service-name DNS also on `internal: true` networks (CNI's dnsname
# plugin refuses those). Only switched while podman has no networks of its own yet.
if ! grep -Eq '^[[:space:]]*network_backend' "$conf"; then
  if [ "$(podman network ls -q 2>/dev/null | grep -vc '^podman$')" = 0 ]; then
    ensure_key network network_backend '"netavark"'

  else
    echo "!! podman has networks already; leaving its network backend as it is" >&2
  fi
fi

# The Docker-compatible API socket docker-compose talks to.
sock=/run/podman/podman.sock
if ! curl -fsS --unix-socket "$sock" http://d/_ping >/dev/null 2>&1; then
  mkdir -p /run/podman /run/sentri-deploy
  log "starting podman's API socket at $sock"
  nohup podman system service --time=0 "unix://$sock" >/run/sentri-deploy/podman-service.log 2>&1 &
  echo $! >/run/sentri-deploy/podman-service.pid
  for _ in $(seq 1 50); do
    curl -fsS --unix-socket "$sock" http://d/_ping >/dev/null 2>&1 && break
    sleep 0.2
  done
fi
# Without systemd podman cannot time healthchecks: run them ourselves.
if [ ! -d /run/systemd/system ]; then
  pidf=/run/sentri-deploy/podman-healthd.pid
  if ! { [ -f "$pidf" ] && kill -0 "$(cat "$pidf")" 2>/dev/null; }; then
    mkdir -p /run/sentri-deploy
    log "no systemd: starting scripts/podman-healthd.sh (runs container healthchecks)"
    nohup bash scripts/podman-healthd.sh >/run/sentri-deploy/podman-healthd.log 2>&1 &
    echo $! >"$pidf"
  fi
fi
echo "export DOCKER_HOST=unix://$sock"
