"""Client/camera registry in Redis: written by ingest, read by gateway and CLI.

Layout (under the key prefix):

* ``clients`` set, ``client:<id>`` hash (client_id, hostname, platform, version,
  agent, registered_at, last_seen, camera_count)
* ``cameras`` set, ``camera:<camera_id>`` hash (camera_id, client_id, name, source,
  kind, backend, width, height, fps, target_fps, quality, streaming, motion_gate,
  frames_in, bytes_in, dropped, fps_in, last_frame_ts, agent_* edge stats)
* ``client_cameras:<id>`` set
* commands for agents: stream ``stream:commands`` (written by the gateway, routed by
  ingest to the agent's control socket)
* changes: JSON messages on the ``notify`` pub/sub channel
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

import redis

from shared.keys import STREAM_COMMANDS, Keys

INT_FIELDS = {"width", "height", "quality", "frames_in", "bytes_in", "dropped", "camera_count"}
FLOAT_FIELDS = {
    "fps", "target_fps", "fps_in", "last_frame_ts", "last_seen", "registered_at", "kbps_in",
    "offline_at", "clock_offset_s",
}  # fmt: skip
BOOL_FIELDS = {"streaming", "motion_gate", "clock_skewed"}

COMMAND_TYPES = ("start_streaming", "stop_streaming", "update_streaming_settings")


def health(last_seen: float | None, now: float, stale_after: float, offline_after: float) -> str:
    """online / stale / offline from the time since the last heartbeat."""
    if not last_seen:
        return "offline"
    age = now - last_seen
    if age <= stale_after:
        return "online"
    if age <= offline_after:
        return "stale"
    return "offline"


def _num(v: Any) -> float | None:
    if v is None or v == "" or isinstance(v, bool):
        return None
    try:
        return float(v.decode() if isinstance(v, bytes) else v)
    except (TypeError, ValueError):
        return None


def client_status(
    client: Mapping[str, Any], now: float, stale_after: float, offline_after: float
) -> str:
    """The one rule for a client's status; every reader (ingest, gateway, CLI) calls it.

    ``client`` is the client's registry hash (raw strings or typed values):
    ``offline`` once the agent said bye (``offline_at`` at or after its last
    heartbeat), else online / stale / offline from the time since ``last_seen``.
    """
    last_seen = _num(client.get("last_seen"))
    offline_at = _num(client.get("offline_at"))
    if offline_at and last_seen and offline_at >= last_seen:
        return "offline"  # said bye
    return health(last_seen, now, stale_after, offline_after)


def read_client_status(
    r: redis.Redis, keys: Keys, client_id: str, stale_after: float, offline_after: float
) -> str:
    """:func:`client_status` of one client, read from Redis (offline if unknown)."""
    last_seen, offline_at = r.hmget(keys.client(client_id), "last_seen", "offline_at")
    fields = {"last_seen": last_seen, "offline_at": offline_at}
    return client_status(fields, time.time(), stale_after, offline_after)


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def _typed(h: dict[Any, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in h.items():
        k, v = _s(k), _s(v)
        try:
            if k in INT_FIELDS or k.startswith("agent_") and v.lstrip("-").isdigit():
                out[k] = int(float(v))
            elif k in FLOAT_FIELDS or k.startswith("agent_"):
                out[k] = float(v)
            elif k in BOOL_FIELDS:
                out[k] = v in ("1", "true", "True")
            else:
                out[k] = v
        except ValueError:
            out[k] = v
    return out


def _flat(d: dict[str, Any]) -> dict[str, str]:
    out = {}
    for k, v in d.items():
        if v is None:
            continue
        if isinstance(v, bool):
            out[k] = "1" if v else "0"
        else:
            out[k] = str(v)
    return out


# ----------------------------------------------------------------------- writes


def notify(r: redis.Redis, keys: Keys, kind: str, **fields: Any) -> None:
    r.publish(keys.notify, json.dumps({"type": kind, "ts": time.time(), **fields}))


def register_client(
    r: redis.Redis, keys: Keys, info: dict[str, Any], cameras: list[dict[str, Any]]
) -> list[str]:
    """Store a client and its cameras (from a validated ``register`` message).

    Cameras the client no longer reports are removed.  Returns the camera ids.
    """
    client_id = info["client_id"]
    now = time.time()
    cam_ids = [f"{client_id}/{c['name']}" for c in cameras]
    old = {_s(c) for c in r.smembers(keys.client_cameras(client_id))}
    pipe = r.pipeline()
    client_fields = {
        k: info.get(k) for k in ("client_id", "hostname", "platform", "version", "agent")
    }
    client_fields.update(registered_at=now, last_seen=now, camera_count=len(cameras))
    pipe.hset(keys.client(client_id), mapping=_flat(client_fields))
    pipe.sadd(keys.clients, client_id)
    for cam_id, cam in zip(cam_ids, cameras, strict=True):
        fields = {"camera_id": cam_id, "client_id": client_id, **cam}
        pipe.hset(keys.camera(cam_id), mapping=_flat(fields))
        pipe.sadd(keys.cameras, cam_id)
        pipe.sadd(keys.client_cameras(client_id), cam_id)
    for gone in old - set(cam_ids):
        pipe.delete(keys.camera(gone))
        pipe.srem(keys.cameras, gone)
        pipe.srem(keys.client_cameras(client_id), gone)
    pipe.execute()
    notify(r, keys, "client_registered", client_id=client_id, cameras=cam_ids)
    return cam_ids


def add_camera(
    r: redis.Redis, keys: Keys, client_id: str, camera: dict[str, Any], camera_count: int
) -> str:
    """Store one camera that appeared after its client registered (hot-plug).

    Writes only that camera (not the client's whole list) and the client's count.
    """
    cam_id = f"{client_id}/{camera['name']}"
    pipe = r.pipeline()
    pipe.hset(
        keys.camera(cam_id), mapping=_flat({"camera_id": cam_id, "client_id": client_id, **camera})
    )
    pipe.sadd(keys.cameras, cam_id)
    pipe.sadd(keys.client_cameras(client_id), cam_id)
    pipe.hset(keys.client(client_id), "camera_count", str(camera_count))
    pipe.execute()
    notify(r, keys, "camera_added", client_id=client_id, camera_id=cam_id)
    return cam_id


def update_camera(r: redis.Redis, keys: Keys, camera_id: str, fields: dict[str, Any]) -> None:
    if r.sismember(keys.cameras, camera_id):
        r.hset(keys.camera(camera_id), mapping=_flat(fields))


def update_client(r: redis.Redis, keys: Keys, client_id: str, fields: dict[str, Any]) -> None:
    """Set fields of a known client (never creates one)."""
    if r.sismember(keys.clients, client_id):
        r.hset(keys.client(client_id), mapping=_flat(fields))


def touch_client(r: redis.Redis, keys: Keys, client_id: str, now: float | None = None) -> None:
    r.hset(keys.client(client_id), "last_seen", str(now or time.time()))


def remove_client(r: redis.Redis, keys: Keys, client_id: str) -> None:
    cams = [_s(c) for c in r.smembers(keys.client_cameras(client_id))]
    pipe = r.pipeline()
    for cam in cams:
        pipe.delete(keys.camera(cam))
        pipe.srem(keys.cameras, cam)
        for svc in ("detector", "faces", "analyst"):
            pipe.hdel(keys.processing(svc), cam)
            pipe.hdel(keys.worker_stats(svc), cam)
    pipe.delete(keys.client_cameras(client_id), keys.client(client_id))
    pipe.srem(keys.clients, client_id)
    pipe.execute()
    notify(r, keys, "client_removed", client_id=client_id)


def cleanup_inactive(
    r: redis.Redis, keys: Keys, older_than_s: float, now: float | None = None
) -> list[str]:
    """Remove clients whose last heartbeat is older than ``older_than_s``."""
    now = now or time.time()
    removed = []
    for cid in sorted(_s(c) for c in r.smembers(keys.clients)):
        last = r.hget(keys.client(cid), "last_seen")
        if last is None or now - float(_s(last)) > older_than_s:
            remove_client(r, keys, cid)
            removed.append(cid)
    return removed


def send_command(
    r: redis.Redis,
    keys: Keys,
    client_id: str,
    command: str,
    *,
    camera: str | None = None,
    quality: int | None = None,
    fps: float | None = None,
    maxlen: int = 10_000,
) -> str:
    """Queue a command for an agent; ingest routes it over the control channel.

    ``camera`` is the camera's local name (None = every camera of the client).
    """
    if command not in COMMAND_TYPES:
        raise ValueError(f"unknown command {command!r}")
    fields = _flat(
        {
            "client_id": client_id,
            "type": command,
            "camera": camera or "",
            "quality": quality,
            "fps": fps,
            "ts": time.time(),
        }  # fmt: skip
    )
    entry = r.xadd(keys.stream(STREAM_COMMANDS), fields, maxlen=maxlen, approximate=True)
    return _s(entry)


# ------------------------------------------------------------------------ reads


def get_camera(r: redis.Redis, keys: Keys, camera_id: str) -> dict[str, Any] | None:
    h = r.hgetall(keys.camera(camera_id))
    return _typed(h) if h else None


def list_cameras(r: redis.Redis, keys: Keys, client_id: str | None = None) -> list[dict[str, Any]]:
    key = keys.client_cameras(client_id) if client_id else keys.cameras
    ids = sorted(_s(c) for c in r.smembers(key))
    pipe = r.pipeline(transaction=False)
    for cam in ids:
        pipe.hgetall(keys.camera(cam))
    return [_typed(h) for h in pipe.execute() if h]


def get_client(
    r: redis.Redis,
    keys: Keys,
    client_id: str,
    *,
    stale_after: float = 10.0,
    offline_after: float = 30.0,
    now: float | None = None,
) -> dict[str, Any] | None:
    h = r.hgetall(keys.client(client_id))
    if not h:
        return None
    client = _typed(h)
    client["status"] = client_status(client, now or time.time(), stale_after, offline_after)
    client["cameras"] = list_cameras(r, keys, client_id)
    return client


def list_clients(
    r: redis.Redis, keys: Keys, *, stale_after: float = 10.0, offline_after: float = 30.0
) -> list[dict[str, Any]]:
    now = time.time()
    out = []
    for cid in sorted(_s(c) for c in r.smembers(keys.clients)):
        c = get_client(r, keys, cid, stale_after=stale_after, offline_after=offline_after, now=now)
        if c:
            out.append(c)
    return out
