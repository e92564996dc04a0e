#!/usr/bin/env bash
# Build steps of the edge-agent image (deploy/Dockerfile.edge runs exactly this).
# tests/deploy/test_images.py runs it outside Docker in a temporary venv, so the slim
# image is proven to install and start without torch or dlib.
# Usage: VENV=/opt/sentri/venv bash scripts/edge_image_steps.sh
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:?set VENV to the virtual environment to create}"
EXTRAS=edge VENV="$VENV" bash scripts/install.sh

printf '\n==> checking the edge install is slim and starts\n'
"$VENV/bin/python" - <<'PY'
import importlib.util
import sys

SERVER_ONLY = ("torch", "torchvision", "ultralytics", "dlib", "face_recognition",
               "onnxruntime", "fastapi", "redis")
found = [m for m in SERVER_ONLY if importlib.util.find_spec(m) is not None]
if found:
    sys.exit(f"edge install pulled in server-side packages: {', '.join(found)}")
PY
"$VENV/bin/sentri-edge" --help >/dev/null
echo "edge image steps ok"
