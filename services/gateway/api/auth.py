"""/api/auth: login/logout (session cookie), current user, API tokens, password change."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Depends, HTTPException, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from services.gateway import metrics
from services.gateway.auth import SESSION_COOKIE, PasswordCheckBusy, Principal
from services.gateway.deps import client_ip, get_state, require_session_user, require_user
from services.gateway.models import (
    NOT_FOUND,
    LoginRequest,
    Me,
    Ok,
    PasswordChange,
    TokenCreate,
    TokenCreated,
    TokenInfo,
)

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
    wait = await run_in_threadpool(gw.auth.count_login_attempt, ip, body.username)
    if wait:
        metrics.LOGIN_ATTEMPTS.labels("rate_limited").inc()
        log.warning("login rate limited", extra={"ip": ip, "retry_after": wait})
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
        raise HTTPException(401, "wrong user name or password")
    await run_in_threadpool(gw.auth.clear_failures, ip, body.username)
    cfg = gw.settings.gateway
    sid = await run_in_threadpool(gw.auth.create_session, body.username, cfg.session_ttl_s)
    response.set_cookie(
        SESSION_COOKIE,
        sid,
        max_age=cfg.session_ttl_s,
        httponly=True,
        samesite="strict",
        secure=cfg.secure_cookies,
        path="/",
    )
    metrics.LOGIN_ATTEMPTS.labels("ok").inc()
    log.info("login", extra={"ip": ip, "user": body.username})
    return Me(user=body.username, via="session")


@router.post("/logout", response_model=Ok)
def logout(request: Request, response: Response) -> Ok:
    """Ends the session (idempotent; works without one)."""
    sid = request.cookies.get(SESSION_COOKIE)
    if sid:
        get_state(request).auth.delete_session(sid)
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")
    return Ok()


@router.get("/me", response_model=Me)
def me(principal: Principal = Depends(require_user)) -> Me:
    return Me(user=principal.user, via=principal.via)


@router.post("/password", response_model=Ok)
def change_password(
    body: PasswordChange, request: Request, principal: Principal = Depends(require_session_user)
) -> Ok:
    gw = get_state(request)
    if not gw.auth.verify_password(principal.user, body.current_password):
        raise HTTPException(403, "current password is wrong")
    gw.auth.set_password(principal.user, body.new_password)
    return Ok()


@router.get("/tokens", response_model=list[TokenInfo])
def list_tokens(request: Request, _: Principal = Depends(require_user)) -> list[dict]:
    return get_state(request).auth.list_tokens()


@router.post("/tokens", response_model=TokenCreated, status_code=201)
def create_token(
    body: TokenCreate, request: Request, principal: Principal = Depends(require_session_user)
) -> TokenCreated:
    """Create an API token; the token itself is in this response only."""
    token, meta = get_state(request).auth.create_token(body.name, principal.user)
    log.info("api token created", extra={"token_id": meta["id"], "user": principal.user})
    return TokenCreated(token=token, **meta)


@router.delete("/tokens/{token_id}", response_model=Ok, responses=NOT_FOUND)
def revoke_token(
    token_id: str, request: Request, principal: Principal = Depends(require_session_user)
) -> Ok:
    if not get_state(request).auth.revoke_token(token_id[:64]):
        raise HTTPException(404, "no such token")
    log.info("api token revoked", extra={"token_id": token_id[:64], "user": principal.user})
    return Ok()
