"""Audit trail: who did what, from where, when.

Records go to the Redis stream ``keys.audit`` until the event store holds them, kept
for ``gateway.audit_retention_days`` and at most about ``gateway.audit_max_entries``
records (approximate MAXLEN/MINID trimming: the oldest records go first).  One record per action, fields:

``ts`` (unix ms), ``action`` (see :data:`ACTIONS`), ``user`` (who acted, or the name
tried for a failed login), ``via`` (session | token | -), ``ip`` (source address),
``target`` (what was acted on: a user, token id, key fingerprint, camera id, person),
``detail`` (JSON object with the rest, e.g. the changed fields).

Writing the audit record never fails the action it records: a Redis error is logged
and counted (``sentri_gateway_audit_errors_total``).
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import redis
from prometheus_client import Counter
from starlette.requests import HTTPConnection

from services.gateway.auth import Principal

log = logging.getLogger(__name__)

ACTIONS = (
    "login",
    "login_failed",
    "login_rate_limited",
    "logout",
    "password_changed",
    "user_created",
    "user_updated",
    "user_deleted",
    "token_created",
    "token_revoked",
    "agent_key_approved",
    "agent_key_rejected",
    "agent_key_deleted",
    "processing_started",
    "processing_stopped",
    "stream_started",
    "stream_stopped",
    "stream_settings",
    "face_enrolled",
    "face_renamed",
    "face_deleted",
    "clients_cleaned_up",
)

AUDIT_RECORDS = Counter(
    "sentri_gateway_audit_records_total", "Audit records written, by action.", ["action"]
)
AUDIT_ERRORS = Counter(
    "sentri_gateway_audit_errors_total", "Audit records that could not be written."
)


def record(
    conn: HTTPConnection,
    action: str,
    *,
    principal: Principal | None = None,
    user: str | None = None,
    target: str | None = None,
    **detail: Any,
) -> None:
    """Append one audit record for the request ``conn``."""
    gw = conn.app.state.gw
    ip = conn.client.host if conn.client else "unknown"
    fields = {
        "ts": str(int(time.time() * 1000)),
        "action": action,
        "user": (principal.user if principal else user) or "-",
        "via": principal.via if principal else "-",
        "ip": ip,
        "target": target or "",
        "detail": json.dumps(detail, separators=(",", ":"), default=str),
    }
    if principal is not None and principal.token_id:
        fields["token_id"] = principal.token_id
    cfg = gw.settings.gateway
    oldest_ms = int((time.time() - cfg.audit_retention_days * 86400) * 1000)
    try:
        pipe = gw.r.pipeline(transaction=False)
        pipe.xadd(gw.keys.audit, fields, maxlen=cfg.audit_max_entries, approximate=True)
        pipe.xtrim(gw.keys.audit, minid=f"{oldest_ms}-0", approximate=True)
        pipe.execute()
    except redis.RedisError as exc:
        AUDIT_ERRORS.inc()
        log.error("audit record lost", extra={"action": action, "error": str(exc)})
        return
    AUDIT_RECORDS.labels(action).inc()
    log.info("audit %s", action, extra={k: v for k, v in fields.items() if k != "ts"})


def read(
    gw: Any, *, limit: int, cursor: str | None, action: str | None, user: str | None
) -> tuple[list[dict[str, Any]], str | None]:
    """Newest first; ``cursor`` is the last id of the previous page."""
    if cursor is not None and not any(int(part) for part in cursor.split("-")):
        return [], None  # nothing is older than the first possible id
    end = f"({cursor}" if cursor else "+"
    out: list[dict[str, Any]] = []
    last: str | None = None
    scanned = 0
    while len(out) < limit and scanned < 5000:
        batch = gw.r.xrevrange(gw.keys.audit, end, "-", count=200)
        if not batch:
            return out, None
        for entry_id, fields in batch:
            scanned += 1
            last = entry_id
            if action and fields.get("action") != action:
                continue
            if user and fields.get("user") != user:
                continue
            try:
                detail = json.loads(fields.get("detail") or "{}")
            except ValueError:
                detail = {}
            out.append(
                {
                    "id": entry_id,
                    "ts": int(fields.get("ts") or entry_id.split("-")[0]),
                    "action": fields.get("action", ""),
                    "user": fields.get("user", "-"),
                    "via": fields.get("via", "-"),
                    "ip": fields.get("ip", ""),
                    "target": fields.get("target", ""),
                    "token_id": fields.get("token_id"),
                    "detail": detail if isinstance(detail, dict) else {},
                }
            )
            if len(out) >= limit:
                break
        if len(batch) < 200 and len(out) < limit:
            return out, None
        end = f"({last}"
    more = last is not None and bool(gw.r.xrevrange(gw.keys.audit, f"({last}", "-", count=1))
    return out, last if more else None
