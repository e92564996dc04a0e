"""/ws: live updates for the dashboard and integrations (see hub.py for the format).

Client -> server (text JSON):
  ``{"type": "subscribe", "cameras": ["lab/front", ...]}``   start receiving frames
  ``{"type": "unsubscribe", "cameras": [...]}``               stop
  ``{"type": "ping"}``                                        answered with ``pong``
Authentication: the session cookie (same-origin only) or ``Authorization: Bearer``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Literal

from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from services.gateway import metrics
from services.gateway.deps import GatewayState, get_state, websocket_user
from services.gateway.hub import Connection
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
    hub.add(conn)
    sender = asyncio.create_task(conn.sender(), name="ws-sender")
    conn.send_json("hello", {"user": principal.user, "frame_format": "u32be-json-header+jpeg"})
    try:
        while True:
            recv = asyncio.create_task(ws.receive())
            closed = asyncio.create_task(conn.closed.wait())
            done, _ = await asyncio.wait({recv, closed}, return_when=asyncio.FIRST_COMPLETED)
            if recv not in done:
                recv.cancel()
                break
            closed.cancel()
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
            cams = [c for c in msg.cameras if valid_name(c, allow_slash=True)]
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
        hub.remove(conn)
        sender.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await sender
        log.debug(
            "websocket closed", extra={"user": principal.user, "dropped": conn.buffer.dropped}
        )


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
