"""The control channel: a DEALER socket to ingest's ROUTER.

Agent -> ingest: ``register`` on start, ``heartbeat`` with per-camera stats every
``heartbeat_interval_s``, ``camera_info`` after a camera's settings change and
``bye`` on exit.  Ingest -> agent: ``ack``, ``reregister`` and the streaming
commands, which the agent applies and answers with ``camera_info``.

Routing id: each socket gets a random one.  Ingest maps it to the client id on
``register``; the client id is *not* used as the routing id, because ingest's
ROUTER hands a routing id over to the newest connection: a second agent claiming
the same client id would cut the real agent's control connection off.

Liveness: ingest answers every register and heartbeat.  When nothing arrives for
``reply_timeout_s`` (ingest down, network cut, half-open TCP) the socket is
recreated and the agent registers again, retrying with exponential backoff up to
``max_backoff_s``.  While ingest refuses the CURVE handshake (a socket monitor sees
``EVENT_HANDSHAKE_FAILED_AUTH``: the agent's key is pending approval) or has never
answered, the retry interval is capped at ``refused_retry_s`` so an agent approved
after minutes of waiting gets in within seconds.
Only this module's thread touches the socket; other threads queue messages with
:meth:`ControlChannel.send_soon`.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import zmq
from zmq.utils.monitor import recv_monitor_message

from edge_agent import metrics
from edge_agent.sender import SocketSecurity, dial
from shared.logs import BurstLimiter
from shared.metrics import INVALID_INPUT
from shared.protocol import INGEST_TO_AGENT, ProtocolError, decode_control

log = logging.getLogger(__name__)

#: Handles a decoded command; returns the control messages to send in reply.
CommandHandler = Callable[[dict[str, Any]], list[bytes]]


#: Handshake events the control socket's monitor reports.
MONITORED_EVENTS = zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_HANDSHAKE_FAILED_AUTH


def new_routing_id() -> bytes:
    """A random routing id (ZeroMQ reserves ids starting with a zero byte)."""
    return b"edge-" + secrets.token_hex(8).encode()


def control_socket(
    ctx: zmq.Context, endpoint: str, secure: SocketSecurity | None = None
) -> zmq.Socket:
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.ROUTING_ID, new_routing_id())
    sock.setsockopt(zmq.SNDHWM, 16)
    sock.setsockopt(zmq.RCVHWM, 64)
    return dial(sock, endpoint, secure)


class ControlChannel:
    def __init__(
        self,
        ctx: zmq.Context,
        endpoint: str,
        client_id: str,
        *,
        register_message: Callable[[], bytes],
        heartbeat_message: Callable[[], bytes],
        bye_message: Callable[[], bytes],
        on_command: CommandHandler,
        heartbeat_interval_s: float = 2.0,
        reply_timeout_s: float = 6.0,
        max_backoff_s: float = 30.0,
        refused_retry_s: float = 3.0,
        secure: SocketSecurity | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.client_id = client_id
        self._ctx = ctx
        self._register_message = register_message
        self._heartbeat_message = heartbeat_message
        self._bye_message = bye_message
        self._on_command = on_command
        self.heartbeat_interval_s = heartbeat_interval_s
        self.reply_timeout_s = reply_timeout_s
        self.max_backoff_s = max_backoff_s
        self.refused_retry_s = refused_retry_s
        self._secure = secure
        self._outbox: deque[tuple[str, bytes]] = deque(maxlen=256)
        self._stop = threading.Event()
        self._burst = BurstLimiter()
        self._thread = threading.Thread(target=self._run, name="control", daemon=True)
        self._lock = threading.Lock()
        #: Times a register was sent / acknowledged, reconnects; read by tests and stats.
        self.registrations = 0
        self.acks = 0
        self.reconnects = 0
        self.connected = False
        #: Handshakes ingest refused (key not approved) / accepted, from the monitor.
        self.refusals = 0
        self.handshakes = 0
        #: Ingest refused the last handshake and nothing was received since.
        self.refused = False
        #: Any valid message from ingest, ever (on any socket).
        self.answered = False
        self._monitor: zmq.Socket | None = None
        #: Set once the thread has its first socket (the agent says "ready" after it).
        self.opened = threading.Event()

    def start(self) -> None:
        self._thread.start()

    def request_stop(self) -> None:
        self._stop.set()

    def join(self, timeout: float) -> bool:
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def send_soon(self, msg_type: str, payload: bytes) -> None:
        """Queue a message for the control thread (thread-safe)."""
        self._outbox.append((msg_type, payload))

    # ------------------------------------------------------------------ thread

    def _send(self, sock: zmq.Socket, msg_type: str, payload: bytes) -> bool:
        try:
            sock.send(payload, flags=zmq.NOBLOCK)
        except zmq.Again:
            log.debug("control message not sent (ingest unreachable)", extra={"type": msg_type})
            return False
        metrics.CONTROL_MESSAGES.labels("out", msg_type).inc()
        return True

    def _register(self, sock: zmq.Socket) -> None:
        if self._send(sock, "register", self._register_message()):
            with self._lock:
                self.registrations += 1
            log.info(
                "register sent", extra={"client_id": self.client_id, "endpoint": self.endpoint}
            )

    def _set_connected(self, value: bool) -> None:
        if value != self.connected:
            self.connected = value
            metrics.CONNECTED.set(1 if value else 0)
            if value:
                log.info("ingest answered: connected", extra={"client_id": self.client_id})

    def _receive(self, sock: zmq.Socket) -> bool:
        """Handle every waiting message; True if any valid one arrived."""
        got = False
        while True:
            try:
                parts = sock.recv_multipart(flags=zmq.NOBLOCK)
            except zmq.Again:
                return got
            # Ingest may or may not put an empty delimiter before the payload.
            if len(parts) == 2 and parts[0] == b"":
                parts = parts[1:]
            try:
                if len(parts) != 1:
                    raise ProtocolError("bad_multipart", f"{len(parts)} parts")
                msg = decode_control(parts[0], expect=INGEST_TO_AGENT)
            except ProtocolError as exc:
                INVALID_INPUT.labels(metrics.SERVICE, exc.reason).inc()
                ok, suppressed = self._burst.should_log(exc.reason)
                if ok:
                    log.warning(
                        "invalid control message dropped",
                        extra={
                            "reason": exc.reason,
                            "detail": exc.detail,
                            "suppressed": suppressed,
                        },
                    )
                continue
            got = True
            self._handle(sock, msg)

    def _handle(self, sock: zmq.Socket, msg: dict[str, Any]) -> None:
        kind = msg["type"]
        metrics.CONTROL_MESSAGES.labels("in", kind).inc()
        if kind == "ack":
            with self._lock:
                self.acks += 1
            return
        if kind == "reregister":
            log.info("ingest asked to register again", extra={"reason": msg.get("reason", "")})
            self._register(sock)
            return
        try:
            replies = self._on_command(msg)
        except Exception:  # a bug in a handler must not kill the control channel
            log.exception("command failed", extra={"type": kind})
            return
        for payload in replies:
            self._send(sock, "camera_info", payload)

    def _open(self) -> zmq.Socket:
        """A new DEALER (new routing id) with a handshake monitor attached."""
        sock = control_socket(self._ctx, self.endpoint, self._secure)
        self._monitor = sock.get_monitor_socket(MONITORED_EVENTS)
        return sock

    def _close(self, sock: zmq.Socket, linger: int = 0) -> None:
        if self._monitor is not None:
            try:
                sock.disable_monitor()
            except zmq.ZMQError:  # already gone; closing is what matters
                pass
            self._monitor.close(0)
            self._monitor = None
        sock.close(linger=linger)

    def _drain_monitor(self, sock: zmq.Socket) -> None:
        """Track handshake results; register at once when a refused agent gets in."""
        assert self._monitor is not None
        while True:
            try:
                event = recv_monitor_message(self._monitor, flags=zmq.NOBLOCK)
            except zmq.Again:
                return
            if event["event"] == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
                with self._lock:
                    self.refusals += 1
                metrics.HANDSHAKES_REFUSED.inc()
                if not self.refused:
                    self.refused = True
                    self._set_connected(False)
                    log.warning(
                        "ingest refused this agent's key (pending approval?); "
                        "retrying every few seconds",
                        extra={
                            "client_id": self.client_id,
                            "endpoint": self.endpoint,
                            "retry_s": self.refused_retry_s,
                        },
                    )
            elif event["event"] == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                with self._lock:
                    self.handshakes += 1
                if self.refused:
                    # Approved meanwhile: ZeroMQ reconnected by itself; a register
                    # queued before the refusal may be lost, so send one now.
                    self.refused = False
                    self._register(sock)

    def _run(self) -> None:
        sock = self._open()
        self.opened.set()
        self._register(sock)
        now = time.monotonic()
        last_rx = now
        next_heartbeat = now + self.heartbeat_interval_s
        backoff = 0.0
        try:
            while not self._stop.is_set():
                try:
                    sock, last_rx, next_heartbeat, backoff = self._step(
                        sock, last_rx, next_heartbeat, backoff
                    )
                except zmq.ZMQError as exc:  # keep the channel alive; the timeout recovers
                    ok, suppressed = self._burst.should_log("zmq")
                    if ok:
                        log.warning(
                            "control socket error",
                            extra={"error": str(exc), "suppressed": suppressed},
                        )
                    self._stop.wait(0.5)
        finally:
            # Best effort goodbye so ingest marks us offline at once.
            self._send(sock, "bye", self._bye_message())
            self._close(sock, linger=300)

    def retry_after(self, backoff: float) -> float:
        """Seconds of silence before the socket is recreated and register retried."""
        wait = self.reply_timeout_s + backoff
        if self.refused or not self.answered:
            return min(wait, self.refused_retry_s)
        return wait

    def _step(
        self, sock: zmq.Socket, last_rx: float, next_heartbeat: float, backoff: float
    ) -> tuple[zmq.Socket, float, float, float]:
        """One turn of the loop: receive, flush the outbox, heartbeat, liveness."""
        assert self._monitor is not None
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        poller.register(self._monitor, zmq.POLLIN)
        ready = dict(poller.poll(100))
        if self._monitor in ready:
            self._drain_monitor(sock)
        if sock in ready and self._receive(sock):
            last_rx = time.monotonic()
            backoff = 0.0
            self.refused = False
            self.answered = True
            self._set_connected(True)
        while self._outbox:
            msg_type, payload = self._outbox.popleft()
            self._send(sock, msg_type, payload)
        now = time.monotonic()
        if now >= next_heartbeat:
            self._send(sock, "heartbeat", self._heartbeat_message())
            next_heartbeat = now + self.heartbeat_interval_s
        if now - last_rx > self.retry_after(backoff):
            self._set_connected(False)
            # While refused this repeats every few seconds: one line per burst.
            ok, suppressed = self._burst.should_log("refused") if self.refused else (True, 0)
            if ok:
                log.warning(
                    "no answer from ingest; recreating the control socket",
                    extra={
                        "client_id": self.client_id,
                        "endpoint": self.endpoint,
                        "silent_s": round(now - last_rx, 1),
                        "attempt": self.reconnects + 1,
                        "refused": self.refused,
                        "suppressed": suppressed,
                    },
                )
            self._close(sock)
            with self._lock:
                self.reconnects += 1
            metrics.RECONNECTS.inc()
            sock = self._open()
            self._register(sock)
            last_rx = time.monotonic()
            next_heartbeat = last_rx + self.heartbeat_interval_s
            backoff = min(max(1.0, backoff * 2), self.max_backoff_s)
        return sock, last_rx, next_heartbeat, backoff
