#!/usr/bin/env bash
# Start the Sentri edge agent with the project's Python, passing every argument through.
# The seed's one-liner works as it did (enrolment through the gateway):
#
#   edge_agent/start_camera_client.sh --server http://MAIN_SERVER_IP:5002 --client-id camera_machine_1
#   edge_agent/start_camera_client.sh --server 10.0.0.2 --client-id garage   (ingest directly)
#   edge_agent/start_camera_client.sh --source demo:bus --source demo:zidane
#   edge_agent/start_camera_client.sh --discover-only
#
# Python is looked up in this order: $SENTRI_PYTHON, $VIRTUAL_ENV, the checkout's
# .venv, then python3 on PATH (which must have the project installed).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"

if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]] && [[ $# -eq 1 ]]; then
    echo "usage: $(basename "$0") [sentri-edge options]"
    echo "Runs the Sentri edge agent (python -m edge_agent). Its options:"
    echo
fi

python=""
for candidate in "${SENTRI_PYTHON:-}" "${VIRTUAL_ENV:+$VIRTUAL_ENV/bin/python}" "$root/.venv/bin/python"; do
    if [[ -n "$candidate" && -x "$candidate" ]]; then
        python="$candidate"
        break
    fi
done
if [[ -z "$python" ]]; then
    python="$(command -v python3 || true)"
fi
if [[ -z "$python" ]]; then
    echo "start_camera_client.sh: no Python found; run 'make venv' in $root or set SENTRI_PYTHON" >&2
    exit 127
fi
if ! PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}" "$python" -c "import edge_agent, zmq, cv2" 2>/dev/null; then
    echo "start_camera_client.sh: $python lacks the agent's packages; run 'make venv' in $root" >&2
    exit 1
fi

export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
exec "$python" -m edge_agent "$@"
