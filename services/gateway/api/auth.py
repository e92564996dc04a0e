"""/api/auth: login/logout (session cookie), current user, API tokens, password change."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Depends, HTTPException, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from services.gateway import audit, metrics
from services.gateway.auth import SESSION_COOKIE, PasswordCheckBusy, Principal
from services.gateway.deps import (
    client_ip,
    get_state,
    host_allowed,
    require_session_user,
    require_user,
    same_origin,
)
from services.gateway.models import (
    NOT_FOUND,
    LoginRequest,
    Me,
    Ok,
    PasswordChange,
    TokenCreate,
    TokenCreated,
    TokenInfo,
    error_response,
)
from services.gateway.roles import role_at_least

log = logging.getLogger(__name__)

router = APIRouter(prefix="/api/auth", tags=["auth"])


@router.post(
    "/login",
    response_model=Me,
    responses={
        401: {"description": "bad credentials"},
        429: {"description": "rate limited"},
        503: {"description": "too many password checks waiting"},
    },
)
async def login(body: LoginRequest, request: Request, response: Response) -> Me | JSONResponse:
    """Password login; sets an HttpOnly, SameSite=Strict session cookie.

    Every attempt is counted before its password is checked (429 past
    ``login_max_failures`` per IP or user name within ``login_window_s``), and password
    checks run on a small executor of their own (503 when too many wait)."""
    gw = get_state(request)
    ip = client_ip(request)
    if not host_allowed(request) or not same_origin(request, required=False):
        # The cookie would be set for a name we do not serve (DNS rebinding) or the
        # form was posted from another site.
        metrics.AUTH_REJECTED.labels("cross_origin").inc()
        raise HTTPException(403, "login refused: foreign host name or origin")
    wait = await run_in_threadpool(gw.auth.count_login_attempt, ip, body.username)
    if wait:
        metrics.LOGIN_ATTEMPTS.labels("rate_limited").inc()
        log.warning("login rate limited", extra={"ip": ip, "retry_after": wait})
        await run_in_threadpool(
            audit.record, request, "login_rate_limited", user=body.username[:64]
        )
        return JSONResponse(
            {"detail": "too many failed logins; try again later"},
            status_code=429,
            headers={"Retry-After": str(wait)},
        )
    try:
        ok = await gw.password_checks.run(gw.auth.verify_password, body.username, body.password)
    except PasswordCheckBusy:
        metrics.LOGIN_ATTEMPTS.labels("busy").inc()
        return JSONResponse(
            {"detail": "too many logins in progress; try again shortly"},
            status_code=503,
            headers={"Retry-After": "1"},
        )
    if not ok:
        metrics.LOGIN_ATTEMPTS.labels("failed").inc()
        log.warning("login failed", extra={"ip": ip, "user": body.username[:64]})
        await run_in_threadpool(audit.record, request, "login_failed", user=body.username[:64])
        raise HTTPException(401, "wrong user name or password")
    await run_in_threadpool(gw.auth.clear_failures, ip, body.username)
    cfg = gw.settings.gateway
    sid = await run_in_threadpool(gw.auth.create_session, body.username, cfg.session_ttl_s)
    _set_session_cookie(response, request, sid)
    metrics.LOGIN_ATTEMPTS.labels("ok").inc()
    log.info("login", extra={"ip": ip, "user": body.username})
    await run_in_threadpool(audit.record, request, "login", user=body.username)
    principal = await run_in_threadpool(gw.auth.session_principal, sid)
    return _me(principal) if principal else Me(user=body.username, via="session")


def _me(principal: Principal) -> Me:
    return Me(
        user=principal.user,
        via=principal.via,
        role=principal.role,
        cameras=principal.scope.patterns,
    )


def _set_session_cookie(response: Response, request: Request, sid: str) -> None:
    cfg = get_state(request).settings.gateway
    response.set_cookie(
        SESSION_COOKIE,
        sid,
        max_age=cfg.session_ttl_s,
        httponly=True,
        samesite="strict",
        secure=cfg.secure_cookies,
        path="/",
    )


@router.post("/logout", response_model=Ok)
def logout(request: Request, response: Response) -> Ok:
    """Ends the session (idempotent; works without one).  Its open websockets and MJPEG
    streams close within ``gateway.credential_recheck_s``."""
    sid = request.cookies.get(SESSION_COOKIE)
    if sid:
        gw = get_state(request)
        principal = gw.auth.session_principal(sid)
        gw.auth.delete_session(sid)
        if principal is not None:
            audit.record(request, "logout", principal=principal)
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")
    return Ok()


@router.get("/me", response_model=Me)
def me(principal: Principal = Depends(require_user)) -> Me:
    """Who you are, with the role and camera scope in force (a token's may be narrower
    than its owner's)."""
    return _me(principal)


@router.post("/password", response_model=Ok)
async def change_password(
    body: PasswordChange,
    request: Request,
    response: Response,
    principal: Principal = Depends(require_session_user),
) -> Ok:
    """Change your own password.  Every other session of yours ends (this one gets a new
    cookie); API tokens keep working."""
    gw = get_state(request)
    try:
        ok = await gw.password_checks.run(
            gw.auth.verify_password, principal.user, body.current_password
        )
    except PasswordCheckBusy:
        raise HTTPException(
            503, "too many password checks in progress", {"Retry-After": "1"}
        ) from None
    if not ok:
        raise HTTPException(403, "current password is wrong")
    await run_in_threadpool(
        gw.auth.set_password, principal.user, body.new_password, end_sessions=True
    )
    old_sid = request.cookies.get(SESSION_COOKIE, "")
    await run_in_threadpool(gw.auth.delete_session, old_sid)
    sid = await run_in_threadpool(
        gw.auth.create_session, principal.user, gw.settings.gateway.session_ttl_s
    )
    _set_session_cookie(response, request, sid)
    await run_in_threadpool(audit.record, request, "password_changed", principal=principal)
    return Ok()


@router.get("/tokens", response_model=list[TokenInfo])
def list_tokens(request: Request, principal: Principal = Depends(require_user)) -> list[dict]:
    """Your API tokens (administrators: everyone's)."""
    auth = get_state(request).auth
    return auth.list_tokens(None if principal.role == "admin" else principal.user)


@router.post(
    "/tokens",
    response_model=TokenCreated,
    status_code=201,
    responses={403: error_response("A token may not be wider than its owner.")},
)
def create_token(
    body: TokenCreate, request: Request, principal: Principal = Depends(require_session_user)
) -> TokenCreated:
    """Create an API token; the token itself is in this response only.  It carries your
    role and camera scope, or the narrower ``role``/``cameras`` given here."""
    if body.role is not None and not role_at_least(principal.role, body.role):
        raise HTTPException(403, f"role: a token cannot have a wider role than {principal.role}")
    if body.cameras is not None and not principal.scope.covers(body.cameras):
        raise HTTPException(403, "cameras: a token cannot see cameras outside your scope")
    token, meta = get_state(request).auth.create_token(
        body.name, principal.user, body.role, body.cameras
    )
    log.info("api token created", extra={"token_id": meta["id"], "user": principal.user})
    audit.record(
        request, "token_created", principal=principal, target=meta["id"],
        name=body.name, role=body.role, cameras=body.cameras,
    )  # fmt: skip
    return TokenCreated(token=token, **meta)


@router.delete("/tokens/{token_id}", response_model=Ok, responses=NOT_FOUND)
def revoke_token(
    token_id: str, request: Request, principal: Principal = Depends(require_session_user)
) -> Ok:
    """Revoke one of your tokens (administrators: anyone's).  Streams it opened close
    within ``gateway.credential_recheck_s``."""
    auth = get_state(request).auth
    meta = auth.get_token(token_id[:64])
    if meta is None or (principal.role != "admin" and meta["user"] != principal.user):
        raise HTTPException(404, "no such token")
    auth.revoke_token(token_id[:64])
    log.info("api token revoked", extra={"token_id": token_id[:64], "user": principal.user})
    audit.record(
        request, "token_revoked", principal=principal, target=token_id[:64], owner=meta["user"]
    )
    return Ok()
