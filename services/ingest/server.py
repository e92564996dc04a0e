"""The ingest server: wiring of the frame path, agent control, commands, housekeeping.

Threads (ZeroMQ sockets are not thread-safe, so each socket has one owner):

* ``ingest-io`` owns every socket (PULL, ROUTER, PUB, the inproc PAIR that carries
  commands, the socket monitors) and runs :class:`~services.ingest.frames.FramePath`
  (receive without copying, validate, check the camera against the in-memory
  session table, publish the original frames),
  :class:`~services.ingest.control.ControlPlane` (sessions and control messages) and
  the sending half of :class:`~services.ingest.commands.CommandRouter`.  No Redis
  round trip per frame; registry writes are queued to the writer thread.
* ``ingest-commands`` follows the ``commands`` stream and hands commands to the io
  thread over the PAIR socket.
* ``ingest-registry`` (:class:`RegistryWriter`) applies registry writes in order,
  retrying while Redis is down.
* ``ingest-housekeeping`` (:class:`~services.ingest.housekeeping.Housekeeping`)
  flushes per-camera stats, tracks client health and removes clients offline for
  longer than ``ingest.cleanup_after_s``.
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

import zmq
from zmq.utils.monitor import recv_monitor_message

from services.ingest import metrics as m
from services.ingest.authorized import AuthorizedKeys
from services.ingest.clock import ClockOffsets
from services.ingest.commands import CommandRouter
from services.ingest.control import ControlPlane
from services.ingest.frames import FramePath
from services.ingest.housekeeping import Housekeeping
from services.ingest.registry_writer import RegistryWriter
from services.ingest.sessions import SessionTable
from services.ingest.stats import StatsTable
from shared.config import ConfigError, IngestConfig, RedisConfig, default_state_dir
from shared.ingest_info import publish_ingest_info
from shared.keys import Keys
from shared.logs import BurstLimiter
from shared.metrics import INVALID_INPUT
from shared.protocol import MAX_CONTROL_BYTES
from shared.redisutil import connect, redact_url
from shared.security import (
    FANOUT_ZAP_DOMAIN,
    AgentKeyStore,
    CurveAuthenticator,
    FanoutAuthenticator,
    SubscriberKeyStore,
    fingerprint,
    load_or_create_keypair,
    server_socket_options,
)

log = logging.getLogger(__name__)

SERVICE = "ingest"
#: Largest message part a subscriber may send to the PUB port (subscriptions are
#: camera topics, a few hundred bytes at most).
PUB_MAX_INBOUND_BYTES = 4096
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
#: Registry, commands and housekeeping calls give up on a silent Redis after this long.
REDIS_TIMEOUT_S = 5.0
#: Key checks (handshakes, client-id binding) give up on Redis after this long.
KEY_CHECK_TIMEOUT_S = 0.5
#: Control messages queued in ZeroMQ before the control thread reads them (per peer).
CONTROL_RCVHWM = 1000
#: How often the control thread expires sessions and applies key revocations.
CONTROL_TICK_S = 0.25
_LOOPBACK = ("127.0.0.1", "localhost", "::1")


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
        #: CURVE on the fan-out (PUB) port: ``ingest.fanout_curve`` resolved.
        self.fanout_curve = ingest_cfg.fanout_curve_on()
        #: The fan-out's ZAP decisions (registered subscriber keys), when it is CURVE.
        self.fanout_auth: FanoutAuthenticator | None = None
        self.key_store: AgentKeyStore | None = None
        #: The ZAP handler's view of key statuses (secure mode), read without Redis.
        self.key_cache: Any = None
        #: ``ingest.authorized_keys``, read now so a bad entry fails at start.
        self.authorized = AuthorizedKeys(ingest_cfg.authorized_keys)
        if self.secure and ingest_cfg.authorized_keys:
            self.authorized.load()
        elif ingest_cfg.authorized_keys:
            log.warning("ingest.authorized_keys is ignored: ingest.insecure is true")
        self.redis_cfg = redis_cfg
        self.keys = Keys(redis_cfg.prefix)
        self.redis = connect(redis_cfg.url, timeout=2.0, socket_timeout=REDIS_TIMEOUT_S)
        #: Key checks (ZAP, client-id binding) wait at most this long for Redis.
        self.key_redis = connect(
            redis_cfg.url, timeout=KEY_CHECK_TIMEOUT_S, socket_timeout=KEY_CHECK_TIMEOUT_S
        )
        self.health_interval_s = health_interval_s
        self.cleanup_interval_s = cleanup_interval_s or min(60.0, ingest_cfg.cleanup_after_s)
        self.sessions = SessionTable()
        self.stats = StatsTable()
        self.clocks = ClockOffsets(ingest_cfg.limits.clock_window_s)
        self.counters: Counter[str] = Counter()
        self.invalid: Counter[tuple[str, str]] = Counter()
        self.client_status: dict[str, str] = {}
        self.stop_event = threading.Event()
        self.frame_port = 0
        self.control_port = 0
        self.pub_port = 0
        self.burst = BurstLimiter()
        self.lock = threading.Lock()
        self.writer = RegistryWriter(burst=self.burst)
        self._own_ctx = zmq_context is None
        self.ctx = zmq_context or zmq.Context(io_threads=ingest_cfg.zmq_io_threads())
        self._cmd_addr = f"inproc://ingest-commands-{id(self)}-{next(_instance_ids)}"
        self._threads: list[threading.Thread] = []
        self._sockets: dict[str, zmq.Socket] = {}
        self._monitors: dict[zmq.Socket, str] = {}
        self._started = False
        self.frames = FramePath(self)
        self.control = ControlPlane(self)
        self.commands = CommandRouter(self, self.control, self._cmd_addr)
        self.commands_ready = self.commands.ready
        self.housekeeping = Housekeeping(self)

    # ------------------------------------------------------------------ public
    def start(self) -> IngestServer:
        """Bind the sockets and start the threads (non-blocking)."""
        if self._started:
            raise RuntimeError("IngestServer already started")
        host = self.cfg.bind_host
        secret = None
        if self.secure or self.fanout_curve:
            self.server_public, secret = load_or_create_keypair(self.keys_dir, "ingest")
        if self.secure:
            lim = self.cfg.limits
            self.key_store = AgentKeyStore(
                self.key_redis, self.keys, clients_per_key=lim.clients_per_key
            )
            self.housekeeping.apply_authorized_keys(reload=False)  # before any agent can connect
            self._auth = CurveAuthenticator(  # before any bind
                self.ctx, self.key_store, refresh_s=lim.key_cache_refresh_s,
                pending_max=lim.pending_keys_max, pending_per_source=lim.pending_keys_per_source,
                pending_per_minute=lim.pending_keys_per_minute,
                pending_ttl_s=lim.pending_key_ttl_s, notice_s=lim.pending_notice_s,
            )  # fmt: skip
            self.key_cache = self._auth.provider
            self._auth.on_refresh.append(self.control.keys_refreshed)
        if self.fanout_curve:  # before any bind; joins the agents' ZAP handler if any
            self.fanout_auth = FanoutAuthenticator(
                self.ctx, SubscriberKeyStore(self.key_redis, self.keys),
                refresh_s=self.cfg.limits.key_cache_refresh_s, zap=self._auth,
            )  # fmt: skip
        try:
            pull = self._socket("frame", zmq.PULL)
            if secret and self.secure:
                server_socket_options(pull, self.server_public or "", secret)
            pull.setsockopt(zmq.MAXMSGSIZE, self.cfg.max_frame_bytes)
            pull.setsockopt(zmq.RCVHWM, 1000)
            self.frame_port = _bind(pull, host, self.cfg.frame_port)

            router = self._socket("control", zmq.ROUTER)
            if secret and self.secure:
                server_socket_options(router, self.server_public or "", secret)
            router.setsockopt(zmq.MAXMSGSIZE, MAX_CONTROL_BYTES)
            router.setsockopt(zmq.ROUTER_MANDATORY, 1)
            router.setsockopt(zmq.ROUTER_HANDOVER, 1)
            router.setsockopt(zmq.SNDHWM, 100)
            router.setsockopt(zmq.RCVHWM, CONTROL_RCVHWM)  # the bounded control queue
            self.control_port = _bind(router, host, self.cfg.control_port)

            pub = self._socket("pub", zmq.PUB)
            if secret and self.fanout_curve:
                server_socket_options(
                    pub, self.server_public or "", secret, domain=FANOUT_ZAP_DOMAIN
                )
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
            self._stop_auth()
            raise OSError(f"ingest cannot bind on {host}: {exc}") from exc
        self._started = True
        publish_ingest_info(self.redis, self.keys, bind_host=host, frame_port=self.frame_port, control_port=self.control_port, public_key=self.server_public if self.secure else None, fanout_key=self.server_public if self.fanout_curve else None)  # fmt: skip  # noqa: E501 (agent bootstrap, edge branch)
        self.writer.start()
        for target, name in (
            (self._frame_loop, "io"),
            (self._control_loop, "control"),
            (self.commands.run, "commands"),
            (self.housekeeping.run, "housekeeping"),
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
                "fanout": "curve" if self.fanout_curve else "plaintext",
                "fanout_curve": self.cfg.fanout_curve,
                "io_threads": self.ctx.get(zmq.IO_THREADS),
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
        if not self.fanout_curve:
            log.log(
                logging.INFO if host in _LOOPBACK else logging.WARNING,
                "frame fan-out is plaintext: any process that reaches the PUB port can "
                "watch every camera (ingest.fanout_curve)",
                extra={"bind_host": host, "pub_port": self.pub_port,
                       "fanout_curve": self.cfg.fanout_curve},
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
        self._close_sockets()
        self.writer.wait_idle(1.0)
        self.writer.stop()
        self._stop_auth()
        self.redis.close()
        self.key_redis.close()
        if self._own_ctx:
            self.ctx.term()
        m.CLIENTS_CONNECTED.set(0)
        log.info("ingest stopped", extra={"counters": dict(self.counters)})

    def wait_ready(self, timeout: float = 10.0) -> bool:
        """True once commands sent from now on will be routed."""
        return self.commands_ready.wait(timeout)

    def invalid_count(self, reason: str, port: str | None = None) -> int:
        with self.lock:
            return sum(n for (p, r), n in self.invalid.items() if r == reason and port in (None, p))

    def count(self, name: str, n: int = 1) -> None:
        with self.lock:
            self.counters[name] += n

    def _stop_auth(self) -> None:
        if self.fanout_auth is not None:
            self.fanout_auth.stop()
            self.fanout_auth = None
        if self._auth is not None:
            self._auth.stop()
            self._auth = None

    # ------------------------------------------------------------- socket setup
    def _socket(self, name: str, kind: int) -> zmq.Socket:
        sock = self.ctx.socket(kind)
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
    def reject(self, port: str, reason: str, detail: str = "", **ctx: Any) -> None:
        """Count and log (once per burst) one piece of bad input from the network."""
        INVALID_INPUT.labels(SERVICE, reason).inc()
        with self.lock:
            self.invalid[(port, reason)] += 1
        ok, suppressed = self.burst.should_log(f"{port}:{reason}")
        if ok:
            log.warning(
                "dropped invalid input",
                extra={"port": port, "reason": reason, "detail": detail[:200],
                       "suppressed": suppressed, **ctx},
            )  # fmt: skip

    # ------------------------------------------------------------------- loops
    def _frame_loop(self) -> None:
        """``ingest-io``: the frame path only (PULL -> PUB); never waits on Redis."""
        pull, pub = self._sockets["frame"], self._sockets["pub"]
        mons = {mon: port for mon, port in self._monitors.items() if port != "control"}
        self._loop([pull, *mons], lambda ready: self._frame_turn(ready, pull, pub, mons))

    def _frame_turn(self, ready: dict, pull: zmq.Socket, pub: zmq.Socket, mons: dict) -> None:
        if pull in ready:
            self.frames.drain(pull, pub)
        for mon, port in mons.items():
            if mon in ready:
                self._drain_monitor(mon, port)

    def _control_loop(self) -> None:
        """``ingest-control``: sessions, control replies, commands; may wait on Redis
        (client-id binding) without holding up a single frame."""
        router, cmd = self._sockets["control"], self._sockets["commands"]
        mons = {mon: port for mon, port in self._monitors.items() if port == "control"}
        next_tick = [time.monotonic()]

        def turn(ready: dict) -> None:
            if router in ready:
                self.control.drain(router)
            if cmd in ready:
                self.commands.drain(cmd, router)
            for mon, port in mons.items():
                if mon in ready:
                    self._drain_monitor(mon, port)
            now = time.monotonic()
            if now >= next_tick[0]:
                next_tick[0] = now + CONTROL_TICK_S
                self.control.tick()

        self._loop([router, cmd, *mons], turn)

    def _loop(self, socks: list[zmq.Socket], turn: Any) -> None:
        poller = zmq.Poller()
        for sock in socks:
            poller.register(sock, zmq.POLLIN)
        while not self.stop_event.is_set():
            ready = dict(poller.poll(100))
            try:
                turn(ready)
            except Exception:  # a bug must not take the frame path down
                self.count("internal_error")
                ok, suppressed = self.burst.should_log("internal_error")
                if ok:
                    log.exception("ingest loop error", extra={"suppressed": suppressed})

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
                self.reject(port, "handshake_failed", f"zmq event {int(ev['event'])}")
