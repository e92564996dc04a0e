"""The one thread that owns the PUSH socket to ingest (ZeroMQ sockets are not thread-safe).

Sends are non-blocking with a tiny high-water mark and ``IMMEDIATE``: when ingest is
slow or unreachable a frame is dropped and counted instead of queued, so the
agent's memory and latency stay bounded and the next frame sent is a fresh one.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence

import zmq

from edge_agent.camera import Camera, EncodedFrame
from shared.logs import BurstLimiter
from shared.protocol import encode_frame

log = logging.getLogger(__name__)


#: Frames undeliverable this long while ingest answers control: new PUSH socket.
STALL_RECREATE_S = 3.0

#: Applies transport security (CURVE client keys) to a socket before it connects.
SocketSecurity = Callable[[zmq.Socket], None]


def dial(sock: zmq.Socket, endpoint: str, secure: SocketSecurity | None = None) -> zmq.Socket:
    """Options every agent -> ingest socket shares, then connect."""
    if secure is not None:
        secure(sock)
    sock.setsockopt(zmq.LINGER, 0)
    # ZMTP heartbeats notice a dead link (cable pulled, ingest host gone) in seconds.
    sock.setsockopt(zmq.HEARTBEAT_IVL, 2000)
    sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, 6000)
    sock.setsockopt(zmq.RECONNECT_IVL, 200)
    sock.setsockopt(zmq.RECONNECT_IVL_MAX, 2000)
    sock.connect(endpoint)
    return sock


def frame_socket(
    ctx: zmq.Context, endpoint: str, hwm: int, secure: SocketSecurity | None = None
) -> zmq.Socket:
    sock = ctx.socket(zmq.PUSH)
    sock.setsockopt(zmq.SNDHWM, hwm)
    sock.setsockopt(zmq.IMMEDIATE, 1)  # never queue for a peer that is not connected
    return dial(sock, endpoint, secure)


class FrameSender:
    """Round-robin over the cameras' latest JPEGs; send each with NOBLOCK.

    Until ``link_up()`` is true (ingest has acknowledged the agent's first
    ``register``) frames are dropped and counted: ingest discards frames of
    cameras it does not know yet, so sending them would only waste bandwidth.
    """

    def __init__(
        self,
        ctx: zmq.Context,
        endpoint: str,
        cameras: Callable[[], Sequence[Camera]],
        hwm: int = 2,
        link_up: Callable[[], bool] = lambda: True,
        secure: SocketSecurity | None = None,
        generation: Callable[[], int] = lambda: 0,
        peer_alive: Callable[[], bool] = lambda: False,
    ) -> None:
        self.endpoint = endpoint
        self._ctx = ctx
        self._cameras = cameras
        self._hwm = hwm
        self._link_up = link_up
        self._secure = secure
        self._generation = generation
        self._peer_alive = peer_alive
        self._burst = BurstLimiter()
        self._ready = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="frame-sender", daemon=True)
        self._socket_ready = threading.Event()

    def start(self) -> None:
        self._thread.start()
        self._socket_ready.wait(2.0)

    def notify(self) -> None:
        """Called by an encoder when a new JPEG is waiting."""
        self._ready.set()

    def request_stop(self) -> None:
        self._stop.set()
        self._ready.set()

    def join(self, timeout: float) -> bool:
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _run(self) -> None:
        sock = frame_socket(self._ctx, self.endpoint, self._hwm, self._secure)
        generation = self._generation()
        self._socket_ready.set()
        log.info("frame socket connecting", extra={"endpoint": self.endpoint})
        start = 0
        failing_since: float | None = None  # first failed send since the last success
        try:
            while not self._stop.is_set():
                self._ready.wait(0.25)
                self._ready.clear()  # clear before scanning: a later notify is never lost
                now = time.monotonic()
                stalled = (
                    failing_since is not None
                    and now - failing_since > STALL_RECREATE_S
                    and self._peer_alive()
                )
                if self._generation() != generation or stalled:
                    generation = self._generation()
                    sock.close(0)
                    sock = frame_socket(self._ctx, self.endpoint, self._hwm, self._secure)
                    failing_since = None
                    log.info(
                        "frame socket recreated",
                        extra={"endpoint": self.endpoint, "stalled": stalled},
                    )
                cams = list(self._cameras())
                progress = True
                while progress and not self._stop.is_set() and cams:
                    progress = False
                    start = (start + 1) % len(cams)
                    for cam in cams[start:] + cams[:start]:
                        item = cam.take_encoded()
                        if item is None:
                            continue
                        progress = True
                        sent = self._send(sock, cam, item)
                        if sent:
                            failing_since = None
                        elif sent is False and failing_since is None:
                            failing_since = time.monotonic()
        finally:
            sock.close(0)

    def _send(self, sock: zmq.Socket, cam: Camera, item: EncodedFrame) -> bool | None:
        """True: sent; False: the socket refused it; None: held back (no ack yet)."""
        if not self._link_up():
            cam.record_dropped()
            return None
        try:
            sock.send_multipart(encode_frame(item.header, item.jpeg), flags=zmq.NOBLOCK, copy=False)
        except zmq.Again:  # no connection or its queue is full: drop, never wait
            cam.record_dropped()
            return False
        except zmq.ZMQError as exc:  # never let one send kill the sender
            cam.record_dropped()
            ok, suppressed = self._burst.should_log("send")
            if ok:
                log.warning(
                    "frame send failed", extra={"error": str(exc), "suppressed": suppressed}
                )
            return False
        cam.record_sent(len(item.jpeg))
        return True
