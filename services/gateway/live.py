"""Live frames for viewers: a SUB socket to ingest's fan-out, only for watched cameras.

A thread owns the ZeroMQ socket (sockets are not thread-safe); asyncio code asks for
cameras with :meth:`LiveFrames.acquire` / :meth:`LiveFrames.release` (reference
counted, with a linger so a page reload does not resubscribe) and receives frames
through a callback run on the event loop.  Only the latest JPEG per camera is kept.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import zmq

from services.gateway import metrics
from shared.fanout import FanoutKeys, FanoutSubscriber
from shared.logs import BurstLimiter
from shared.metrics import INVALID_INPUT
from shared.protocol import FrameHeader

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class LiveFrame:
    header: FrameHeader
    jpeg: bytes | memoryview  # a view of the received message (no copy)
    received: float

    @property
    def camera_id(self) -> str:
        return self.header.camera_id


FrameCallback = Callable[[LiveFrame], None]


class LiveFrames:
    def __init__(
        self,
        endpoint: str,
        *,
        linger_s: float = 10.0,
        max_jpeg_bytes: int = 8 * 1024 * 1024,
        rcv_hwm: int = 32,
        ctx: zmq.Context | None = None,
        fanout_keys: FanoutKeys | None = None,
    ) -> None:
        self.endpoint = endpoint
        #: The gateway's fan-out key pair (None: plaintext only, e.g. in unit tests).
        self.fanout_keys = fanout_keys
        self.linger_s = linger_s
        self.max_jpeg_bytes = max_jpeg_bytes
        self.rcv_hwm = rcv_hwm
        self.ctx = ctx or zmq.Context.instance()
        self._lock = threading.Lock()
        self._refs: dict[str, int] = {}
        self._release_at: dict[str, float] = {}  # camera -> when to unsubscribe
        self._latest: dict[str, LiveFrame] = {}
        self._subscribed: frozenset[str] = frozenset()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._callbacks: list[FrameCallback] = []
        self._waiters: dict[str, asyncio.Event] = {}
        self._burst = BurstLimiter()

    # ---------------------------------------------------------------- lifecycle
    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._thread = threading.Thread(target=self._run, name="gateway-live", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(5)
        if self.fanout_keys is not None:
            self.fanout_keys.stop()

    def on_frame(self, callback: FrameCallback) -> None:
        """Register a callback run on the event loop for every received frame."""
        self._callbacks.append(callback)

    # ------------------------------------------------------------ subscriptions
    def acquire(self, camera_id: str) -> None:
        with self._lock:
            self._refs[camera_id] = self._refs.get(camera_id, 0) + 1
            self._release_at.pop(camera_id, None)

    def release(self, camera_id: str, linger: float | None = None) -> None:
        with self._lock:
            n = self._refs.get(camera_id, 0) - 1
            if n > 0:
                self._refs[camera_id] = n
                return
            self._refs.pop(camera_id, None)
            self._release_at[camera_id] = time.monotonic() + (
                self.linger_s if linger is None else linger
            )

    def wanted(self) -> frozenset[str]:
        """Cameras that should be subscribed now (viewed, or lingering)."""
        now = time.monotonic()
        with self._lock:
            for cam, at in list(self._release_at.items()):
                if at <= now:
                    del self._release_at[cam]
                    self._latest.pop(cam, None)
            return frozenset(self._refs) | frozenset(self._release_at)

    @property
    def subscribed(self) -> frozenset[str]:
        """Cameras the SUB socket is subscribed to right now."""
        return self._subscribed

    def latest(self, camera_id: str) -> LiveFrame | None:
        with self._lock:
            return self._latest.get(camera_id)

    async def wait_frame(self, camera_id: str, newer_than: int, timeout: float) -> LiveFrame | None:
        """The latest frame with ``seq > newer_than`` (or a restart), waiting up to ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            frame = self.latest(camera_id)
            if frame is not None and frame.header.seq != newer_than:
                return frame
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            ev = self._waiters.setdefault(camera_id, asyncio.Event())
            try:
                await asyncio.wait_for(ev.wait(), remaining)
            except TimeoutError:
                return None

    # ------------------------------------------------------------------ thread
    def _dispatch(self, frame: LiveFrame) -> None:
        ev = self._waiters.pop(frame.camera_id, None)
        if ev is not None:
            ev.set()
        for cb in self._callbacks:
            try:
                cb(frame)
            except Exception:
                log.exception("frame callback failed", extra={"camera_id": frame.camera_id})

    def _count_invalid(self, reason: str) -> None:
        INVALID_INPUT.labels("gateway", reason).inc()
        ok, suppressed = self._burst.should_log(reason)
        if ok:
            log.warning(
                "dropped invalid live frame", extra={"reason": reason, "suppressed": suppressed}
            )

    def _run(self) -> None:
        if self.fanout_keys is not None:
            self.fanout_keys.start()  # on this thread: Redis calls off the event loop
        sub = FanoutSubscriber(
            self.ctx,
            self.endpoint,
            rcv_hwm=self.rcv_hwm,
            max_jpeg_bytes=self.max_jpeg_bytes,
            on_invalid=lambda exc: self._count_invalid(exc.reason),
            keys=self.fanout_keys,
        )
        try:
            while not self._stop.is_set():
                if sub.follow(self.wanted()):
                    self._subscribed = sub.subscribed
                    metrics.LIVE_SUBSCRIBED.set(len(sub.subscribed))
                if not sub.poll(50):
                    continue
                newest: dict[str, LiveFrame] = {}
                for header, jpeg in sub.drain(256):  # keep only the newest frame per camera
                    metrics.LIVE_FRAMES.labels("received").inc()
                    if header.camera_id in newest:
                        metrics.LIVE_FRAMES.labels("superseded").inc()
                    newest[header.camera_id] = LiveFrame(header, jpeg, time.time())
                if not newest:
                    continue
                with self._lock:
                    self._latest.update(newest)
                loop = self._loop
                if loop is not None and not loop.is_closed():
                    for frame in newest.values():
                        loop.call_soon_threadsafe(self._dispatch, frame)
        except Exception:
            log.exception("live frame receiver crashed")
        finally:
            sub.close()
