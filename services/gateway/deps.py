"""Request-scoped dependencies: the app state and authentication."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import redis
from fastapi import HTTPException, Request, WebSocket
from starlette.requests import HTTPConnection

from services.gateway import metrics
from services.gateway.auth import SESSION_COOKIE, AuthStore, PasswordChecks, Principal
from services.gateway.config import GatewaySettings
from shared.keys import Keys

if TYPE_CHECKING:
    from services.gateway.hub import Hub
    from services.gateway.live import LiveFrames


@dataclass
class GatewayState:
    """Everything routes need; one instance per app (``app.state.gw``)."""

    settings: GatewaySettings
    keys: Keys
    r: redis.Redis  # decode_responses=True
    rb: redis.Redis  # binary (snapshots)
    auth: AuthStore
    live: LiveFrames
    password_checks: PasswordChecks
    hub: Hub | None = None
    extras: dict = field(default_factory=dict)


def get_state(conn: HTTPConnection) -> GatewayState:
    return conn.app.state.gw


def client_ip(conn: HTTPConnection) -> str:
    return conn.client.host if conn.client else "unknown"


def is_loopback(conn: HTTPConnection) -> bool:
    try:
        return ipaddress.ip_address(client_ip(conn)).is_loopback
    except ValueError:
        return False


def _split_host(value: str) -> tuple[str, int | None]:
    """``Host`` header -> (lower-case host name, port or None); ("", None) when malformed."""
    try:
        parts = urlsplit(f"//{value}")
        return (parts.hostname or "").lower(), parts.port
    except ValueError:
        return "", None


def allowed_host_names(settings: GatewaySettings) -> frozenset[str]:
    cfg = settings.gateway
    names = cfg.allowed_hosts or [cfg.host, "localhost", "127.0.0.1"]
    return frozenset(n.lower().strip("[]") for n in names)


def host_allowed(conn: HTTPConnection) -> bool:
    """The ``Host`` the browser used is one of ``gateway.allowed_hosts`` (DNS rebinding:
    a foreign name pointing at this address is refused)."""
    host, _ = _split_host(conn.headers.get("host", ""))
    return bool(host) and host in allowed_host_names(get_state(conn).settings)


def same_origin(conn: HTTPConnection, *, required: bool = True) -> bool:
    """The request's ``Origin`` (else ``Referer``) has exactly this server's scheme, host
    and port.  Without either header: ``not required``."""
    source = conn.headers.get("origin") or conn.headers.get("referer")
    if not source:
        return not required
    scheme = "https" if conn.url.scheme in ("https", "wss") else "http"
    default = 443 if scheme == "https" else 80
    host, port = _split_host(conn.headers.get("host", ""))
    try:
        src = urlsplit(source)
        src_port = src.port
    except ValueError:
        return False
    return (
        src.scheme == scheme
        and bool(host)
        and (src.hostname or "").lower() == host
        and (src_port or default) == (port or default)
    )


def authenticate(conn: HTTPConnection) -> Principal | None:
    gw = get_state(conn)
    header = conn.headers.get("authorization", "")
    if header:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            return None
        principal = gw.auth.token_principal(token.strip())
        # A deleted account's tokens and sessions stop working at once.
        return principal if principal is not None and principal.role is not None else None
    sid = conn.cookies.get(SESSION_COOKIE)
    if sid:
        user = gw.auth.session_user(sid)
        role = gw.auth.role_of(user) if user else None
        if user and role is not None:
            return Principal(user=user, via="session", role=role)
    return None


def require_user(request: Request) -> Principal:
    """401 without valid credentials; 403 for a cross-origin cookie write."""
    principal = authenticate(request)
    if principal is None:
        why = "bad_credentials" if request.headers.get("authorization") else "missing"
        metrics.AUTH_REJECTED.labels(why).inc()
        raise HTTPException(401, "authentication required", headers={"WWW-Authenticate": "Bearer"})
    if principal.via == "session":
        check_cookie_request(request)
    return principal


def check_cookie_request(request: Request) -> None:
    """Cookie-authenticated requests: the Host must be a configured name, and writes
    must carry a same-origin ``Origin`` (or ``Referer``).  403 otherwise."""
    if not host_allowed(request):
        metrics.AUTH_REJECTED.labels("foreign_host").inc()
        raise HTTPException(403, "host name not allowed (gateway.allowed_hosts)")
    if request.method not in ("GET", "HEAD", "OPTIONS") and not same_origin(request):
        metrics.AUTH_REJECTED.labels("cross_origin").inc()
        raise HTTPException(403, "cross-origin request refused (Origin must be this server)")


def require_admin(request: Request) -> Principal:
    """Like :func:`require_user`, and the account must have the ``admin`` role (403 else)."""
    principal = require_user(request)
    if principal.role != "admin":
        metrics.AUTH_REJECTED.labels("not_admin").inc()
        raise HTTPException(403, "administrator role required")
    return principal


def require_session_user(request: Request) -> Principal:
    """Like :func:`require_user` but API tokens may not manage tokens themselves."""
    principal = require_user(request)
    if principal.via != "session":
        raise HTTPException(403, "API tokens cannot manage tokens; log in")
    return principal


def websocket_user(ws: WebSocket) -> Principal | None:
    principal = authenticate(ws)
    if principal is None:
        return None
    if principal.via == "session" and not (host_allowed(ws) and same_origin(ws, required=False)):
        return None
    return principal
