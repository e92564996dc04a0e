#!/usr/bin/env bash
# `docker compose` when a Docker Engine with the compose plugin is here; otherwise
# docker-compose against podman's Docker-API socket (scripts/ensure_deploy_tools.sh
# installs and starts what that needs). Used by `make up/down/logs/ps/scale-detector`.
# With podman, `up --build` builds the images with scripts/build-images.sh (podman build:
# air-gapped base, local wheels, host CA mounted for the build only), then starts them.
set -euo pipefail
cd "$(dirname "$0")/.."
files=(-f deploy/docker-compose.yml)
[ -n "${COMPOSE_FILES:-}" ] && read -r -a files <<<"$COMPOSE_FILES"
export COMPOSE_PROJECT_NAME="${COMPOSE_PROJECT_NAME:-sentri}"

if docker compose version >/dev/null 2>&1 && docker info >/dev/null 2>&1 \
   && ! docker info 2>/dev/null | grep -qi podman; then
  exec docker compose "${files[@]}" "$@"
fi

# Podman: the tools, the socket, the health checker, then the Debian-built images.
eval "$(bash scripts/ensure_deploy_tools.sh | tail -1)"
export PYTHON_IMAGE="${PYTHON_IMAGE:-localhost/sentri-base:bookworm}"
export REDIS_IMAGE="${REDIS_IMAGE:-localhost/sentri-redis:bookworm}"
args=()
build=0
for a in "$@"; do
  if [ "$a" = --build ]; then build=1; else args+=("$a"); fi
done
if [ "$build" = 1 ]; then
  bash scripts/build-base-image.sh
  bash scripts/build-images.sh
fi
exec docker-compose "${files[@]}" "${args[@]}"
