"""/ws: live updates for the dashboard and integrations (see hub.py for the format).

Client -> server (text JSON):
  ``{"type": "subscribe", "cameras": ["lab/front", ...]}``   start receiving frames
  ``{"type": "unsubscribe", "cameras": [...]}``               stop
  ``{"type": "ping"}``                                        answered with ``pong``
Authentication: the session cookie (same-origin only) or ``Authorization: Bearer``.

Scope: the connection only ever receives cameras inside its principal's camera scope
(subscriptions to others are ignored, results and registry changes of others are not
sent, agent-key notices go to administrators only).  The credential is checked again
every ``gateway.credential_recheck_s``: once it is revoked, logged out, or its user
changes password, is disabled or deleted, the socket is closed (code 1008); a scope
that shrank drops the cameras it no longer covers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any, Literal

import redis
from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from services.gateway import metrics
from services.gateway.auth import Principal
from services.gateway.deps import GatewayState, get_state, websocket_user
from services.gateway.hub import AGENT_KEY_MESSAGE_TYPES, Connection
from shared.metrics import INVALID_INPUT
from shared.protocol import valid_name

log = logging.getLogger(__name__)

router = APIRouter()

MAX_CAMERAS_PER_SOCKET = 64


class ClientMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["subscribe", "unsubscribe", "ping"]
    cameras: list[str] = Field(default_factory=list, max_length=MAX_CAMERAS_PER_SOCKET)


@router.websocket("/ws")
async def websocket_endpoint(ws: WebSocket) -> None:
    gw = get_state(ws)
    principal = await run_in_threadpool(websocket_user, ws)
    if principal is None:
        metrics.AUTH_REJECTED.labels("websocket").inc()
        await ws.close(code=1008)  # before accept: the handshake gets HTTP 403
        return
    await ws.accept()
    cfg = gw.settings.gateway
    hub = gw.hub
    assert hub is not None
    conn = Connection(ws, principal.user, cfg.ws_queue_messages, cfg.ws_send_timeout_s)
    access = ConnectionAccess(principal, conn)
    conn.allows = access.allows
    hub.add(conn)
    sender = asyncio.create_task(conn.sender(), name="ws-sender")
    revoked = asyncio.Event()
    rechecker = asyncio.create_task(
        _recheck(gw, conn, access, revoked, cfg.credential_recheck_s), name="ws-recheck"
    )
    conn.send_json(
        "hello",
        {"user": principal.user, "role": principal.role, "frame_format": "u32be-json-header+jpeg"},
    )
    try:
        while True:
            recv = asyncio.create_task(ws.receive())
            closed = asyncio.create_task(conn.closed.wait())
            ended = asyncio.create_task(revoked.wait())
            done, _ = await asyncio.wait({recv, closed, ended}, return_when=asyncio.FIRST_COMPLETED)
            if recv not in done:
                recv.cancel()
                closed.cancel()
                ended.cancel()
                break
            closed.cancel()
            ended.cancel()
            message = recv.result()
            if message["type"] == "websocket.disconnect":
                break
            text = message.get("text")
            if text is None or len(text) > cfg.ws_max_message_bytes:
                _bad(conn, "ws_bad_message", "send JSON text messages")
                continue
            try:
                msg = ClientMessage.model_validate(json.loads(text))
            except (ValueError, ValidationError) as exc:
                _bad(conn, "ws_bad_message", str(exc).splitlines()[0][:200])
                continue
            if msg.type == "ping":
                conn.send_json("pong", {})
                continue
            cams = [
                c
                for c in msg.cameras
                if valid_name(c, allow_slash=True) and access.principal.scope.allows(c)
            ]
            if msg.type == "subscribe":
                known = await run_in_threadpool(_known_cameras, gw, cams)
                room = MAX_CAMERAS_PER_SOCKET - len(conn.cameras)
                hub.subscribe(conn, known[: max(0, room)])
            else:
                hub.unsubscribe(conn, cams)
            conn.send_json("subscribed", {"cameras": sorted(conn.cameras)})
    except WebSocketDisconnect:
        pass
    finally:
        rechecker.cancel()
        if revoked.is_set():
            with contextlib.suppress(Exception):
                await ws.close(code=1008, reason="credentials revoked")
        hub.remove(conn)
        sender.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await sender
        log.debug(
            "websocket closed", extra={"user": principal.user, "dropped": conn.buffer.dropped}
        )


class ConnectionAccess:
    """The principal of one websocket (replaced at each re-check) and the hub filter."""

    STREAM_KINDS = frozenset(
        {"distributed_detection_update", "face_update", "analysis_update", "event"}
    )

    def __init__(self, principal: Principal, conn: Connection) -> None:
        self.principal = principal
        self.conn = conn

    def allows(self, kind: str, data: dict[str, Any], camera_id: str | None) -> bool:
        """May this connection get the hub's shared message?  A registry change that
        lists cameras outside the scope is not shared: this connection gets its own
        copy with only the cameras it may see."""
        p = self.principal
        if kind in AGENT_KEY_MESSAGE_TYPES.values():
            return p.role == "admin"
        if p.scope.everything:
            return True
        if camera_id is not None:
            return p.scope.allows(camera_id)
        if kind in self.STREAM_KINDS:
            return False  # a result without a camera: not provably in scope
        client_id = data.get("client_id")
        if client_id is not None and not (
            isinstance(client_id, str) and p.scope.allows_client(client_id)
        ):
            return False
        cams = data.get("cameras")
        if isinstance(cams, list):
            mine = [c for c in cams if isinstance(c, str) and p.scope.allows(c)]
            if len(mine) != len(cams):
                self.conn.send_json(kind, {**data, "cameras": mine})
                return False
        return True


async def _recheck(
    gw: GatewayState,
    conn: Connection,
    access: ConnectionAccess,
    revoked: asyncio.Event,
    every_s: float,
) -> None:
    """Check the connection's credential again every ``every_s``."""
    while True:
        await asyncio.sleep(every_s)
        try:
            current = await run_in_threadpool(gw.auth.recheck, access.principal)
        except redis.RedisError as exc:
            log.warning("websocket credential re-check failed", extra={"error": str(exc)})
            continue
        if current is None:
            metrics.WS_REVOKED.inc()
            log.info(
                "websocket closed: credentials no longer valid",
                extra={"user": access.principal.user, "via": access.principal.via},
            )
            revoked.set()
            return
        access.principal = current
        gone = [c for c in conn.cameras if not current.scope.allows(c)]
        if gone and gw.hub is not None:
            gw.hub.unsubscribe(conn, gone)


def _known_cameras(gw: GatewayState, cams: list[str]) -> list[str]:
    if not cams:
        return []
    pipe = gw.r.pipeline(transaction=False)
    for c in cams:
        pipe.sismember(gw.keys.cameras, c)
    return [c for c, ok in zip(cams, pipe.execute(), strict=True) if ok]


def _bad(conn: Connection, reason: str, detail: str) -> None:
    INVALID_INPUT.labels("gateway", reason).inc()
    conn.send_json("error", {"reason": reason, "detail": detail})
