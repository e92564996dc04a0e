"""Agent sessions and control: the ROUTER side of the protocol.

``register`` starts a session (and, with CURVE, binds the client id to the
agent's key), ``heartbeat`` keeps it alive and carries edge stats,
``camera_info`` updates or adds a camera, ``bye`` ends it.  Replies go back on the
ROUTER socket; registry writes are queued to the :class:`RegistryWriter`.
"""

from __future__ import annotations

import logging
import math
import time
from typing import TYPE_CHECKING, Any

import redis
import zmq

from services.ingest import metrics as m
from services.ingest.sessions import Session
from shared import registry
from shared.ingest_limits import AGENT_STAT_NAMES
from shared.protocol import (
    AGENT_TO_INGEST,
    ProtocolError,
    decode_control,
    encode_control,
    make_camera_id,
)
from shared.security import ClientLimitReached, fingerprint

if TYPE_CHECKING:
    from services.ingest.server import IngestServer

log = logging.getLogger(__name__)

#: Most agent sessions one ingest keeps (a bound on memory, not a sizing hint).
MAX_SESSIONS = 10_000
#: Control messages handled per poll wake-up.
CONTROL_BATCH = 256


class ControlPlane:
    """Sessions and control messages; owned by the thread that owns the ROUTER."""

    def __init__(self, server: IngestServer) -> None:
        self.srv = server
        self.sessions = server.sessions
        self.client_keys: dict[str, str] = {}  # client_id -> bound key (cache)
        self.limits = server.cfg.limits
        #: Latest key statuses from the key cache's refresher (swapped in whole).
        self._keys_refreshed = False

    # ----------------------------------------------------------------- receive
    def drain(self, router: zmq.Socket) -> None:
        for _ in range(CONTROL_BATCH):
            try:
                frames = router.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            key = frames[-1].get("User-Id") if self.srv.secure else None
            self.on_control(router, [f.bytes for f in frames], key)

    def on_control(self, router: zmq.Socket, parts: list[bytes], key: str | None = None) -> None:
        srv = self.srv
        routing_id, body = parts[0], parts[1:]
        envelope: list[bytes] = []
        if len(body) == 2 and body[0] == b"":  # REQ-style delimiter: mirror it
            envelope, body = [b""], body[1:]
        if len(body) != 1:
            srv.reject("control", "bad_multipart", f"{len(body)} parts")
            return
        try:
            msg = decode_control(body[0], expect=AGENT_TO_INGEST)
        except ProtocolError as exc:
            srv.reject("control", exc.reason, exc.detail)
            return
        m.CONTROL_MESSAGES.labels(msg["type"]).inc()
        srv.count(f"control_{msg['type']}")
        handler = {
            "register": self.on_register,
            "heartbeat": self.on_heartbeat,
            "camera_info": self.on_camera_info,
            "bye": self.on_bye,
        }[msg["type"]]
        if srv.secure and not self.control_key_ok(msg, key):
            return  # counted and logged; no reply (the agent's register times out)
        reply = handler(routing_id, msg, key)
        if reply is not None:
            self.send(router, routing_id, envelope, reply, what="reply")

    def send(
        self, router: zmq.Socket, routing_id: bytes, envelope: list[bytes], data: bytes, what: str
    ) -> bool:
        try:
            router.send_multipart([routing_id, *envelope, data], zmq.NOBLOCK)
            return True
        except zmq.ZMQError as exc:  # EHOSTUNREACH (gone) or EAGAIN (peer not reading)
            self.srv.count(f"{what}_failed")
            ok, suppressed = self.srv.burst.should_log(f"send_failed:{what}")
            if ok:
                log.warning(
                    "control send failed",
                    extra={"what": what, "error": str(exc), "suppressed": suppressed},
                )
            return False

    # ----------------------------------------------------------------- sessions
    def session_for(self, routing_id: bytes, client_id: str) -> Session | None:
        session = self.sessions.by_routing(routing_id)
        if session is None or session.client_id != client_id:
            return None
        session.last_seen = time.monotonic()
        return session

    def reregister(self, client_id: str) -> bytes:
        self.srv.count("reregister_sent")
        ok, _ = self.srv.burst.should_log("reregister")
        if ok:
            log.info("unknown session, asking agent to register", extra={"client_id": client_id})
        return encode_control("reregister", reason="unknown session")

    def tick(self) -> None:
        """Periodic work of the control thread: key revocations, session expiry."""
        self.apply_key_statuses()
        self.expire_sessions()

    def keys_refreshed(self, _statuses: dict[str, str]) -> None:
        """Called by the key refresher thread after each refresh.  The control thread
        then applies the key cache as it is at its tick, not the statuses that refresh
        read: a handshake since may have looked up a key approved after that read, and
        the session it opened must not be ended by the older statuses."""
        self._keys_refreshed = True

    def apply_key_statuses(self) -> None:
        """Forget bindings of keys no longer approved (rejected or deleted) and end
        their sessions, so the freed client id can be registered by another key."""
        if not self._keys_refreshed or self.srv.key_cache is None:
            return
        self._keys_refreshed = False
        statuses = self.srv.key_cache.known()
        for cid, key in list(self.client_keys.items()):
            if statuses.get(key) != "approved":
                del self.client_keys[cid]
                log.info(
                    "client id released: its key is no longer approved",
                    extra={"client_id": cid, "fingerprint": fingerprint(key)},
                )
        for session in self.sessions.all():
            if session.key is not None and statuses.get(session.key) != "approved":
                self.sessions.end(session)
                self.srv.count("sessions_revoked")
                log.warning(
                    "session ended: agent key revoked",
                    extra={"client_id": session.client_id, "fingerprint": fingerprint(session.key)},
                )
        m.CLIENTS_CONNECTED.set(len(self.sessions))

    def expire_sessions(self) -> None:
        for session in self.sessions.expire(self.srv.cfg.offline_after_s):
            log.info(
                "session expired (no control messages)", extra={"client_id": session.client_id}
            )
        m.CLIENTS_CONNECTED.set(len(self.sessions))

    # --------------------------------------------------------------- key checks
    def key_owns(self, client_id: str, key: str | None) -> bool:
        """Secure mode: a client id belongs to the first approved key that registered it."""
        srv = self.srv
        if key is None or srv.key_store is None:
            srv.reject("control", "no_client_key", client_id)
            return False
        if srv.key_cache is not None and not srv.key_cache.approved(key):
            # Rejected or deleted since its connection was accepted.
            srv.reject("control", "key_not_approved", client_id, client_id=client_id)
            return False
        bound = self.client_keys.get(client_id)
        if bound is None:
            try:  # one Redis round trip per new client id, never per frame
                if srv.key_store.bind_client(client_id, key):
                    bound = self.client_keys[client_id] = key
                else:
                    bound = srv.key_store.key_for_client(client_id)
            except ClientLimitReached:
                srv.reject(
                    "control", "too_many_clients_per_key", client_id,
                    client_id=client_id, fingerprint=fingerprint(key),
                    limit=self.limits.clients_per_key,
                )  # fmt: skip
                return False
            except redis.RedisError as exc:
                srv.reject("control", "key_check_unavailable", str(exc))
                return False
        if bound != key:
            srv.reject(
                "control", "client_key_mismatch", client_id,
                client_id=client_id, fingerprint=fingerprint(key),
            )  # fmt: skip
            return False
        return True

    def control_key_ok(self, msg: dict[str, Any], key: str | None) -> bool:
        """Secure mode: only the key that owns a client id may speak for it.

        ``register`` binds or checks the owner; every other message must come from the
        key of the client's session (a second agent reusing the client id as its
        routing id must not be able to say ``bye`` or heartbeat for the real one).
        """
        client_id = msg["client_id"]
        if msg["type"] == "register":
            return self.key_owns(client_id, key)
        session = self.sessions.by_client(client_id)
        if session is not None and session.key != key:
            self.srv.reject(
                "control", "key_mismatch", client_id,
                client_id=client_id, fingerprint=fingerprint(key) if key else None,
            )  # fmt: skip
            return False
        return True

    # ----------------------------------------------------------------- messages
    def on_register(self, routing_id: bytes, msg: dict[str, Any], key: str | None) -> bytes:
        srv = self.srv
        info = {k: msg.get(k) for k in ("client_id", "hostname", "platform", "version", "agent")}
        cameras: list[dict[str, Any]] = msg["cameras"]
        client_id = info["client_id"]
        cap = self.limits.cameras_per_client
        refused = len(cameras) - cap
        if refused > 0:  # keep the first ones (a refusal would make the agent loop)
            cameras = cameras[:cap]
            srv.reject(
                "control", "too_many_cameras", f"{refused} camera(s) refused",
                client_id=client_id, limit=cap,
            )  # fmt: skip
        if (
            len(self.sessions) >= MAX_SESSIONS
            and self.sessions.by_client(client_id) is None
            and self.sessions.by_routing(routing_id) is None
        ):
            srv.reject("control", "too_many_sessions", client_id)
            return encode_control("reregister", reason="ingest is full")
        replaced = self.sessions.register(routing_id, info, cameras, key)
        m.CLIENTS_CONNECTED.set(len(self.sessions))
        log.info(
            "client registered",
            extra={"client_id": client_id, "cameras": len(cameras),
                   "hostname": info.get("hostname"), "replaced": replaced is not None},
        )  # fmt: skip

        def write() -> None:
            registry.register_client(srv.redis, srv.keys, info, cameras)
            srv.redis.hdel(srv.keys.client(client_id), "offline_at")

        srv.writer.submit(f"register {client_id}", write)
        if refused > 0:
            return encode_control("ack", reason=f"registered; {refused} camera(s) over the limit")
        return encode_control("ack", reason="registered")

    def on_heartbeat(self, routing_id: bytes, msg: dict[str, Any], _key: str | None) -> bytes:
        srv = self.srv
        client_id = msg["client_id"]
        session = self.session_for(routing_id, client_id)
        if session is None:
            return self.reregister(client_id)
        agent_stats = self.agent_stats(client_id, session, msg["stats"])

        info, cams = dict(session.info), list(session.cameras.values())

        def write() -> None:
            if srv.redis.exists(srv.keys.client(client_id)):
                registry.touch_client(srv.redis, srv.keys, client_id)
            else:  # registry lost (Redis restarted empty, or cleanup): rebuild it
                registry.register_client(srv.redis, srv.keys, info, cams)
            for cam, fields in agent_stats.items():
                if fields:
                    registry.update_camera(srv.redis, srv.keys, cam, fields)

        srv.writer.submit(f"heartbeat {client_id}", write, key=f"heartbeat:{client_id}")
        return encode_control("ack")

    def agent_stats(
        self, client_id: str, session: Session, stats: dict[str, dict[str, float]]
    ) -> dict[str, dict[str, float]]:
        """Edge stats to store: known cameras, known stat names, finite bounded values."""
        out: dict[str, dict[str, float]] = {}
        limit = self.limits.max_stat_value
        dropped = 0
        for name, st in stats.items():
            if name not in session.cameras:
                continue
            fields = {}
            for k, v in st.items():
                if k in AGENT_STAT_NAMES and math.isfinite(v) and abs(v) <= limit:
                    fields[f"agent_{k}"] = v
                else:
                    dropped += 1
            out[make_camera_id(client_id, name)] = fields
        if dropped:
            self.srv.reject("control", "unknown_stat", f"{dropped} stat(s)", client_id=client_id)
        return out

    def on_camera_info(self, routing_id: bytes, msg: dict[str, Any], _key: str | None) -> bytes:
        srv = self.srv
        client_id = msg["client_id"]
        session = self.session_for(routing_id, client_id)
        if session is None:
            return self.reregister(client_id)
        cam = msg["camera"]
        name = cam["name"]
        if name in session.cameras:
            session.cameras[name].update(cam)
            cam_id = make_camera_id(client_id, name)
            fields = {k: v for k, v in cam.items() if k != "name"}
            srv.writer.submit(
                f"camera_info {cam_id}",
                lambda: registry.update_camera(srv.redis, srv.keys, cam_id, fields),
            )
        elif len(session.cameras) >= self.limits.cameras_per_client:
            srv.reject(
                "control", "too_many_cameras", client_id,
                client_id=client_id, camera=name, limit=self.limits.cameras_per_client,
            )  # fmt: skip
            return encode_control("ack", reason="camera refused: too many cameras")
        else:  # a camera that appeared after registration (hot-plugged): write it alone
            self.sessions.add_camera(session, cam)
            count = len(session.cameras)
            srv.writer.submit(
                f"add_camera {client_id}/{name}",
                lambda: registry.add_camera(srv.redis, srv.keys, client_id, cam, count),
            )
            log.info("camera added", extra={"client_id": client_id, "camera": name})
        return encode_control("ack")

    def on_bye(self, routing_id: bytes, msg: dict[str, Any], _key: str | None) -> bytes | None:
        srv = self.srv
        client_id = msg["client_id"]
        session = self.session_for(routing_id, client_id)
        if session is None:
            return None
        self.sessions.end(session)
        m.CLIENTS_CONNECTED.set(len(self.sessions))
        log.info("client said bye", extra={"client_id": client_id})
        # Stamped when written, so it is later than any queued heartbeat's last_seen.
        srv.writer.submit(
            f"bye {client_id}",
            lambda: srv.redis.hset(srv.keys.client(client_id), "offline_at", str(time.time())),
        )
        return None
