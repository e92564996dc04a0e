"""The control channel: a DEALER socket (routing id = client id) to ingest's ROUTER.

Agent -> ingest: ``register`` on start, ``heartbeat`` with per-camera stats every
``heartbeat_interval_s``, ``camera_info`` after a camera's settings change and
``bye`` on exit.  Ingest -> agent: ``ack``, ``reregister`` and the streaming
commands, which the agent applies and answers with ``camera_info``.

Liveness: ingest answers every register and heartbeat.  When nothing arrives for
``reply_timeout_s`` (ingest down, network cut, half-open TCP) the socket is
recreated and the agent registers again, retrying with exponential backoff.
Only this module's thread touches the socket; other threads queue messages with
:meth:`ControlChannel.send_soon`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import zmq

from edge_agent import metrics
from edge_agent.sender import SocketSecurity
from shared.logs import BurstLimiter
from shared.metrics import INVALID_INPUT
from shared.protocol import INGEST_TO_AGENT, ProtocolError, decode_control

log = logging.getLogger(__name__)

#: Handles a decoded command; returns the control messages to send in reply.
CommandHandler = Callable[[dict[str, Any]], list[bytes]]


def control_socket(
    ctx: zmq.Context, endpoint: str, client_id: str, secure: SocketSecurity | None = None
) -> zmq.Socket:
    sock = ctx.socket(zmq.DEALER)
    if secure is not None:
        secure(sock)
    sock.setsockopt(zmq.ROUTING_ID, client_id.encode())
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDHWM, 16)
    sock.setsockopt(zmq.RCVHWM, 64)
    sock.setsockopt(zmq.RECONNECT_IVL, 200)
    sock.setsockopt(zmq.RECONNECT_IVL_MAX, 2000)
    sock.setsockopt(zmq.HEARTBEAT_IVL, 2000)
    sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, 6000)
    sock.connect(endpoint)
    return sock


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

    def _run(self) -> None:
        sock = control_socket(self._ctx, self.endpoint, self.client_id, self._secure)
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
            sock.close(linger=300)

    def _step(
        self, sock: zmq.Socket, last_rx: float, next_heartbeat: float, backoff: float
    ) -> tuple[zmq.Socket, float, float, float]:
        """One turn of the loop: receive, flush the outbox, heartbeat, liveness."""
        if sock.poll(100, zmq.POLLIN) and self._receive(sock):
            last_rx = time.monotonic()
            backoff = 0.0
            self._set_connected(True)
        while self._outbox:
            msg_type, payload = self._outbox.popleft()
            self._send(sock, msg_type, payload)
        now = time.monotonic()
        if now >= next_heartbeat:
            self._send(sock, "heartbeat", self._heartbeat_message())
            next_heartbeat = now + self.heartbeat_interval_s
        if now - last_rx > self.reply_timeout_s + backoff:
            self._set_connected(False)
            log.warning(
                "no answer from ingest; recreating the control socket",
                extra={
                    "client_id": self.client_id,
                    "endpoint": self.endpoint,
                    "silent_s": round(now - last_rx, 1),
                    "attempt": self.reconnects + 1,
                },
            )
            sock.close(0)
            with self._lock:
                self.reconnects += 1
            metrics.RECONNECTS.inc()
            sock = control_socket(self._ctx, self.endpoint, self.client_id, self._secure)
            self._register(sock)
            last_rx = time.monotonic()
            next_heartbeat = last_rx + self.heartbeat_interval_s
            backoff = min(max(1.0, backoff * 2), self.max_backoff_s)
        return sock, last_rx, next_heartbeat, backoff
