"""Websocket fan-out: one Redis reader for everyone, bounded buffers per browser.

Wire format on ``/ws`` (documented in the README section for the gateway):

* text messages are JSON ``{"type": <event>, "data": {...}}`` with ``type`` one of
  ``distributed_client_change``, ``distributed_detection_update``, ``event``,
  ``face_update``, ``analysis_update``, ``agent_key_pending`` (an unknown agent key
  waits for approval), ``agent_key_update`` (a key was approved/rejected), ``hello``,
  ``subscribed``, ``error``;
* a live frame (``distributed_frame_update``) is ONE binary message:
  4-byte big-endian length N, N bytes of JSON header
  ``{"type": "distributed_frame_update", "camera_id", "seq", "ts", "w", "h"}``,
  then the JPEG bytes (no base64, no second message to pair up).

Each connection owns a :class:`SendBuffer`: frames and detection updates keep only
the latest per camera (a replaced one is counted as dropped); other messages go to a
bounded FIFO whose oldest entry is dropped (and counted) when full.  One sender task
per connection drains it, so a browser that stops reading only loses its own frames.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import struct
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Any

import redis
import redis.asyncio as aredis
from starlette.websockets import WebSocket, WebSocketState

from services.gateway import metrics
from services.gateway.live import LiveFrame, LiveFrames
from shared.keys import Keys
from shared.metrics import INVALID_INPUT
from shared.streams import AsyncStreamFollower, StreamEntry

log = logging.getLogger(__name__)

# notify payload type -> websocket message type
AGENT_KEY_MESSAGE_TYPES = {
    "agent_key_pending": "agent_key_pending",  # published by shared.security.AgentKeyStore
    "agent_key_status": "agent_key_update",  # published by the gateway after a decision
}

STREAM_MESSAGE_TYPES = {
    "detections": "distributed_detection_update",
    "faces": "face_update",
    "analysis": "analysis_update",
    "events": "event",
}


#: Per-frame result streams: sent only to connections subscribed to the camera, and
#: only the latest per camera is kept for a slow browser.
PER_CAMERA_STREAMS = frozenset({"detections", "faces"})


def stream_message_text(kind: str, entry: StreamEntry) -> str:
    """``{"type": kind, "data": <record + "id">}`` built around the record's JSON as
    the worker wrote it (``fields["data"]``, a JSON object), without parsing it."""
    data = entry.fields.get("data", "")
    if len(data) < 2 or data[0] != "{" or data[-1] != "}":
        record = entry.record()  # not an object: parse_entry's fallback record
        return json.dumps({"type": kind, "data": record}, separators=(",", ":"))
    inner = data[1:-1]
    sep = "," if inner.strip() else ""
    return f'{{"type":"{kind}","data":{{{inner}{sep}"id":{json.dumps(entry.id)}}}}}'


def encode_frame_message(frame: LiveFrame) -> bytes:
    h = frame.header
    head = json.dumps(
        {
            "type": "distributed_frame_update",
            "camera_id": h.camera_id,
            "seq": h.seq,
            "ts": h.ts // 1_000_000,  # unix ms, like result records
            "w": h.w,
            "h": h.h,
        },
        separators=(",", ":"),
    ).encode()
    return struct.pack(">I", len(head)) + head + frame.jpeg


def decode_frame_message(msg: bytes) -> tuple[dict[str, Any], bytes]:
    """Inverse of :func:`encode_frame_message` (used by tests and Python clients)."""
    (n,) = struct.unpack(">I", msg[:4])
    return json.loads(msg[4 : 4 + n]), msg[4 + n :]


class SendBuffer:
    """Bounded outgoing buffer of one websocket (asyncio, single consumer)."""

    def __init__(self, max_queue: int) -> None:
        self._fifo: deque[tuple[str, str | bytes]] = deque()
        self._latest: OrderedDict[tuple[str, str], str | bytes] = OrderedDict()
        self._max_queue = max_queue
        self._ready = asyncio.Event()
        self.dropped: dict[str, int] = {}

    def _drop(self, kind: str) -> None:
        self.dropped[kind] = self.dropped.get(kind, 0) + 1
        metrics.WS_DROPPED.labels(kind).inc()

    def put(self, kind: str, msg: str | bytes) -> None:
        if len(self._fifo) >= self._max_queue:
            old_kind, _ = self._fifo.popleft()
            self._drop(old_kind)
        self._fifo.append((kind, msg))
        self._ready.set()

    def put_latest(self, kind: str, camera_id: str, msg: str | bytes) -> None:
        key = (kind, camera_id)
        if key in self._latest:
            self._drop(kind)
            del self._latest[key]  # re-append: round-robin between cameras
        self._latest[key] = msg
        self._ready.set()

    def __len__(self) -> int:
        return len(self._fifo) + len(self._latest)

    async def get(self) -> tuple[str, str | bytes]:
        while True:
            if self._fifo:
                return self._fifo.popleft()
            if self._latest:
                (kind, _), msg = self._latest.popitem(last=False)
                return kind, msg
            self._ready.clear()
            await self._ready.wait()


class Connection:
    def __init__(self, ws: WebSocket, user: str, max_queue: int, send_timeout: float) -> None:
        self.ws = ws
        self.user = user
        self.buffer = SendBuffer(max_queue)
        self.send_timeout = send_timeout
        self.cameras: set[str] = set()
        self.sent: dict[str, int] = {}
        self.closed = asyncio.Event()
        # Scope hook, set by ws.py: may this connection receive (kind, data, camera_id)?
        self.allows: Callable[[str, dict[str, Any], str | None], bool] = lambda *_: True

    async def sender(self) -> None:
        """Drain the buffer into the socket; close the socket if one send blocks too long."""
        try:
            while True:
                kind, msg = await self.buffer.get()
                is_bin = isinstance(msg, bytes)
                coro = self.ws.send_bytes(msg) if is_bin else self.ws.send_text(msg)
                try:
                    await asyncio.wait_for(coro, self.send_timeout)
                except TimeoutError:
                    metrics.WS_CLOSED_SLOW.inc()
                    log.warning("closing websocket: send blocked", extra={"user": self.user})
                    with contextlib.suppress(Exception):
                        await self.ws.close(code=1008, reason="too slow")
                    return
                self.sent[kind] = self.sent.get(kind, 0) + 1
                metrics.WS_SENT.labels(kind).inc()
        except Exception as exc:  # client went away mid-send
            log.debug("websocket sender stopped", extra={"error": type(exc).__name__})
        finally:
            self.closed.set()

    def send_json(self, kind: str, data: dict[str, Any]) -> None:
        self.buffer.put(kind, json.dumps({"type": kind, "data": data}, separators=(",", ":")))


class Hub:
    """Connections, the live-frame fan-out and the single Redis results reader."""

    def __init__(
        self,
        keys: Keys,
        live: LiveFrames,
        aredis_client: aredis.Redis,
    ) -> None:
        self.keys = keys
        self.live = live
        self.r = aredis_client
        self.connections: set[Connection] = set()
        self._tasks: list[asyncio.Task] = []
        self._stopping = False
        live.on_frame(self._on_frame)

    # ------------------------------------------------------------ connections
    def add(self, conn: Connection) -> None:
        self.connections.add(conn)
        metrics.WS_CONNECTIONS.set(len(self.connections))

    def remove(self, conn: Connection) -> None:
        self.connections.discard(conn)
        for cam in conn.cameras:
            self.live.release(cam)
        conn.cameras.clear()
        metrics.WS_CONNECTIONS.set(len(self.connections))

    def subscribe(self, conn: Connection, cameras: list[str]) -> None:
        for cam in cameras:
            if cam not in conn.cameras:
                conn.cameras.add(cam)
                self.live.acquire(cam)
                frame = self.live.latest(cam)
                if frame is not None:  # show something at once
                    conn.buffer.put_latest("frame", cam, encode_frame_message(frame))

    def unsubscribe(self, conn: Connection, cameras: list[str]) -> None:
        for cam in cameras:
            if cam in conn.cameras:
                conn.cameras.discard(cam)
                self.live.release(cam)

    def _on_frame(self, frame: LiveFrame) -> None:
        msg: bytes | None = None
        for conn in self.connections:
            if frame.camera_id in conn.cameras:
                msg = msg or encode_frame_message(frame)
                conn.buffer.put_latest("frame", frame.camera_id, msg)

    def broadcast(self, kind: str, data: dict[str, Any], camera_id: str | None = None) -> None:
        text = json.dumps({"type": kind, "data": data}, separators=(",", ":"))
        for conn in self.connections:
            if not conn.allows(kind, data, camera_id):
                continue
            if kind == "distributed_detection_update" and camera_id:
                conn.buffer.put_latest(kind, camera_id, text)
            else:
                conn.buffer.put(kind, text)

    # ------------------------------------------------------------------ tasks
    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._read_streams(), name="hub-streams"),
            asyncio.create_task(self._read_notify(), name="hub-notify"),
        ]

    async def stop(self) -> None:
        self._stopping = True
        for t in self._tasks:
            t.cancel()
        if self._tasks:
            _, pending = await asyncio.wait(self._tasks, timeout=3)
            for t in pending:
                log.warning("hub task did not stop", extra={"task": t.get_name()})

    async def _read_streams(self) -> None:
        """One stream follower for all result streams, fanned out to the connections."""
        follower = AsyncStreamFollower(
            self.r,
            {s: self.keys.stream(s) for s in STREAM_MESSAGE_TYPES},
            block_ms=1000,
            count=200,
            what="result streams",
            on_error=lambda _exc: metrics.STREAM_READ_ERRORS.inc(),
        )
        await follower.run(self._on_entry, stopping=lambda: self._stopping)

    def _on_entry(self, entry: StreamEntry) -> None:
        if not self.connections:
            return
        kind = STREAM_MESSAGE_TYPES[entry.name]
        camera_id = entry.fields.get("camera_id") or None
        if entry.name in PER_CAMERA_STREAMS:
            # High-volume, per-frame records: only to browsers showing that camera, and
            # forwarded as the JSON the worker wrote (no decode / re-encode).
            targets = [c for c in self.connections if camera_id in c.cameras]
            if not targets:
                return
            text = stream_message_text(kind, entry)
            for conn in targets:
                conn.buffer.put_latest(kind, camera_id or "", text)
            return
        if entry.name == "events":
            record = entry.record()
            if record.get("snapshot_id"):
                record["snapshot_url"] = f"/api/snapshots/{record['snapshot_id']}"
            self.broadcast(kind, record, camera_id)
            return
        text = stream_message_text(kind, entry)
        for conn in self.connections:
            if conn.allows(kind, {}, camera_id):  # scope hook (ws.py)
                conn.buffer.put(kind, text)

    def _on_notify(self, data: dict[str, Any]) -> None:
        """Agent key notices go out as their own message types (only their fingerprint and
        status: the dashboard refetches the list); everything else is a registry change."""
        kind = data.get("type")
        if kind in AGENT_KEY_MESSAGE_TYPES:
            fp = data.get("fingerprint")
            status = data.get("status")
            if not isinstance(fp, str) or len(fp) > 64:
                INVALID_INPUT.labels("gateway", "bad_notify").inc()
                return
            out: dict[str, Any] = {"fingerprint": fp}
            if isinstance(status, str) and status in ("pending", "approved", "rejected"):
                out["status"] = status
            self.broadcast(AGENT_KEY_MESSAGE_TYPES[kind], out)
            return
        self.broadcast("distributed_client_change", data)

    async def _read_notify(self) -> None:
        backoff = 0.5
        while not self._stopping:
            pubsub = self.r.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.keys.notify)
                backoff = 0.5
                while not self._stopping:
                    msg = await pubsub.get_message(timeout=1.0)
                    if msg is None:
                        continue
                    try:
                        data = json.loads(msg["data"])
                    except (TypeError, ValueError):
                        continue
                    if isinstance(data, dict):
                        self._on_notify(data)
            except asyncio.CancelledError:
                raise
            except (redis.RedisError, OSError) as exc:
                if self._stopping:
                    return
                metrics.STREAM_READ_ERRORS.inc()
                log.warning("notify subscription failed", extra={"error": str(exc)})
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()


def ws_is_open(ws: WebSocket) -> bool:
    return ws.client_state == WebSocketState.CONNECTED
