"""``python -m edge_agent``: the Sentri edge agent (same as ``sentri-edge``)."""

from __future__ import annotations

from edge_agent.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
