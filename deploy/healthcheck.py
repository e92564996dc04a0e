#!/usr/bin/env python3
"""Container health probe for Sentri images (stdlib only, so it works in every image).

    sentri-healthcheck [URL]

Exit 0 when URL answers HTTP 2xx within the timeout, else 1 with the reason on stderr.
Without URL: ``HEALTHCHECK_URL`` if set; else the Prometheus endpoint of a worker or
ingest (``SENTRI_GENERAL__METRICS_PORT``); else the gateway's ``/healthz`` on
``SENTRI_GATEWAY__PORT`` (default 5002).
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping

TIMEOUT_S = 3.0


def default_url(env: Mapping[str, str]) -> str:
    """The URL to probe when none is given on the command line."""
    if env.get("HEALTHCHECK_URL"):
        return env["HEALTHCHECK_URL"]
    metrics_port = env.get("SENTRI_GENERAL__METRICS_PORT", "").strip()
    if metrics_port and metrics_port != "0":
        return f"http://127.0.0.1:{metrics_port}/metrics"
    gateway_port = env.get("SENTRI_GATEWAY__PORT", "").strip() or "5002"
    return f"http://127.0.0.1:{gateway_port}/healthz"


def probe(url: str, timeout: float = TIMEOUT_S) -> str | None:
    """None when healthy, otherwise a one-line reason."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            if 200 <= resp.status < 300:
                return None
            return f"HTTP {resp.status}"
    except urllib.error.HTTPError as exc:
        return f"HTTP {exc.code}"
    except (urllib.error.URLError, OSError) as exc:
        return f"unreachable: {getattr(exc, 'reason', exc)}"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] in ("-h", "--help"):
        print(__doc__.strip())
        return 0
    url = args[0] if args else default_url(os.environ)
    reason = probe(url)
    if reason is None:
        return 0
    print(f"unhealthy: {url}: {reason}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
