"""Per-camera intake statistics kept in memory and flushed to the registry."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any


class RateMeter:
    """Events and bytes per second over a sliding window, in fixed-size buckets.

    O(1) per event and bounded memory regardless of the frame rate.
    """

    def __init__(self, window_s: float = 5.0, bucket_s: float = 0.25) -> None:
        self.bucket_s = bucket_s
        self.nbuckets = max(1, round(window_s / bucket_s))
        self.window_s = self.nbuckets * bucket_s
        self._count = [0] * self.nbuckets
        self._bytes = [0] * self.nbuckets
        self._slot = [-1] * self.nbuckets

    def add(self, nbytes: int, now: float) -> None:
        tick = int(now / self.bucket_s)
        i = tick % self.nbuckets
        if self._slot[i] != tick:
            self._slot[i] = tick
            self._count[i] = 0
            self._bytes[i] = 0
        self._count[i] += 1
        self._bytes[i] += nbytes

    def rates(self, now: float) -> tuple[float, float]:
        """(events per second, bytes per second) over the window ending at ``now``."""
        tick = int(now / self.bucket_s)
        n = b = 0
        for i in range(self.nbuckets):
            if tick - self.nbuckets < self._slot[i] <= tick:
                n += self._count[i]
                b += self._bytes[i]
        return n / self.window_s, b / self.window_s


@dataclass
class CameraStats:
    frames_in: int = 0
    bytes_in: int = 0
    dropped: int = 0
    last_frame_ts: float = 0.0
    last_seq: int = -1
    meter: RateMeter = field(default_factory=RateMeter)
    dirty: bool = False
    written_fps: float = 0.0


class StatsTable:
    """Thread-safe table of :class:`CameraStats` (written by the frame loop)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cams: dict[str, CameraStats] = {}

    def frame(self, camera_id: str, nbytes: int, seq: int) -> None:
        now = time.time()
        with self._lock:
            st = self._cams.get(camera_id)
            if st is None:
                st = self._cams[camera_id] = CameraStats()
            st.frames_in += 1
            st.bytes_in += nbytes
            st.last_frame_ts = now
            st.last_seq = seq
            st.meter.add(nbytes, now)
            st.dirty = True

    def drop(self, camera_id: str) -> None:
        with self._lock:
            st = self._cams.get(camera_id)
            if st is None:
                st = self._cams[camera_id] = CameraStats()
            st.dropped += 1
            st.dirty = True

    def get(self, camera_id: str) -> CameraStats | None:
        with self._lock:
            return self._cams.get(camera_id)

    def mark_dirty(self, camera_ids: Iterable[str]) -> None:
        """Write these cameras again at the next flush (the last one failed)."""
        with self._lock:
            for cam in camera_ids:
                st = self._cams.get(cam)
                if st is not None:
                    st.dirty = True

    def snapshot(self, now: float | None = None) -> dict[str, dict[str, Any]]:
        """Registry fields of every camera whose stats changed or whose rate is decaying."""
        now = now or time.time()
        out: dict[str, dict[str, Any]] = {}
        with self._lock:
            for cam, st in self._cams.items():
                fps, bps = st.meter.rates(now)
                fps = round(fps, 2)
                if not st.dirty and fps == st.written_fps:
                    continue  # nothing new, and the rate has settled
                st.dirty = False
                st.written_fps = fps
                out[cam] = {
                    "frames_in": st.frames_in,
                    "bytes_in": st.bytes_in,
                    "dropped": st.dropped,
                    "fps_in": fps,
                    "kbps_in": round(bps * 8 / 1000, 1),
                    "last_frame_ts": round(st.last_frame_ts, 3) if st.last_frame_ts else None,
                }
        return out
