#!/usr/bin/env bash
# Build sentri:latest and sentri-edge:latest with podman (or docker buildx) from the
# air-gapped Debian base (scripts/build-base-image.sh), without any registry.
#   PYTHON_IMAGE   base image (default localhost/sentri-base:bookworm)
#   TORCH_INDEX_URL  extra index for CPU torch (default empty: pip's own indexes)
#   HOST_CA        CA bundle pip must trust (default the host's, if present): mounted
#                  read-only at /run/sentri-build/ca.crt for the build only
#   LOCAL_WHEELS   space-separated host dirs mounted read-only at the same path
#                  (default: /opt/wheels /opt/pypi /opt/pypi-more when present); dirs
#                  with a simple/ index become extra indexes, others find-links.
#   ONLY=central|edge  build one image
set -euo pipefail
cd "$(dirname "$0")/.."
ENGINE="${ENGINE:-podman}"
PYTHON_IMAGE="${PYTHON_IMAGE:-localhost/sentri-base:bookworm}"
TAG="${SENTRI_IMAGE_TAG:-latest}"
HOST_CA="${HOST_CA-/etc/ssl/certs/ca-certificates.crt}"
LOCAL_WHEELS="${LOCAL_WHEELS-/opt/wheels /opt/pypi /opt/pypi-more}"
# OCI images drop HEALTHCHECK; the docker format keeps it.
FORMAT="--format docker"; [ "$ENGINE" = podman ] || FORMAT=""
log() { printf '==> %s\n' "$*" >&2; }

args=(--build-arg "PYTHON_IMAGE=$PYTHON_IMAGE" --build-arg "TORCH_INDEX_URL=${TORCH_INDEX_URL-}")
[ -n "$HOST_CA" ] && [ -s "$HOST_CA" ] && args+=(-v "$HOST_CA:/run/sentri-build/ca.crt:ro")
find_links="" extra=""
for d in $LOCAL_WHEELS; do
  [ -d "$d" ] || continue
  args+=(-v "$d:$d:ro")
  if [ -d "$d/simple" ]; then extra+=" file://$d/simple"; else find_links+=" $d"; fi
done
args+=(--build-arg "PIP_FIND_LINKS=${find_links# }" --build-arg "PIP_EXTRA_INDEX_URL=${extra# }")

if [ "${ONLY:-central}" = central ] || [ -z "${ONLY:-}" ]; then
  log "building sentri:$TAG (torch makes this the long one)"
  nice -n 10 "$ENGINE" build --layers $FORMAT -f deploy/Dockerfile "${args[@]}" -t "localhost/sentri:$TAG" .
fi
if [ "${ONLY:-edge}" = edge ] || [ -z "${ONLY:-}" ]; then
  log "building sentri-edge:$TAG"
  nice -n 10 "$ENGINE" build --layers $FORMAT -f deploy/Dockerfile.edge "${args[@]}" -t "localhost/sentri-edge:$TAG" .
fi
"$ENGINE" images --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep -E '/sentri(-edge)?:' >&2
