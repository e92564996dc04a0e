"""One camera's pipeline: capture thread -> latest raw frame -> encoder thread -> latest JPEG.

The capture thread only reads the source and replaces the latest raw frame, so it
is never slowed by encoding or the network.  The encoder thread wakes at the
target fps, measures motion, applies the motion gate and JPEG-encodes
(``cv2.imencode`` releases the GIL) into a one-slot mailbox that the sender
thread empties.  A JPEG the sender has not taken by the time the next one is
ready is replaced and counted as dropped: nothing ever queues.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from edge_agent import metrics
from edge_agent.motion import MotionGate, MotionMeter
from edge_agent.sources import FrameSource, SourceSpec
from shared.protocol import FrameHeader, make_camera_id

log = logging.getLogger(__name__)

#: Consecutive failed reads before the source is closed and reopened.
REOPEN_AFTER_FAILURES = 5
MAX_REOPEN_BACKOFF_S = 10.0
FPS_WINDOW_S = 2.0


@dataclass(slots=True)
class EncodedFrame:
    header: FrameHeader
    jpeg: bytes


@dataclass(slots=True)
class CameraSettings:
    quality: int
    fps: float
    streaming: bool
    motion_gate: bool
    motion_threshold: float = 0.005
    motion_pixel_delta: int = 12
    keyframe_interval_s: float = 1.0
    motion_hold_s: float = 1.0


class _Rate:
    """Events per second over the last :data:`FPS_WINDOW_S` seconds."""

    def __init__(self) -> None:
        self._times: deque[float] = deque(maxlen=1024)

    def tick(self, now: float) -> None:
        self._times.append(now)

    def value(self, now: float) -> float:
        cutoff = now - FPS_WINDOW_S
        n = sum(1 for t in self._times if t >= cutoff)
        return n / FPS_WINDOW_S


class Camera:
    """A capture source streamed as JPEG frames; thread-safe settings and stats."""

    def __init__(
        self,
        client_id: str,
        spec: SourceSpec,
        source: FrameSource,
        settings: CameraSettings,
        on_encoded: Callable[[], None],
    ) -> None:
        self.client_id = client_id
        self.spec = spec
        self.name = spec.name
        self.camera_id = make_camera_id(client_id, spec.name)
        self.source = source
        self._settings = settings
        self._on_encoded = on_encoded
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._wake = threading.Event()  # settings changed: re-evaluate the schedule
        self._raw_cond = threading.Condition()
        self._raw: tuple[int, np.ndarray, int, float] | None = None  # (id, frame, ts_ns, mono)
        self._encoded: EncodedFrame | None = None
        self._seq = 0
        self._gate = MotionGate(
            settings.motion_threshold, settings.keyframe_interval_s, settings.motion_hold_s
        )
        self._meter = MotionMeter(settings.motion_pixel_delta)
        self._counts = {k: 0 for k in ("captured", "encoded", "sent", "dropped", "gated", "bytes")}
        self._capture_errors = 0
        self._motion = 0.0
        self._status = "ok"
        self._sent_rate = _Rate()
        self._capture_rate = _Rate()
        self._frame_size = (source.width, source.height)
        self._metric = {
            k: metrics.FRAMES.labels(self.camera_id, k)
            for k in ("captured", "encoded", "sent", "dropped", "gated")
        }
        self._limit_source_rate(settings.fps)
        self._threads = [
            threading.Thread(target=self._capture_loop, name=f"capture-{self.name}", daemon=True),
            threading.Thread(target=self._encode_loop, name=f"encode-{self.name}", daemon=True),
        ]

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def request_stop(self) -> None:
        self._stop.set()
        self._wake.set()
        with self._raw_cond:
            self._raw_cond.notify_all()

    def join(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        alive = any(t.is_alive() for t in self._threads)
        if not alive:
            self.source.close()
        return not alive

    # ------------------------------------------------------------------ settings

    @property
    def settings(self) -> CameraSettings:
        with self._lock:
            return dataclasses.replace(self._settings)

    def set_streaming(self, streaming: bool) -> bool:
        """Returns True when the setting changed."""
        with self._lock:
            changed = self._settings.streaming != streaming
            self._settings.streaming = streaming
            if not streaming:
                self._encoded = None  # a stopped camera sends nothing more
        self._wake.set()
        if changed:
            log.info(
                "streaming started" if streaming else "streaming stopped",
                extra={"camera_id": self.camera_id},
            )
        return changed

    def update_settings(self, quality: int | None = None, fps: float | None = None) -> bool:
        with self._lock:
            before = (self._settings.quality, self._settings.fps)
            if quality is not None:
                self._settings.quality = int(quality)
            if fps is not None:
                self._settings.fps = float(fps)
            after = (self._settings.quality, self._settings.fps)
        self._limit_source_rate(after[1])
        self._wake.set()
        if before != after:
            log.info(
                "streaming settings changed",
                extra={"camera_id": self.camera_id, "quality": after[0], "fps": after[1]},
            )
        return before != after

    def _limit_source_rate(self, fps: float) -> None:
        # Synthetic sources (demo scenes) render only as fast as frames are wanted.
        limit = getattr(self.source, "limit_rate", None)
        if limit is not None:
            limit(fps)

    # ------------------------------------------------------------------ sender side

    def take_encoded(self) -> EncodedFrame | None:
        with self._lock:
            item, self._encoded = self._encoded, None
        return item

    def record_sent(self, nbytes: int) -> None:
        now = time.monotonic()
        with self._lock:
            self._counts["sent"] += 1
            self._counts["bytes"] += nbytes
            self._sent_rate.tick(now)
        self._metric["sent"].inc()
        metrics.BYTES_SENT.labels(self.camera_id).inc(nbytes)

    def record_dropped(self) -> None:
        with self._lock:
            self._counts["dropped"] += 1
        self._metric["dropped"].inc()

    # ------------------------------------------------------------------ reporting

    def info(self) -> dict[str, Any]:
        """Properties as sent in ``register`` / ``camera_info`` (validate_camera_info)."""
        with self._lock:
            s = self._settings
            w, h = self._frame_size
            info: dict[str, Any] = {
                "name": self.name,
                "source": self.spec.display[:500],
                "kind": self.spec.kind,
                "backend": self.source.backend or "unknown",
                "width": int(w),
                "height": int(h),
                "fps": round(float(self.source.fps), 3),
                "target_fps": float(s.fps),
                "quality": int(s.quality),
                "streaming": bool(s.streaming),
                "motion_gate": bool(s.motion_gate),
                "status": self._status,
            }
        if self.source.note:
            info["description"] = self.source.note[:500]
        return info

    def stats(self) -> dict[str, float]:
        """Numbers only (heartbeat ``stats`` entries must be numeric)."""
        now = time.monotonic()
        with self._lock:
            out: dict[str, float] = dict(self._counts)
            out["fps"] = round(self._sent_rate.value(now), 2)
            out["capture_fps"] = round(self._capture_rate.value(now), 2)
            out["motion"] = round(self._motion, 4)
            out["capture_errors"] = self._capture_errors
            out["streaming"] = 1 if self._settings.streaming else 0
        return out

    # ------------------------------------------------------------------ threads

    def _capture_loop(self) -> None:
        failures, backoff = 0, 0.5
        frame_id = 0
        while not self._stop.is_set():
            try:
                frame = self.source.read()
            except Exception as exc:  # a driver error must not kill the thread
                log.warning(
                    "capture read failed",
                    extra={"camera_id": self.camera_id, "error": f"{type(exc).__name__}: {exc}"},
                )
                frame = None
            if frame is None:
                failures += 1
                with self._lock:
                    self._capture_errors += 1
                metrics.CAPTURE_ERRORS.labels(self.camera_id).inc()
                if failures >= REOPEN_AFTER_FAILURES:
                    backoff = self._reopen(backoff)
                    failures = 0
                continue
            failures, backoff = 0, 0.5
            frame_id += 1
            now = time.monotonic()
            with self._raw_cond:
                self._raw = (frame_id, frame, time.time_ns(), now)
                self._raw_cond.notify_all()
            with self._lock:
                self._counts["captured"] += 1
                self._capture_rate.tick(now)
                self._status = "ok"
            self._metric["captured"].inc()

    def _reopen(self, backoff: float) -> float:
        with self._lock:
            self._status = "error"
        log.warning(
            "source stopped delivering frames; reopening",
            extra={"camera_id": self.camera_id, "source": self.spec.display, "wait_s": backoff},
        )
        self.source.close()
        if self._stop.wait(backoff):
            return backoff
        try:
            self.source.open()
            log.info("source reopened", extra={"camera_id": self.camera_id})
        except Exception as exc:
            log.warning(
                "reopen failed",
                extra={"camera_id": self.camera_id, "error": f"{type(exc).__name__}: {exc}"},
            )
            metrics.CAPTURE_ERRORS.labels(self.camera_id).inc()
        return min(backoff * 2, MAX_REOPEN_BACKOFF_S)

    def _next_raw(self, last_id: int, timeout: float) -> tuple[int, np.ndarray, int, float] | None:
        with self._raw_cond:
            self._raw_cond.wait_for(
                lambda: self._stop.is_set() or (self._raw is not None and self._raw[0] != last_id),
                timeout,
            )
            raw = self._raw
        if raw is None or raw[0] == last_id:
            return None
        return raw

    def _encode_loop(self) -> None:
        last_id = 0
        next_due = time.monotonic()
        while not self._stop.is_set():
            with self._lock:
                s = self._settings
                streaming, quality, gate_on = s.streaming, s.quality, s.motion_gate
                interval = 1.0 / s.fps
            if not streaming:
                self._wake.wait(0.5)
                self._wake.clear()
                next_due = time.monotonic()
                continue
            delay = next_due - time.monotonic()
            # A settings change (e.g. higher fps) wakes us early to re-plan.
            if delay > 0 and self._wake.wait(delay):
                self._wake.clear()
                with self._lock:
                    interval = 1.0 / self._settings.fps
                next_due = min(next_due, time.monotonic() + interval)
                continue
            raw = self._next_raw(last_id, 0.5)
            if raw is None:
                continue
            last_id, frame, ts_ns, captured_at = raw
            now = time.monotonic()
            next_due += interval
            if next_due < now - interval:  # fell behind: do not burst to catch up
                next_due = now
            self._encode(frame, ts_ns, captured_at, quality, gate_on)

    def _encode(
        self, frame: np.ndarray, ts_ns: int, captured_at: float, quality: int, gate_on: bool
    ) -> None:
        motion = min(1.0, max(0.0, self._meter.measure(frame, captured_at)))
        metrics.MOTION.labels(self.camera_id).set(motion)
        now = time.monotonic()
        with self._lock:
            self._motion = motion
        if gate_on and not self._gate.should_send(motion, now):
            with self._lock:
                self._counts["gated"] += 1
            self._metric["gated"].inc()
            return
        ok, buf = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
        if not ok:
            log.warning("JPEG encoding failed", extra={"camera_id": self.camera_id})
            return
        self._gate.sent(now)
        h, w = frame.shape[:2]
        self._seq += 1
        header = FrameHeader(
            client_id=self.client_id,
            camera_id=self.camera_id,
            seq=self._seq,
            ts=ts_ns,
            w=w,
            h=h,
            motion=round(motion, 4),
        )
        stale = False
        with self._lock:
            if not self._settings.streaming:
                return
            stale = self._encoded is not None
            self._encoded = EncodedFrame(header, buf.tobytes())
            self._counts["encoded"] += 1
            if stale:
                self._counts["dropped"] += 1
            self._frame_size = (w, h)
        self._metric["encoded"].inc()
        if stale:
            self._metric["dropped"].inc()
        self._on_encoded()
