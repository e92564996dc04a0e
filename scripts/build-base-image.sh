#!/usr/bin/env bash
# The air-gapped base images, made from Debian packages only (no container registry):
#   sentri-base:bookworm   Debian 12 minbase + python3.11, python3-venv, tini, libglib2.0-0,
#                          libgomp1, ca-certificates: the Dockerfiles' PYTHON_IMAGE
#   sentri-redis:bookworm  sentri-base + Debian's redis-server: compose's REDIS_IMAGE
# A site without Docker Hub points MIRROR at its Debian mirror, runs this once, then
#   podman build --build-arg PYTHON_IMAGE=localhost/sentri-base:bookworm ...
# (scripts/build-images.sh does exactly that). Needs root, debootstrap and podman.
# Usage: [MIRROR=http://deb.debian.org/debian] [FORCE=1] bash scripts/build-base-image.sh
set -euo pipefail
cd "$(dirname "$0")/.."
MIRROR="${MIRROR:-http://deb.debian.org/debian}"
SECURITY_MIRROR="${SECURITY_MIRROR:-http://deb.debian.org/debian-security}"
ENGINE="${ENGINE:-podman}"
BASE="${BASE_IMAGE:-localhost/sentri-base:bookworm}"
REDIS="${REDIS_IMAGE_NAME:-localhost/sentri-redis:bookworm}"
log() { printf '==> %s\n' "$*" >&2; }

if [ "${FORCE:-0}" != 1 ] && "$ENGINE" image exists "$BASE" 2>/dev/null; then
  log "$BASE exists (FORCE=1 rebuilds it)"
else
  root="$(mktemp -d /var/tmp/sentri-rootfs.XXXXXX)"
  trap 'rm -rf "$root"' EXIT
  log "debootstrap --variant=minbase bookworm from $MIRROR (a few minutes)"
  debootstrap --variant=minbase \
    --include=python3.11,python3-venv,ca-certificates,tini,libglib2.0-0,libgomp1 \
    bookworm "$root" "$MIRROR" >/var/tmp/sentri-debootstrap.log 2>&1 \
    || { tail -30 /var/tmp/sentri-debootstrap.log >&2; exit 1; }
  cat >"$root/etc/apt/sources.list" <<SRC
deb $MIRROR bookworm main
deb $MIRROR bookworm-updates main
deb $SECURITY_MIRROR bookworm-security main
SRC
  # No caches, no docs, no apt lists in the image.
  rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb \
         "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/var/log/*
  # The official python image puts python3 on /usr/local/bin; make both paths work.
  ln -sf /usr/bin/python3.11 "$root/usr/local/bin/python3"
  log "podman import -> $BASE"
  tar -C "$root" -c . | "$ENGINE" import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["/bin/bash"]' - "$BASE" >/dev/null
fi

if [ "${FORCE:-0}" != 1 ] && "$ENGINE" image exists "$REDIS" 2>/dev/null; then
  log "$REDIS exists"
else
  log "building $REDIS (Debian's redis-server on the base)"
  printf '%s\n' \
    "FROM $BASE" \
    'RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends redis-server redis-tools && rm -rf /var/lib/apt/lists/* /usr/share/doc/* && install -d -o redis -g redis -m 0750 /data' \
    'VOLUME /data' \
    'USER redis' \
    'CMD ["redis-server", "--protected-mode", "yes"]' \
  | "$ENGINE" build -q -t "$REDIS" -f - . >/dev/null
fi
"$ENGINE" images --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep -E 'sentri-(base|redis)' >&2
