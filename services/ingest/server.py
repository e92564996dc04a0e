"""The ingest server: PULL frames -> PUB fan-out, ROUTER agent control, registry.

Threads (ZeroMQ sockets are not thread-safe, so each socket has one owner):

* ``ingest-io`` owns every socket (PULL, ROUTER, PUB, the inproc PAIR that carries
  commands, the socket monitors).  The frame path is: receive without copying,
  validate (:func:`shared.protocol.decode_frame`), check the camera against the
  in-memory session table, publish the *original* header and JPEG frames.  No
  Redis round trip per frame; registry writes are queued to the writer thread.
* ``ingest-commands`` XREADs the ``commands`` stream and hands commands to the io
  thread over the PAIR socket.
* ``ingest-registry`` (:class:`RegistryWriter`) applies registry writes in order,
  retrying while Redis is down.
* ``ingest-housekeeping`` flushes per-camera stats, tracks client health
  (online/stale/offline, with a ``client_status`` notification on change) and
  removes clients offline for longer than ``ingest.cleanup_after_s``.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import msgpack
import redis
import zmq
from zmq.utils.monitor import recv_monitor_message

from services.ingest import metrics as m
from services.ingest.authorized import AuthorizedKeys
from services.ingest.registry_writer import RegistryWriter
from services.ingest.sessions import Session, SessionTable
from services.ingest.stats import StatsTable
from shared import registry
from shared.config import ConfigError, IngestConfig, RedisConfig, default_state_dir
from shared.ingest_info import publish_ingest_info
from shared.keys import STREAM_COMMANDS, Keys
from shared.logs import BurstLimiter
from shared.metrics import INVALID_INPUT
from shared.protocol import (
    AGENT_TO_INGEST,
    INGEST_TO_AGENT,
    MAX_CONTROL_BYTES,
    ProtocolError,
    decode_control,
    decode_frame,
    encode_control,
    encode_fanout,
    make_camera_id,
    parse_header,
)
from shared.redisutil import connect, redact_url
from shared.security import (
    AgentKeyStore,
    CurveAuthenticator,
    fingerprint,
    load_or_create_keypair,
    server_socket_options,
)

log = logging.getLogger(__name__)

SERVICE = "ingest"
#: Largest message part a subscriber may send to the PUB port (subscriptions are
#: camera topics, a few hundred bytes at most).
PUB_MAX_INBOUND_BYTES = 4096
#: Most agent sessions one ingest keeps (a bound on memory, not a sizing hint).
MAX_SESSIONS = 10_000
#: While Redis refuses the authorized_keys approvals, they are retried this often.
AUTHORIZED_RETRY_S = 2.0
#: Frames handled per poll wake-up before control and commands get a turn.
FRAME_BATCH = 256
_MONITOR_EVENTS = (
    zmq.EVENT_DISCONNECTED
    | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    | zmq.EVENT_HANDSHAKE_FAILED_AUTH
)
_HANDSHAKE_FAILED = (
    zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL,
    zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL,
    zmq.EVENT_HANDSHAKE_FAILED_AUTH,
)
_instance_ids = itertools.count()
_LOOPBACK = ("127.0.0.1", "localhost", "::1")


def _str(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _bind(sock: zmq.Socket, host: str, port: int) -> int:
    sock.bind(f"tcp://{host}:{port or '*'}")
    endpoint = sock.getsockopt(zmq.LAST_ENDPOINT).decode()
    return int(endpoint.rsplit(":", 1)[1])


class IngestServer:
    """Frame intake, agent control and fan-out.

    ``start()`` binds the sockets (ports 0 = random free port; the bound ports are
    then in :attr:`frame_port`, :attr:`control_port`, :attr:`pub_port`) and starts
    the background threads; ``stop()`` ends them and releases the ports; ``run()``
    does both around a wait for :attr:`stop_event`.

    ``counters`` (event name -> count) and ``invalid`` ((port, reason) -> count)
    mirror the Prometheus metrics for tests and the CLI.
    """

    def __init__(
        self,
        ingest_cfg: IngestConfig,
        redis_cfg: RedisConfig,
        *,
        health_interval_s: float = 1.0,
        cleanup_interval_s: float | None = None,
        keys_dir: str | os.PathLike[str] | None = None,
        zmq_context: zmq.Context | None = None,
    ) -> None:
        if not redis_cfg.url:
            raise ConfigError("redis.url: required by ingest (--redis-url or REDIS_URL)")
        self.cfg = ingest_cfg
        #: CURVE on the frame and control ports (``ingest.insecure=false``).
        self.secure = not ingest_cfg.insecure
        #: Where the server key pair ``ingest.public``/``ingest.secret`` lives.
        self.keys_dir = Path(keys_dir) if keys_dir else Path(default_state_dir()) / "keys"
        self.server_public: str | None = None
        self._auth: CurveAuthenticator | None = None
        self._key_store: AgentKeyStore | None = None
        self._client_keys: dict[str, str] = {}  # client_id -> bound key (cache)
        #: ``ingest.authorized_keys``, read now so a bad entry fails at start.
        self.authorized = AuthorizedKeys(ingest_cfg.authorized_keys)
        self._authorized_pending = False  # set while an apply waits for Redis
        self._authorized_scanned = time.monotonic()
        if self.secure and ingest_cfg.authorized_keys:
            self.authorized.load()
        elif ingest_cfg.authorized_keys:
            log.warning("ingest.authorized_keys is ignored: ingest.insecure is true")
        self.redis_cfg = redis_cfg
        self.keys = Keys(redis_cfg.prefix)
        self.redis = connect(redis_cfg.url, timeout=2.0)
        self.health_interval_s = health_interval_s
        self.cleanup_interval_s = cleanup_interval_s or min(60.0, ingest_cfg.cleanup_after_s)
        self.sessions = SessionTable()
        self.stats = StatsTable()
        self.counters: Counter[str] = Counter()
        self.invalid: Counter[tuple[str, str]] = Counter()
        self.client_status: dict[str, str] = {}
        self.stop_event = threading.Event()
        #: Set once the command reader knows where the commands stream ends.
        self.commands_ready = threading.Event()
        self.frame_port = 0
        self.control_port = 0
        self.pub_port = 0
        self._burst = BurstLimiter()
        self._lock = threading.Lock()
        self.writer = RegistryWriter(burst=self._burst)
        self._own_ctx = zmq_context is None
        self._ctx = zmq_context or zmq.Context()
        self._cmd_addr = f"inproc://ingest-commands-{id(self)}-{next(_instance_ids)}"
        self._threads: list[threading.Thread] = []
        self._sockets: dict[str, zmq.Socket] = {}
        self._monitors: dict[zmq.Socket, str] = {}
        self._cam_metrics: dict[str, tuple[Any, Any, Any]] = {}
        self._started = False

    # ------------------------------------------------------------------ public
    def start(self) -> IngestServer:
        """Bind the sockets and start the threads (non-blocking)."""
        if self._started:
            raise RuntimeError("IngestServer already started")
        host = self.cfg.bind_host
        secret = None
        if self.secure:
            self.server_public, secret = load_or_create_keypair(self.keys_dir, "ingest")
            self._key_store = AgentKeyStore(self.redis, self.keys)
            self._apply_authorized_keys(reload=False)  # before any agent can connect
            self._auth = CurveAuthenticator(self._ctx, self._key_store)  # before any bind
        try:
            pull = self._socket("frame", zmq.PULL)
            if secret:
                server_socket_options(pull, self.server_public or "", secret)
            pull.setsockopt(zmq.MAXMSGSIZE, self.cfg.max_frame_bytes)
            pull.setsockopt(zmq.RCVHWM, 1000)
            self.frame_port = _bind(pull, host, self.cfg.frame_port)

            router = self._socket("control", zmq.ROUTER)
            if secret:
                server_socket_options(router, self.server_public or "", secret)
            router.setsockopt(zmq.MAXMSGSIZE, MAX_CONTROL_BYTES)
            router.setsockopt(zmq.ROUTER_MANDATORY, 1)
            router.setsockopt(zmq.ROUTER_HANDOVER, 1)
            router.setsockopt(zmq.SNDHWM, 100)
            self.control_port = _bind(router, host, self.cfg.control_port)

            pub = self._socket("pub", zmq.PUB)
            pub.setsockopt(zmq.SNDHWM, self.cfg.pub_hwm)
            pub.setsockopt(zmq.MAXMSGSIZE, PUB_MAX_INBOUND_BYTES)
            self.pub_port = _bind(pub, host, self.cfg.pub_port)

            cmd = self._socket("commands", zmq.PAIR)
            cmd.bind(self._cmd_addr)
            for name in ("frame", "control", "pub"):
                mon = self._sockets[name].get_monitor_socket(events=_MONITOR_EVENTS)
                self._monitors[mon] = name
        except zmq.ZMQError as exc:
            self._close_sockets()
            if self._auth is not None:
                self._auth.stop()
                self._auth = None
            raise OSError(f"ingest cannot bind on {host}: {exc}") from exc
        self._started = True
        publish_ingest_info(self.redis, self.keys, bind_host=host, frame_port=self.frame_port, control_port=self.control_port, public_key=self.server_public if self.secure else None)  # fmt: skip  # noqa: E501 (agent bootstrap, edge branch)
        self.writer.start()
        for target, name in (
            (self._io_loop, "io"),
            (self._command_loop, "commands"),
            (self._housekeeping_loop, "housekeeping"),
        ):
            t = threading.Thread(target=target, name=f"ingest-{name}", daemon=True)
            t.start()
            self._threads.append(t)
        log.info(
            "ingest ready",
            extra={
                "frame_port": self.frame_port,
                "control_port": self.control_port,
                "pub_port": self.pub_port,
                "bind_host": host,
                "redis": redact_url(self.redis_cfg.url or ""),
                "prefix": self.redis_cfg.prefix,
                "security": "curve" if self.secure else "insecure",
                **(
                    {"server_key": self.server_public,
                     "fingerprint": fingerprint(self.server_public or "")}
                    if self.secure else {}
                ),
            },
        )  # fmt: skip
        if not self.secure:
            log.warning(
                "CURVE is OFF (insecure): frames and control travel in plaintext and any "
                "agent that reaches the ports is accepted",
                extra={"bind_host": host,
                       "reachable_from": "this machine" if host in _LOOPBACK else "the network"},
            )  # fmt: skip
        return self

    def run(self) -> None:
        """Start and block until :meth:`stop` is called or :attr:`stop_event` is set."""
        self.start()
        try:
            self.stop_event.wait()
        finally:
            self.stop()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the threads, flush what Redis accepts, release the ports."""
        self.stop_event.set()
        for t in self._threads:
            if t is not threading.current_thread():
                t.join(timeout)
        self._threads.clear()
        self._close_sockets()  # no-op when the io thread closed them
        self.writer.wait_idle(1.0)
        self.writer.stop()
        if self._auth is not None:
            self._auth.stop()
            self._auth = None
        self.redis.close()
        if self._own_ctx:
            self._ctx.term()
        m.CLIENTS_CONNECTED.set(0)
        log.info("ingest stopped", extra={"counters": dict(self.counters)})

    def wait_ready(self, timeout: float = 10.0) -> bool:
        """True once commands sent from now on will be routed."""
        return self.commands_ready.wait(timeout)

    def invalid_count(self, reason: str, port: str | None = None) -> int:
        with self._lock:
            return sum(n for (p, r), n in self.invalid.items() if r == reason and port in (None, p))

    def count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self.counters[name] += n

    # ------------------------------------------------------------- socket setup
    def _socket(self, name: str, kind: int) -> zmq.Socket:
        sock = self._ctx.socket(kind)
        sock.setsockopt(zmq.LINGER, 0)
        self._sockets[name] = sock
        return sock

    def _close_sockets(self) -> None:
        for name in ("frame", "control", "pub"):
            sock = self._sockets.get(name)
            if sock is not None and not sock.closed:
                try:
                    sock.disable_monitor()
                except zmq.ZMQError:
                    pass
        for mon in list(self._monitors):
            mon.close(0)
        self._monitors.clear()
        for sock in self._sockets.values():
            sock.close(0)
        self._sockets.clear()

    # ----------------------------------------------------------- invalid input
    def _reject(self, port: str, reason: str, detail: str = "", **ctx: Any) -> None:
        INVALID_INPUT.labels(SERVICE, reason).inc()
        with self._lock:
            self.invalid[(port, reason)] += 1
        ok, suppressed = self._burst.should_log(f"{port}:{reason}")
        if ok:
            log.warning(
                "dropped invalid input",
                extra={"port": port, "reason": reason, "detail": detail[:200],
                       "suppressed": suppressed, **ctx},
            )  # fmt: skip

    # ------------------------------------------------------------------ io loop
    def _io_loop(self) -> None:
        pull = self._sockets["frame"]
        router = self._sockets["control"]
        pub = self._sockets["pub"]
        cmd = self._sockets["commands"]
        poller = zmq.Poller()
        for sock in (pull, router, cmd, *self._monitors):
            poller.register(sock, zmq.POLLIN)
        next_tick = time.monotonic()
        try:
            while not self.stop_event.is_set():
                ready = dict(poller.poll(100))
                try:
                    if pull in ready:
                        self._drain_frames(pull, pub)
                    if router in ready:
                        self._drain_control(router)
                    if cmd in ready:
                        self._drain_commands(cmd, router)
                    for mon, port in self._monitors.items():
                        if mon in ready:
                            self._drain_monitor(mon, port)
                    now = time.monotonic()
                    if now >= next_tick:
                        next_tick = now + 1.0
                        self._expire_sessions()
                except Exception:  # a bug must not take the frame path down
                    self.count("internal_error")
                    ok, suppressed = self._burst.should_log("internal_error")
                    if ok:
                        log.exception("ingest io loop error", extra={"suppressed": suppressed})
        finally:
            self._close_sockets()

    def _drain_monitor(self, mon: zmq.Socket, port: str) -> None:
        while True:
            try:
                ev = recv_monitor_message(mon, zmq.NOBLOCK)
            except zmq.Again:
                return
            if ev["event"] == zmq.EVENT_DISCONNECTED:
                # Also how oversize messages show: ZeroMQ cuts a peer whose message
                # part exceeds MAXMSGSIZE before buffering it.
                m.PEER_DISCONNECTS.labels(port).inc()
                self.count(f"{port}_disconnects")
            elif ev["event"] in _HANDSHAKE_FAILED:
                self._reject(port, "handshake_failed", f"zmq event {int(ev['event'])}")

    # ------------------------------------------------------------------- frames
    def _drain_frames(self, pull: zmq.Socket, pub: zmq.Socket) -> None:
        for _ in range(FRAME_BATCH):
            try:
                parts = pull.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            self._on_frame(parts, pub)

    def _on_frame(self, parts: list[zmq.Frame], pub: zmq.Socket) -> None:
        views = [p.buffer for p in parts]
        try:
            header, jpeg = decode_frame(views, self.cfg.max_frame_bytes)
        except ProtocolError as exc:
            m.FRAMES_DROPPED.labels("invalid").inc()
            self._reject("frame", exc.reason, exc.detail)
            self._attribute_drop(views)
            return
        cam = header.camera_id
        registered = self.sessions.camera_registered(cam)
        if registered and self.secure:
            # Only the key that registered this client may send its frames.
            session = self.sessions.by_client(header.client_id)
            if session is None or session.key != parts[0].get("User-Id"):
                m.FRAMES_DROPPED.labels("invalid").inc()
                self._reject("frame", "key_mismatch", cam)
                return
        if not registered:
            m.FRAMES_DROPPED.labels("unregistered").inc()
            self.count("unregistered")
            ok, suppressed = self._burst.should_log("unregistered")  # fixed key: bounded
            if ok:
                log.warning(
                    "dropping frames of an unregistered camera",
                    extra={"camera_id": cam, "client_id": header.client_id,
                           "suppressed": suppressed},
                )  # fmt: skip
            return
        # Forward the original header and JPEG frames: zmq shares the buffers.
        pub.send_multipart(encode_fanout(cam, parts[0], parts[1]), copy=False)  # type: ignore[arg-type]
        nbytes = len(jpeg)
        cm = self._cam_metrics.get(cam)
        if cm is None:
            cm = self._cam_metrics[cam] = (
                m.FRAMES_IN.labels(cam),
                m.BYTES_IN.labels(cam),
                m.FRAMES_OUT.labels(cam),
            )
        cm[0].inc()
        cm[1].inc(nbytes)
        cm[2].inc()
        self.stats.frame(cam, nbytes, header.seq)
        with self._lock:
            self.counters["frames_in"] += 1
            self.counters["frames_out"] += 1
            self.counters["bytes_in"] += nbytes

    def _attribute_drop(self, views: list[memoryview]) -> None:
        """Charge an invalid frame to its camera when the header itself is fine."""
        if len(views) != 2:
            return
        try:
            header = parse_header(views[0])
        except ProtocolError:
            return
        if self.sessions.camera_registered(header.camera_id):
            self.stats.drop(header.camera_id)

    # ------------------------------------------------------------------ control
    def _drain_control(self, router: zmq.Socket) -> None:
        for _ in range(FRAME_BATCH):
            try:
                frames = router.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            key = frames[-1].get("User-Id") if self.secure else None
            self._on_control(router, [f.bytes for f in frames], key)

    def _on_control(self, router: zmq.Socket, parts: list[bytes], key: str | None = None) -> None:
        routing_id, body = parts[0], parts[1:]
        envelope: list[bytes] = []
        if len(body) == 2 and body[0] == b"":  # REQ-style delimiter: mirror it
            envelope, body = [b""], body[1:]
        if len(body) != 1:
            self._reject("control", "bad_multipart", f"{len(body)} parts")
            return
        try:
            msg = decode_control(body[0], expect=AGENT_TO_INGEST)
        except ProtocolError as exc:
            self._reject("control", exc.reason, exc.detail)
            return
        m.CONTROL_MESSAGES.labels(msg["type"]).inc()
        self.count(f"control_{msg['type']}")
        handler = {
            "register": self._on_register,
            "heartbeat": self._on_heartbeat,
            "camera_info": self._on_camera_info,
            "bye": self._on_bye,
        }[msg["type"]]
        if self.secure and not self._control_key_ok(msg, key):
            return  # counted and logged; no reply (the agent's register times out)
        reply = handler(routing_id, msg, key)
        if reply is not None:
            self._send(router, routing_id, envelope, reply, what="reply")

    def _send(
        self, router: zmq.Socket, routing_id: bytes, envelope: list[bytes], data: bytes, what: str
    ) -> bool:
        try:
            router.send_multipart([routing_id, *envelope, data], zmq.NOBLOCK)
            return True
        except zmq.ZMQError as exc:  # EHOSTUNREACH (gone) or EAGAIN (peer not reading)
            self.count(f"{what}_failed")
            ok, suppressed = self._burst.should_log(f"send_failed:{what}")
            if ok:
                log.warning(
                    "control send failed",
                    extra={"what": what, "error": str(exc), "suppressed": suppressed},
                )
            return False

    def _session_for(self, routing_id: bytes, client_id: str) -> Session | None:
        session = self.sessions.by_routing(routing_id)
        if session is None or session.client_id != client_id:
            return None
        session.last_seen = time.monotonic()
        return session

    def _reregister(self, client_id: str) -> bytes:
        self.count("reregister_sent")
        ok, _ = self._burst.should_log("reregister")
        if ok:
            log.info("unknown session, asking agent to register", extra={"client_id": client_id})
        return encode_control("reregister", reason="unknown session")

    def _key_owns(self, client_id: str, key: str | None) -> bool:
        """Secure mode: a client id belongs to the first approved key that registered it."""
        if key is None or self._key_store is None:
            self._reject("control", "no_client_key", client_id)
            return False
        bound = self._client_keys.get(client_id)
        if bound is None:
            try:  # one Redis round trip per new client id, never per frame
                if self._key_store.bind_client(client_id, key):
                    bound = self._client_keys[client_id] = key
                else:
                    bound = self._key_store.key_for_client(client_id)
            except redis.RedisError as exc:
                self._reject("control", "key_check_unavailable", str(exc))
                return False
        if bound != key:
            self._reject(
                "control", "client_key_mismatch", client_id,
                client_id=client_id, fingerprint=fingerprint(key),
            )  # fmt: skip
            return False
        return True

    def _control_key_ok(self, msg: dict[str, Any], key: str | None) -> bool:
        """Secure mode: only the key that owns a client id may speak for it.

        ``register`` binds or checks the owner; every other message must come from the
        key of the client's session (a second agent reusing the client id as its
        routing id must not be able to say ``bye`` or heartbeat for the real one).
        """
        client_id = msg["client_id"]
        if msg["type"] == "register":
            return self._key_owns(client_id, key)
        session = self.sessions.by_client(client_id)
        if session is not None and session.key != key:
            self._reject(
                "control", "key_mismatch", client_id,
                client_id=client_id, fingerprint=fingerprint(key) if key else None,
            )  # fmt: skip
            return False
        return True

    def _on_register(self, routing_id: bytes, msg: dict[str, Any], key: str | None) -> bytes:
        info = {k: msg.get(k) for k in ("client_id", "hostname", "platform", "version", "agent")}
        cameras: list[dict[str, Any]] = msg["cameras"]
        client_id = info["client_id"]
        if (
            len(self.sessions) >= MAX_SESSIONS
            and self.sessions.by_client(client_id) is None
            and self.sessions.by_routing(routing_id) is None
        ):
            self._reject("control", "too_many_sessions", client_id)
            return encode_control("reregister", reason="ingest is full")
        replaced = self.sessions.register(routing_id, info, cameras, key)
        m.CLIENTS_CONNECTED.set(len(self.sessions))
        log.info(
            "client registered",
            extra={"client_id": client_id, "cameras": len(cameras),
                   "hostname": info.get("hostname"), "replaced": replaced is not None},
        )  # fmt: skip

        def write() -> None:
            registry.register_client(self.redis, self.keys, info, cameras)
            self.redis.hdel(self.keys.client(client_id), "offline_at")

        self.writer.submit(f"register {client_id}", write)
        return encode_control("ack", reason="registered")

    def _on_heartbeat(self, routing_id: bytes, msg: dict[str, Any], _key: str | None) -> bytes:
        client_id = msg["client_id"]
        session = self._session_for(routing_id, client_id)
        if session is None:
            return self._reregister(client_id)
        agent_stats = {
            make_camera_id(client_id, name): {f"agent_{k}": v for k, v in st.items()}
            for name, st in msg["stats"].items()
            if name in session.cameras
        }

        info, cams = dict(session.info), list(session.cameras.values())

        def write() -> None:
            if self.redis.exists(self.keys.client(client_id)):
                registry.touch_client(self.redis, self.keys, client_id)
            else:  # registry lost (Redis restarted empty, or cleanup): rebuild it
                registry.register_client(self.redis, self.keys, info, cams)
            for cam, fields in agent_stats.items():
                if fields:
                    registry.update_camera(self.redis, self.keys, cam, fields)

        self.writer.submit(f"heartbeat {client_id}", write, key=f"heartbeat:{client_id}")
        return encode_control("ack")

    def _on_camera_info(self, routing_id: bytes, msg: dict[str, Any], _key: str | None) -> bytes:
        client_id = msg["client_id"]
        session = self._session_for(routing_id, client_id)
        if session is None:
            return self._reregister(client_id)
        cam = msg["camera"]
        name = cam["name"]
        if name in session.cameras:
            session.cameras[name].update(cam)
            cam_id = make_camera_id(client_id, name)
            fields = {k: v for k, v in cam.items() if k != "name"}
            self.writer.submit(
                f"camera_info {cam_id}",
                lambda: registry.update_camera(self.redis, self.keys, cam_id, fields),
            )
        else:  # a camera that appeared after registration (hot-plugged)
            self.sessions.add_camera(session, cam)
            info, cams = dict(session.info), list(session.cameras.values())
            self.writer.submit(
                f"register {client_id}",
                lambda: registry.register_client(self.redis, self.keys, info, cams),
            )
            log.info("camera added", extra={"client_id": client_id, "camera": name})
        return encode_control("ack")

    def _on_bye(self, routing_id: bytes, msg: dict[str, Any], _key: str | None) -> bytes | None:
        client_id = msg["client_id"]
        session = self._session_for(routing_id, client_id)
        if session is None:
            return None
        self.sessions.end(session)
        m.CLIENTS_CONNECTED.set(len(self.sessions))
        log.info("client said bye", extra={"client_id": client_id})
        # Stamped when written, so it is later than any queued heartbeat's last_seen.
        self.writer.submit(
            f"bye {client_id}",
            lambda: self.redis.hset(self.keys.client(client_id), "offline_at", str(time.time())),
        )
        return None

    def _expire_sessions(self) -> None:
        for session in self.sessions.expire(self.cfg.offline_after_s):
            log.info(
                "session expired (no control messages)", extra={"client_id": session.client_id}
            )
        m.CLIENTS_CONNECTED.set(len(self.sessions))

    # ----------------------------------------------------------------- commands
    def _drain_commands(self, cmd: zmq.Socket, router: zmq.Socket) -> None:
        while True:
            try:
                raw = cmd.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            self._route_command(router, msgpack.unpackb(raw, raw=False))

    def _route_command(self, router: zmq.Socket, fields: dict[str, str]) -> None:
        client_id = fields.get("client_id", "")
        camera = fields.get("camera") or None
        try:
            kind = fields.get("type", "")
            msg: dict[str, Any] = {}
            if camera is not None:
                msg["camera"] = camera
            if kind == "update_streaming_settings":
                if fields.get("quality"):
                    msg["quality"] = int(float(fields["quality"]))
                if fields.get("fps"):
                    msg["fps"] = float(fields["fps"])
            data = encode_control(kind, **msg)
            decode_control(data, expect=INGEST_TO_AGENT - {"ack", "reregister"})
        except (ValueError, ProtocolError) as exc:
            m.COMMANDS.labels("invalid").inc()
            self.count("commands_invalid")
            log.warning(
                "invalid command in stream", extra={"client_id": client_id, "error": str(exc)}
            )
            return
        session = self.sessions.by_client(client_id)
        problem = None
        if session is None:
            problem = "client not connected"
        elif camera is not None and camera not in session.cameras:
            problem = "unknown camera"
        elif not self._send(router, session.routing_id, [], data, what="command"):
            problem = "send failed"
        if problem:
            m.COMMANDS.labels("undeliverable").inc()
            self.count("commands_undeliverable")
            log.warning(
                "command not delivered",
                extra={"client_id": client_id, "command": kind, "camera": camera,
                       "problem": problem},
            )  # fmt: skip
            return
        m.COMMANDS.labels("sent").inc()
        self.count("commands_sent")
        log.info("command sent", extra={"client_id": client_id, "command": kind, "camera": camera})

    def _command_loop(self) -> None:
        pair = self._ctx.socket(zmq.PAIR)
        pair.setsockopt(zmq.LINGER, 0)
        pair.setsockopt(zmq.SNDTIMEO, 1000)
        pair.connect(self._cmd_addr)
        stream = self.keys.stream(STREAM_COMMANDS)
        last_id: str | None = None
        delay = 0.1
        try:
            while not self.stop_event.is_set():
                try:
                    if last_id is None:  # "$", resolved once so nothing slips in between
                        newest = self.redis.xrevrange(stream, count=1)
                        last_id = newest[0][0] if newest else "0-0"
                        self.commands_ready.set()
                        log.info("reading commands", extra={"stream": stream, "from": last_id})
                    resp = self.redis.xread({stream: last_id}, count=100, block=200)
                    delay = 0.1
                except redis.RedisError as exc:
                    ok, suppressed = self._burst.should_log("commands_redis")
                    if ok:
                        log.warning(
                            "cannot read commands, retrying",
                            extra={"error": str(exc), "suppressed": suppressed},
                        )
                    self.stop_event.wait(delay)
                    delay = min(delay * 2, 2.0)
                    continue
                for _stream, entries in resp or []:
                    for entry_id, fields in entries:
                        last_id = entry_id
                        try:
                            pair.send(msgpack.packb(fields, use_bin_type=True))
                        except zmq.Again:
                            m.COMMANDS.labels("undeliverable").inc()
                            self.count("commands_undeliverable")
                            log.warning("io loop busy, command dropped", extra={"id": entry_id})
        finally:
            pair.close(0)

    # ------------------------------------------------------------- housekeeping
    def _housekeeping_loop(self) -> None:
        now = time.monotonic()
        due = {"stats": now, "health": now, "cleanup": now + self.cleanup_interval_s}
        every = {
            "stats": self.cfg.stats_interval_s,
            "health": self.health_interval_s,
            "cleanup": self.cleanup_interval_s,
        }
        jobs = {"stats": self._flush_stats, "health": self._check_health, "cleanup": self._cleanup}
        if self.secure and self.cfg.authorized_keys:
            rescan = self.cfg.authorized_keys_rescan_s
            due["authorized_keys"] = now + (rescan or AUTHORIZED_RETRY_S)
            every["authorized_keys"] = min(rescan or AUTHORIZED_RETRY_S, AUTHORIZED_RETRY_S)
            jobs["authorized_keys"] = self._authorized_job
        while not self.stop_event.is_set():
            now = time.monotonic()
            for name, job in jobs.items():
                if now < due[name]:
                    continue
                due[name] = now + every[name]
                try:
                    job()
                except redis.RedisError as exc:
                    ok, suppressed = self._burst.should_log("housekeeping_redis")
                    if ok:
                        log.warning(
                            "redis unavailable for housekeeping",
                            extra={"job": name, "error": str(exc), "suppressed": suppressed},
                        )
                except Exception:
                    log.exception("housekeeping job failed", extra={"job": name})
            self.stop_event.wait(max(0.01, min(due.values()) - time.monotonic()))

    def _apply_authorized_keys(self, reload: bool = True) -> None:
        """Approve ``ingest.authorized_keys`` (re-read first when ``reload``)."""
        if self._key_store is None or not self.cfg.authorized_keys:
            return
        if reload:
            self.count("authorized_keys_scans")
            try:
                self.authorized.load()
            except ConfigError as exc:  # e.g. a half-written file: keep what was applied
                ok, suppressed = self._burst.should_log("authorized_keys")
                if ok:
                    log.warning(
                        "cannot re-read authorized keys; keeping the approvals made",
                        extra={"error": str(exc), "suppressed": suppressed},
                    )
                return
        try:
            approved = self.authorized.apply(self._key_store)
        except redis.RedisError as exc:
            self._authorized_pending = True
            ok, suppressed = self._burst.should_log("authorized_keys_redis")
            if ok:
                log.warning(
                    "cannot approve authorized keys yet (redis); retrying",
                    extra={"error": str(exc), "retry_s": AUTHORIZED_RETRY_S,
                           "suppressed": suppressed},
                )  # fmt: skip
            return
        self._authorized_pending = False
        self.count("authorized_keys_approved", len(approved))

    def _authorized_job(self) -> None:
        """Retry a failed approval (Redis was down); re-read the keys when due."""
        now = time.monotonic()
        rescan = self.cfg.authorized_keys_rescan_s
        due = bool(rescan) and now - self._authorized_scanned >= rescan
        if self._authorized_pending or due:
            self._authorized_scanned = now
            self._apply_authorized_keys(reload=due)

    def _flush_stats(self) -> None:
        snap = self.stats.snapshot()
        if not snap:
            return
        cams = list(snap)
        try:
            pipe = self.redis.pipeline(transaction=False)
            for cam in cams:
                pipe.sismember(self.keys.cameras, cam)
            known = pipe.execute()
            for cam, exists in zip(cams, known, strict=True):
                if exists:  # never resurrect a camera removed from the registry
                    registry.update_camera(self.redis, self.keys, cam, snap[cam])
                elif self.sessions.camera_registered(cam):
                    self.stats.mark_dirty([cam])  # its registration is still queued
        except redis.RedisError:
            self.stats.mark_dirty(cams)
            raise

    def _check_health(self) -> None:
        ids = sorted(_str(c) for c in self.redis.smembers(self.keys.clients))
        if not ids:
            return
        pipe = self.redis.pipeline(transaction=False)
        for cid in ids:
            pipe.hmget(self.keys.client(cid), "last_seen", "status", "offline_at")
        now = time.time()
        for cid, (last_seen, stored, offline_at) in zip(ids, pipe.execute(), strict=True):
            seen = float(last_seen) if last_seen else None
            status = registry.health(seen, now, self.cfg.stale_after_s, self.cfg.offline_after_s)
            if offline_at and seen and float(offline_at) >= seen:
                status = "offline"  # said bye
            self.client_status[cid] = status
            if status != stored:
                self.redis.hset(self.keys.client(cid), "status", status)
                registry.notify(
                    self.redis, self.keys, "client_status",
                    client_id=cid, status=status, previous=stored,
                )  # fmt: skip
                log.info(
                    "client status changed",
                    extra={"client_id": cid, "status": status, "previous": stored},
                )

    def _cleanup(self) -> None:
        removed = registry.cleanup_inactive(self.redis, self.keys, self.cfg.cleanup_after_s)
        for cid in removed:
            self.client_status.pop(cid, None)
            self.count("clients_removed")
            log.info(
                "removed inactive client",
                extra={"client_id": cid, "older_than_s": self.cfg.cleanup_after_s},
            )
