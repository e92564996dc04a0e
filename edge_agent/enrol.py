"""Enrolment through the gateway: where ingest is and which key it has (pinned on first use).

``sentri-edge --server http://HOST:5002`` asks the gateway's anonymous
``GET /api/agents/bootstrap`` for ingest's frame and control endpoints and ingest's
CURVE public key.  The answer is not trusted blindly:

* The first key seen for a gateway is pinned in the agent's key dir
  (``pinned-ingest-<gateway>.public``, trust on first use).  Later answers must carry
  the same key; a different key stops the agent with :class:`KeyChangedError`, whose
  message says why and how to fix it (delete the pinned file, or pass ``--server-key``).
* ``--server-key`` pins explicitly and takes precedence over what the gateway says.

Only the endpoints come from the gateway unchecked: a wrong endpoint cannot
impersonate ingest, because the CURVE handshake proves ingest holds the pinned key.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from edge_agent import metrics

log = logging.getLogger(__name__)

BOOTSTRAP_PATH = "/api/agents/bootstrap"
MAX_BODY = 64 * 1024
_TCP = re.compile(r"^tcp://(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):(\d{1,5})$")
_Z85 = re.compile(r"^[0-9A-Za-z.\-:+=^!/*?&<>()\[\]{}@%$#]{40}$")


class EnrolError(RuntimeError):
    """The gateway cannot enrol this agent (and retrying will not help)."""


class KeyChangedError(EnrolError):
    """Ingest's key differs from the one pinned on first use."""


class GatewayUnavailable(RuntimeError):
    """The gateway did not answer usefully this time (retry later)."""


@dataclass(frozen=True)
class Bootstrap:
    frame_endpoint: str
    control_endpoint: str
    #: ingest's CURVE public key (z85), None when ingest runs insecure (plaintext).
    public_key: str | None
    version: str
    warning: str | None = None


def _endpoint(value: object, name: str) -> str:
    if not isinstance(value, str) or not (m := _TCP.match(value)) or not 1 <= int(m[2]) <= 65535:
        raise GatewayUnavailable(f"bootstrap answer has no valid {name}")
    return value


def parse_bootstrap(body: bytes) -> Bootstrap:
    """Validate the gateway's JSON answer (untrusted input)."""
    try:
        data = json.loads(body)
    except ValueError:
        raise GatewayUnavailable("bootstrap answer is not JSON") from None
    if not isinstance(data, dict) or not isinstance(data.get("ingest"), dict):
        raise GatewayUnavailable("bootstrap answer has no 'ingest' object")
    ing = data["ingest"]
    key = ing.get("public_key")
    security = ing.get("security")
    if security == "curve":
        if not isinstance(key, str) or not _Z85.match(key):
            raise GatewayUnavailable("bootstrap answer has no valid public_key")
    elif security == "insecure":
        key = None
    else:
        raise GatewayUnavailable("bootstrap answer has no valid 'security'")
    warning = ing.get("warning")
    return Bootstrap(
        frame_endpoint=_endpoint(ing.get("frame_endpoint"), "frame_endpoint"),
        control_endpoint=_endpoint(ing.get("control_endpoint"), "control_endpoint"),
        public_key=key,
        version=str(data.get("version", ""))[:64],
        warning=warning[:500] if isinstance(warning, str) else None,
    )


def fetch_bootstrap(gateway_url: str, timeout: float) -> Bootstrap:
    """One request; :class:`GatewayUnavailable` (retry) or :class:`EnrolError` (give up)."""
    url = gateway_url + BOOTSTRAP_PATH
    req = urllib.request.Request(url, headers={"Accept": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 (http/https only)
            body = resp.read(MAX_BODY + 1)
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            raise EnrolError(
                f"{url} answered 404: this gateway does not offer enrolment (turned off with "
                "gateway.bootstrap_enabled, or an older version). Connect to ingest directly: "
                "--server INGEST_HOST --server-key INGEST_PUBLIC_KEY"
            ) from None
        raise GatewayUnavailable(f"HTTP {exc.code} from {url}") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise GatewayUnavailable(f"cannot reach {url}: {reason}") from None
    if len(body) > MAX_BODY:
        raise GatewayUnavailable(f"bootstrap answer from {url} is too large")
    return parse_bootstrap(body)


def wait_for_bootstrap(
    gateway_url: str,
    *,
    timeout: float,
    max_backoff_s: float,
    stop: threading.Event,
    client_id: str,
) -> Bootstrap | None:
    """Ask until the gateway answers (exponential backoff); None if ``stop`` is set."""
    delay = 1.0
    attempt = 0
    while not stop.is_set():
        attempt += 1
        try:
            boot = fetch_bootstrap(gateway_url, timeout)
        except GatewayUnavailable as exc:
            metrics.ENROLMENT_ATTEMPTS.labels("unavailable").inc()
            log.warning(
                "gateway not answering enrolment; retrying",
                extra={"client_id": client_id, "gateway": gateway_url, "error": str(exc),
                       "attempt": attempt, "retry_s": delay},
            )  # fmt: skip
            stop.wait(delay)
            delay = min(delay * 2, max_backoff_s)
            continue
        metrics.ENROLMENT_ATTEMPTS.labels("ok").inc()
        return boot
    return None


def pin_file(key_dir: str | Path, gateway_url: str) -> Path:
    """The pinned-key file for one gateway (its host and port name it)."""
    name = gateway_url.split("://", 1)[1]
    safe = re.sub(r"[^A-Za-z0-9.-]+", "_", name).strip("_")[:100] or "gateway"
    return Path(key_dir) / f"pinned-ingest-{safe}.public"


def check_pin(key_dir: str | Path, gateway_url: str, key: str, client_id: str = "") -> str:
    """Trust on first use: pin ``key`` if nothing is pinned, else insist on the pinned key."""
    from shared.security import fingerprint

    path = pin_file(key_dir, gateway_url)
    try:
        pinned = path.read_text().strip()
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(key + "\n")
        log.warning(
            "ingest key pinned on first use: compare ingest_fingerprint with what "
            "`sentri ingest key` prints on the central host",
            extra={"client_id": client_id, "gateway": gateway_url,
                   "ingest_fingerprint": fingerprint(key), "pin_file": str(path)},
        )  # fmt: skip
        return key
    if pinned == key:
        return key
    raise KeyChangedError(
        f"REFUSING ingest: the key the gateway {gateway_url} reports (fingerprint "
        f"{fingerprint(key)}) is not the one pinned on first use ({fingerprint(pinned)}, in "
        f"{path}). Either ingest's key was regenerated, or someone is impersonating ingest or "
        f"the gateway. If you know the key changed, delete {path} (the new key is pinned on the "
        "next start) or pass --server-key with ingest's new public key."
    )
