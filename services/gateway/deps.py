"""Request-scoped dependencies: the app state and authentication."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import redis
from fastapi import HTTPException, Request, WebSocket
from starlette.requests import HTTPConnection

from services.gateway import metrics
from services.gateway.auth import SESSION_COOKIE, AuthStore, Principal
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


def _origin_ok(conn: HTTPConnection) -> bool:
    """Cookie-authenticated writes and websockets must come from our own origin."""
    origin = conn.headers.get("origin")
    if not origin:
        return True
    host = conn.headers.get("host", "")
    return origin.split("://", 1)[-1] == host


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
    if (
        principal.via == "session"
        and request.method not in ("GET", "HEAD", "OPTIONS")
        and not _origin_ok(request)
    ):
        metrics.AUTH_REJECTED.labels("cross_origin").inc()
        raise HTTPException(403, "cross-origin request refused")
    return principal


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
    if principal is None or (principal.via == "session" and not _origin_ok(ws)):
        return None
    return principal
