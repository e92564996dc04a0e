"""Request-scoped dependencies: the app state and authentication."""

from __future__ import annotations

import functools
import ipaddress
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import redis
from fastapi import Depends, HTTPException, Request, WebSocket
from starlette.requests import HTTPConnection

from services.gateway import metrics
from services.gateway.auth import SESSION_COOKIE, AuthStore, PasswordChecks, Principal
from services.gateway.config import GatewaySettings
from services.gateway.roles import role_at_least
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
    if cfg.allowed_hosts:
        return frozenset(n.lower().strip("[]") for n in cfg.allowed_hosts)
    return _default_host_names(cfg.host)


@functools.lru_cache(maxsize=8)
def _default_host_names(bind: str) -> frozenset[str]:
    """The bind address, localhost and 127.0.0.1; bound to every address (0.0.0.0,
    ::), also this machine's host name and the addresses it resolves to."""
    names = {bind.lower().strip("[]"), "localhost", "127.0.0.1"}
    if bind in ("0.0.0.0", "::", ""):
        host = socket.gethostname()
        names.update({host.lower(), socket.getfqdn().lower()})
        try:
            names.update(str(info[4][0]) for info in socket.getaddrinfo(host, None))
        except OSError:
            pass
    return frozenset(names)


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
    # Behind a TLS-terminating proxy the gateway sees plain HTTP: secure_cookies says
    # the browser is on HTTPS.
    https = conn.url.scheme in ("https", "wss") or get_state(conn).settings.gateway.secure_cookies
    scheme = "https" if https else "http"
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
    """The principal behind a request's bearer token or session cookie, with its role
    and camera scope read now (a deleted or disabled account, a revoked token or an
    ended session gives None at once)."""
    gw = get_state(conn)
    header = conn.headers.get("authorization", "")
    if header:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            return None
        return gw.auth.token_principal(token.strip())
    sid = conn.cookies.get(SESSION_COOKIE)
    if sid:
        return gw.auth.session_principal(sid)
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


def require_role(minimum: str) -> Callable[[Request], Principal]:
    """A dependency: :func:`require_user`, and a role at least ``minimum`` (403 else)."""

    def dependency(request: Request) -> Principal:
        principal = require_user(request)
        if not role_at_least(principal.role, minimum):
            metrics.AUTH_REJECTED.labels(f"not_{minimum}").inc()
            raise HTTPException(403, f"{minimum} role required")
        return principal

    dependency.__name__ = f"require_{minimum}"
    return dependency


require_operator = require_role("operator")


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


# ------------------------------------------------------------------ camera scope
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


class CameraGuard:
    """What one request may see and change, from its principal's role and camera scope.

    Routes get it from :func:`camera_scope` and use it for everything camera-shaped:
    single items out of scope answer 404 exactly like unknown ones (ids do not leak),
    lists are filtered.
    """

    def __init__(self, principal: Principal) -> None:
        self.principal = principal
        self.scope = principal.scope

    @property
    def everything(self) -> bool:
        return self.scope.everything

    def allows(self, camera_id: str) -> bool:
        return self.scope.allows(camera_id)

    def allows_client(self, client_id: str) -> bool:
        return self.scope.allows_client(client_id)

    def camera(self, camera_id: str, *, write: bool = False) -> None:
        """404 when ``camera_id`` is out of scope; 403 when ``write`` and the role is
        read only (checked after the scope, so a viewer learns nothing of other ids)."""
        if not self.scope.allows(camera_id):
            metrics.AUTH_REJECTED.labels("out_of_scope").inc()
            raise HTTPException(404, f"unknown camera {camera_id!r}")
        if write:
            self.require_write()

    def client(self, client_id: str) -> None:
        if not self.scope.allows_client(client_id):
            metrics.AUTH_REJECTED.labels("out_of_scope").inc()
            raise HTTPException(404, f"unknown client {client_id!r}")

    def require_write(self) -> None:
        if not role_at_least(self.principal.role, "operator"):
            metrics.AUTH_REJECTED.labels("read_only").inc()
            raise HTTPException(403, "operator role required (viewers are read only)")

    def cameras(self, rows: list[dict[str, Any]], key: str = "camera_id") -> list[dict[str, Any]]:
        """Only the rows whose camera is in scope."""
        if self.everything:
            return rows
        return [row for row in rows if self.scope.allows(str(row.get(key, "")))]

    def ids(self, camera_ids: Iterable[str]) -> list[str]:
        return [c for c in camera_ids if self.scope.allows(c)]


def camera_scope(request: Request, principal: Principal = Depends(require_user)) -> CameraGuard:
    """THE enforcement point for camera data: every route that takes or returns a
    camera's data depends on this (tests/services/gateway/test_scope.py checks it).

    A ``camera_id``/``client_id`` path parameter out of scope is a 404 before the route
    runs; writes need the operator role.  Routes filter their lists through the guard
    and check body-borne camera ids with :meth:`CameraGuard.camera`.
    """
    guard = CameraGuard(principal)
    if "camera_id" in request.path_params:
        guard.camera(str(request.path_params["camera_id"]))
    if "client_id" in request.path_params:
        guard.client(str(request.path_params["client_id"]))
    if request.method not in SAFE_METHODS:
        guard.require_write()
    return guard
