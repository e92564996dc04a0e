"""/api/agents/keys: the allow-list of edge agents' CURVE keys (administrators only).

Ingest records every unknown agent key as *pending* (``shared.security.AgentKeyStore``)
and refuses it until an administrator approves it here; a rejected key stays refused
and loses its client-id bindings.  Every decision is logged with the deciding user and
announced on the notify channel so open dashboards refresh.
"""

from __future__ import annotations

import json
import logging
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request

from services.gateway import audit, metrics
from services.gateway.auth import Principal
from services.gateway.deps import GatewayState, get_state, require_admin
from services.gateway.models import (
    FINGERPRINT_PATTERN,
    AgentKey,
    AgentKeyCreate,
    KeyStatus,
    error_response,
)
from shared.security import AgentKeyStore, fingerprint

log = logging.getLogger(__name__)

router = APIRouter(prefix="/api/agents", tags=["agents"])

Fingerprint = Annotated[
    str,
    Path(
        pattern=FINGERPRINT_PATTERN,
        description="Key fingerprint as listed, e.g. `3f2a:9c01:…` (8 groups of 4 hex digits).",
    ),
]


def _store(gw: GatewayState) -> AgentKeyStore:
    return AgentKeyStore(gw.r, gw.keys)


def _model(rec: dict[str, Any], client_ids: list[str] | None = None) -> AgentKey:
    def num(name: str) -> float | None:
        v = rec.get(name)
        return float(v) if isinstance(v, (int, float)) else None

    key = str(rec.get("key", ""))
    return AgentKey(
        fingerprint=str(rec.get("fingerprint") or fingerprint(key)),
        key=key,
        status=rec.get("status") if rec.get("status") in ("pending", "approved", "rejected") else "pending",
        first_seen=num("first_seen"),
        last_seen=num("last_seen"),
        decided_at=num("decided_at"),
        decided_by=rec.get("decided_by") if isinstance(rec.get("decided_by"), str) else None,
        client_ids=client_ids if client_ids is not None else list(rec.get("client_ids") or []),
    )  # fmt: skip


def _bound(gw: GatewayState, key: str) -> list[str]:
    return sorted(c for c, k in gw.r.hgetall(gw.keys.client_keys).items() if k == key)


def _announce(gw: GatewayState, rec: AgentKey) -> None:
    gw.r.publish(
        gw.keys.notify,
        json.dumps(
            {"type": "agent_key_status", "fingerprint": rec.fingerprint, "status": rec.status}
        ),
    )


@router.get("/keys", response_model=list[AgentKey], summary="List agent keys")
def list_keys(
    request: Request,
    status: KeyStatus | None = Query(None, description="Only keys with this status."),
    _: Principal = Depends(require_admin),
) -> list[AgentKey]:
    """Every agent key ingest has seen or an administrator approved; pending ones first,
    then oldest first."""
    gw = get_state(request)
    out = [_model(rec) for rec in _store(gw).list()]
    if status:
        out = [k for k in out if k.status == status]
    return sorted(out, key=lambda k: (k.status != "pending", k.first_seen or 0))


def _decide(request: Request, fp: str, status: KeyStatus, principal: Principal) -> AgentKey:
    gw = get_state(request)
    store = _store(gw)
    key = store.resolve(fp)
    if key is None or store.get(key) is None:
        raise HTTPException(404, f"no agent key with fingerprint {fp}")
    rec = store.set_status(key, status, decided_by=principal.user)
    model = _model(rec, _bound(gw, key))
    metrics.AGENT_KEY_DECISIONS.labels(status).inc()
    log.warning(
        "agent key %s",
        status,
        extra={"fingerprint": model.fingerprint, "user": principal.user, "via": principal.via},
    )
    _announce(gw, model)
    audit.record(request, f"agent_key_{status}", principal=principal, target=model.fingerprint)
    return model


@router.post(
    "/keys/{fingerprint}/approve",
    response_model=AgentKey,
    summary="Approve an agent key",
    responses={404: error_response("No key with that fingerprint.")},
)
def approve_key(
    request: Request, fingerprint: Fingerprint, principal: Principal = Depends(require_admin)
) -> AgentKey:
    """Allow the agent to connect. It is accepted on its next connection attempt (agents
    retry on their own; no restart of ingest or the agent is needed)."""
    return _decide(request, fingerprint, "approved", principal)


@router.post(
    "/keys/{fingerprint}/reject",
    response_model=AgentKey,
    summary="Reject an agent key",
    responses={404: error_response("No key with that fingerprint.")},
)
def reject_key(
    request: Request, fingerprint: Fingerprint, principal: Principal = Depends(require_admin)
) -> AgentKey:
    """Refuse the agent from now on; its client ids are unbound. A connection that is
    already open lasts until the agent reconnects or ingest restarts."""
    return _decide(request, fingerprint, "rejected", principal)


@router.post(
    "/keys",
    response_model=AgentKey,
    status_code=201,
    summary="Approve a public key in advance",
)
def preapprove_key(
    body: AgentKeyCreate, request: Request, principal: Principal = Depends(require_admin)
) -> AgentKey:
    """Approve a public key before the agent first connects (e.g. the content of the
    agent's `.public` file), so it is accepted at once."""
    gw = get_state(request)
    rec = _store(gw).approve(body.key, decided_by=principal.user)
    model = _model(rec, _bound(gw, body.key))
    metrics.AGENT_KEY_DECISIONS.labels("approved").inc()
    log.warning(
        "agent key approved in advance",
        extra={"fingerprint": model.fingerprint, "user": principal.user, "via": principal.via},
    )
    _announce(gw, model)
    audit.record(
        request, "agent_key_approved", principal=principal, target=model.fingerprint,
        in_advance=True,
    )  # fmt: skip
    return model


@router.delete(
    "/keys/{fingerprint}",
    response_model=AgentKey,
    summary="Delete an agent key",
    responses={404: error_response("No key with that fingerprint.")},
)
def delete_key(
    request: Request, fingerprint: Fingerprint, principal: Principal = Depends(require_admin)
) -> AgentKey:
    """Forget a key entirely (e.g. a pending key nobody will decide); its client ids are
    freed. If the agent connects again, its key is pending again. Returns the record as
    it was."""
    gw = get_state(request)
    store = _store(gw)
    key = store.resolve(fingerprint)
    rec = store.delete(key) if key else None
    if rec is None:
        raise HTTPException(404, f"no agent key with fingerprint {fingerprint}")
    model = _model(rec, [])
    metrics.AGENT_KEY_DECISIONS.labels("deleted").inc()
    log.warning(
        "agent key deleted",
        extra={"fingerprint": model.fingerprint, "user": principal.user, "via": principal.via},
    )
    gw.r.publish(gw.keys.notify, json.dumps(
        {"type": "agent_key_status", "fingerprint": model.fingerprint, "status": "deleted"}))  # fmt: skip
    audit.record(request, "agent_key_deleted", principal=principal, target=model.fingerprint)
    return model
