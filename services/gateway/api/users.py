"""/api/users: account management (administrators only) and /api/audit.

Every change is recorded in the audit trail.  A new password or disabling ends the
user's sessions at once (open websockets and MJPEG streams close within
``gateway.credential_recheck_s``); deleting also deletes the user's API tokens.  The
last enabled administrator cannot be deleted, disabled or demoted (409).
"""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request

from services.gateway import audit
from services.gateway.auth import AccountError, Principal
from services.gateway.deps import get_state, require_admin
from services.gateway.models import (
    NOT_FOUND,
    USERNAME_PATTERN,
    AuditPage,
    Ok,
    UserCreate,
    UserInfo,
    UserUpdate,
    error_response,
)

log = logging.getLogger(__name__)

router = APIRouter(tags=["users"], dependencies=[Depends(require_admin)])

Username = Annotated[str, Path(min_length=1, max_length=64, pattern=USERNAME_PATTERN)]
CONFLICT = {409: error_response("The name is taken, or the change would leave no administrator.")}


def _account_call(fn, *args, **kw):
    try:
        return fn(*args, **kw)
    except AccountError as exc:
        raise HTTPException(exc.status, exc.message) from None


@router.get("/api/users", response_model=list[UserInfo], summary="List accounts")
def list_users(request: Request) -> list[dict]:
    return get_state(request).auth.list_users()


@router.post(
    "/api/users", response_model=UserInfo, status_code=201, responses=CONFLICT,
    summary="Create an account",
)  # fmt: skip
def create_user(
    body: UserCreate, request: Request, principal: Principal = Depends(require_admin)
) -> dict:
    gw = get_state(request)
    user = _account_call(gw.auth.create_user, body.username, body.password, body.role, body.cameras)
    audit.record(
        request, "user_created", principal=principal, target=body.username,
        role=body.role, cameras=body.cameras,
    )  # fmt: skip
    return user


@router.get("/api/users/{name}", response_model=UserInfo, responses=NOT_FOUND)
def get_user(name: Username, request: Request) -> dict:
    for user in get_state(request).auth.list_users():
        if user["username"] == name:
            return user
    raise HTTPException(404, f"no user named {name!r}")


@router.patch(
    "/api/users/{name}", response_model=UserInfo, responses={**NOT_FOUND, **CONFLICT},
    summary="Change an account (password, role, cameras, disabled)",
)  # fmt: skip
def update_user(
    name: Username,
    body: UserUpdate,
    request: Request,
    principal: Principal = Depends(require_admin),
) -> dict:
    gw = get_state(request)
    user = _account_call(
        gw.auth.update_user,
        name,
        password=body.password,
        role=body.role,
        cameras=body.cameras,
        disabled=body.disabled,
    )
    changed = body.model_dump(exclude_none=True, exclude={"password"})
    if body.password is not None:
        changed["password"] = "changed"
    audit.record(request, "user_updated", principal=principal, target=name, **changed)
    return user


@router.delete(
    "/api/users/{name}", response_model=Ok, responses={**NOT_FOUND, **CONFLICT},
    summary="Delete an account and its API tokens",
)  # fmt: skip
def delete_user(
    name: Username, request: Request, principal: Principal = Depends(require_admin)
) -> Ok:
    revoked = _account_call(get_state(request).auth.delete_user, name)
    audit.record(request, "user_deleted", principal=principal, target=name, tokens_revoked=revoked)
    return Ok()


@router.get("/api/audit", response_model=AuditPage, tags=["audit"], summary="Audit trail")
def get_audit(
    request: Request,
    action: str | None = Query(None, max_length=64, description="Only this action."),
    user: str | None = Query(None, max_length=64, description="Only this user."),
    cursor: str | None = Query(
        None, pattern=r"^\d{1,15}-\d{1,10}$", description="`next_cursor` of the previous page."
    ),
    limit: int = Query(100, ge=1, le=1000),
) -> AuditPage:
    """Newest first: logins (with source IP), account changes, token creation and
    revocation, agent key decisions, processing and stream toggles, face gallery changes."""
    records, next_cursor = audit.read(
        get_state(request), limit=limit, cursor=cursor, action=action, user=user
    )
    return AuditPage(records=records, next_cursor=next_cursor)
