"""GET /api/agents/bootstrap: what an edge agent needs to join, asked anonymously.

``sentri-edge --server http://GATEWAY:5002`` calls this first.  The answer holds only
public facts: ingest's frame and control endpoints, ingest's CURVE *public* key (and
its fingerprint) and the versions.  Nothing here lets an agent in: its own key still
waits as pending until an administrator approves it (``api/agents.py``).  The agent
pins the key on first use (``edge_agent/enrol.py``; trust model in SECURITY.md).

* The host advertised is ``gateway.public_ingest_host``, else the host the agent used
  to reach the gateway (the request's Host header).  Ports, bind host, security mode
  and key come from what ingest published in Redis (``shared.ingest_info``), else from
  the ``ingest`` config section and ``<state_dir>/keys/ingest.public``;
  ``gateway.ingest_public_key`` overrides the key.
* When ingest binds only the loopback and the advertised host is not a loopback one, a
  remote agent could never reach it: the answer says so (``warning``) and it is logged.
* Rate-limited per client IP (``gateway.bootstrap_per_minute``, counted in Redis so
  every gateway replica shares the budget); ``gateway.bootstrap_enabled: false`` → 404.
"""

from __future__ import annotations

import ipaddress
import logging
import re
from importlib import metadata
from pathlib import Path

from fastapi import APIRouter, HTTPException, Request
from prometheus_client import Counter
from pydantic import BaseModel, Field

from services.gateway.deps import client_ip, get_state
from services.gateway.models import error_response
from shared.ingest_info import read_ingest_info
from shared.logs import BurstLimiter
from shared.protocol import PROTOCOL_VERSION
from shared.security import fingerprint, read_public_key

log = logging.getLogger(__name__)

router = APIRouter(prefix="/api/agents", tags=["agents"])

BOOTSTRAP_REQUESTS = Counter(
    "sentri_gateway_bootstrap_requests_total",
    "Anonymous agent bootstrap requests by outcome: ok, disabled, rate_limited, bad_host, "
    "no_key (ingest's public key not found), no_ports.",
    ["outcome"],
)

_LOOPBACK_NAMES = ("localhost", "localhost.localdomain")
_HOST = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]{1,253})(?::\d{1,5})?$")
_burst = BurstLimiter(60.0)


class IngestEndpoints(BaseModel):
    frame_endpoint: str = Field(description="Where the agent PUSHes frames, tcp://HOST:PORT.")
    control_endpoint: str = Field(description="Ingest's control ROUTER, tcp://HOST:PORT.")
    security: str = Field(description="`curve` (encrypted, keys approved) or `insecure`.")
    public_key: str | None = Field(
        None, description="Ingest's CURVE public key (z85); pin it and compare the fingerprint."
    )
    fingerprint: str | None = Field(None, description="SHA-256 fingerprint of public_key.")
    loopback_only: bool = Field(description="Ingest binds only the loopback interface.")
    warning: str | None = Field(None, description="Why a remote agent may fail to connect.")


class Bootstrap(BaseModel):
    version: str = Field(description="Sentri version of this gateway.")
    protocol_version: int = Field(description="Wire protocol version ingest speaks.")
    ingest: IngestEndpoints


def _version() -> str:
    try:
        return metadata.version("sentri")
    except metadata.PackageNotFoundError:
        return "0+unknown"


def _is_loopback(host: str) -> bool:
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _request_host(request: Request) -> str:
    """The host part of the Host header (validated: it is echoed to the agent)."""
    raw = request.headers.get("host", "")
    m = _HOST.match(raw)
    if not m:
        BOOTSTRAP_REQUESTS.labels("bad_host").inc()
        raise HTTPException(400, "missing or invalid Host header")
    return m.group(1)


def _ingest_key(request: Request, published: str | None) -> str | None:
    gw = get_state(request)
    cfg = gw.settings
    if published and not cfg.gateway.ingest_public_key:
        return published
    source = cfg.gateway.ingest_public_key or str(
        Path(cfg.general.state_dir).expanduser() / "keys" / "ingest.public"
    )
    try:
        return read_public_key(source)
    except (OSError, ValueError) as exc:
        ok, suppressed = _burst.should_log("no_key")
        if ok:
            log.error(
                "bootstrap: ingest's public key not found; set gateway.ingest_public_key",
                extra={"source": source, "error": str(exc), "suppressed": suppressed},
            )
        return None


def _rate_limited(request: Request) -> bool:
    """A fixed one-minute window per client IP, counted in Redis."""
    gw = get_state(request)
    key = gw.keys.k(f"bootstrap_rate:{client_ip(request)}")
    count = gw.r.incr(key)
    if count == 1 or gw.r.ttl(key) == -1:  # -1: a window that lost its expiry
        gw.r.expire(key, 60)
    return count > gw.settings.gateway.bootstrap_per_minute


@router.get(
    "/bootstrap",
    response_model=Bootstrap,
    summary="Enrolment facts for an edge agent (anonymous)",
    responses={
        404: error_response("Enrolment is turned off (gateway.bootstrap_enabled)."),
        429: error_response("Too many requests from this address."),
        503: error_response("Ingest's public key is not available to the gateway."),
    },
)
def bootstrap(request: Request) -> Bootstrap:
    """Ingest's reachable endpoints and CURVE public key, for `sentri-edge --server
    http://GATEWAY`. No authentication: everything here is public. The agent pins the
    key on first use; an administrator then approves the agent's own key (compare its
    fingerprint with the one the agent printed)."""
    gw = get_state(request)
    settings = gw.settings
    if not settings.gateway.bootstrap_enabled:
        BOOTSTRAP_REQUESTS.labels("disabled").inc()
        raise HTTPException(404, "agent enrolment is turned off (gateway.bootstrap_enabled)")
    if _rate_limited(request):
        BOOTSTRAP_REQUESTS.labels("rate_limited").inc()
        raise HTTPException(429, "too many bootstrap requests", headers={"Retry-After": "60"})
    host = settings.gateway.public_ingest_host or _request_host(request)
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    info = read_ingest_info(gw.r, gw.keys)
    if info is not None:  # what ingest itself published: the ports it really bound
        bind_host, frame_port, control_port = info.bind_host, info.frame_port, info.control_port
        secure = info.public_key is not None
    else:
        ing = settings.ingest
        bind_host, frame_port, control_port = ing.bind_host, ing.frame_port, ing.control_port
        secure = not ing.insecure
    key = _ingest_key(request, info.public_key if info else None) if secure else None
    if secure and key is None:
        BOOTSTRAP_REQUESTS.labels("no_key").inc()
        raise HTTPException(503, "ingest's public key is not available to the gateway")
    if not frame_port or not control_port:
        BOOTSTRAP_REQUESTS.labels("no_ports").inc()
        raise HTTPException(503, "ingest's ports are not known yet (random ports, not published)")
    loopback_only = _is_loopback(bind_host)
    warning = None
    if loopback_only and not _is_loopback(host):
        warning = (
            f"ingest listens on {bind_host} only: an agent on another machine cannot "
            f"reach {host}:{frame_port}. Set ingest.bind_host=0.0.0.0 "
            "(SENTRI_INGEST__BIND_HOST) and restart ingest."
        )
        ok, suppressed = _burst.should_log("loopback")
        if ok:
            log.warning(
                "bootstrap: " + warning,
                extra={"client_ip": client_ip(request), "suppressed": suppressed},
            )
    BOOTSTRAP_REQUESTS.labels("ok").inc()
    log.info(
        "agent bootstrap served",
        extra={"client_ip": client_ip(request), "advertised_host": host},
    )
    return Bootstrap(
        version=_version(),
        protocol_version=PROTOCOL_VERSION,
        ingest=IngestEndpoints(
            frame_endpoint=f"tcp://{host}:{frame_port}",
            control_endpoint=f"tcp://{host}:{control_port}",
            security="curve" if secure else "insecure",
            public_key=key,
            fingerprint=fingerprint(key) if key else None,
            loopback_only=loopback_only,
            warning=warning,
        ),
    )
