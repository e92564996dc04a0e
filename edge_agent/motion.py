"""Motion measure and the motion gate that decides which frames are worth sending."""

from __future__ import annotations

import math

import cv2
import numpy as np

#: Motion is measured on a small grayscale copy: cheap and robust to sensor noise.
MOTION_WIDTH = 320


class MotionMeter:
    """Fraction (0..1) of pixels that differ from the recent background.

    Frames are shrunk to :data:`MOTION_WIDTH` pixels wide, converted to gray and
    blurred; a pixel counts as changed when it differs from a running-average
    background by more than ``pixel_delta`` grey levels.  The background follows
    the scene with time constant ``memory_s`` (independent of the frame rate),
    so slow movement still adds up while a still scene settles to 0.  The
    first frame measures 1.0 (everything is new).
    """

    def __init__(self, pixel_delta: int = 12, memory_s: float = 0.3) -> None:
        self.pixel_delta = pixel_delta
        self.memory_s = memory_s
        self._background: np.ndarray | None = None
        self._last_t = 0.0

    def _small_gray(self, frame: np.ndarray) -> np.ndarray:
        h, w = frame.shape[:2]
        if w > MOTION_WIDTH:
            frame = cv2.resize(
                frame, (MOTION_WIDTH, max(1, h * MOTION_WIDTH // w)), interpolation=cv2.INTER_AREA
            )
        gray = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY) if frame.ndim == 3 else frame
        return cv2.GaussianBlur(gray, (5, 5), 0)

    def measure(self, frame: np.ndarray, t: float) -> float:
        """Motion of ``frame`` captured at ``t`` (seconds, any monotonic clock)."""
        small = self._small_gray(frame).astype(np.float32)
        bg = self._background
        dt, self._last_t = t - self._last_t, t
        if bg is None or bg.shape != small.shape:
            self._background = small
            return 1.0
        diff = cv2.absdiff(small, bg)
        changed = cv2.countNonZero((diff > self.pixel_delta).view(np.uint8)) / float(diff.size)
        alpha = 1.0 - math.exp(-max(dt, 0.0) / self.memory_s)
        cv2.accumulateWeighted(small, bg, alpha)
        return changed


class MotionGate:
    """Full rate while something moves, one keyframe per ``keyframe_interval_s`` otherwise.

    ``motion >= threshold`` counts as movement; the gate stays open for
    ``hold_s`` after the last movement so a pause mid-action is not cut.
    """

    def __init__(self, threshold: float, keyframe_interval_s: float, hold_s: float) -> None:
        self.threshold = threshold
        self.keyframe_interval_s = keyframe_interval_s
        self.hold_s = hold_s
        self._last_motion = -1e18
        self._last_sent = -1e18

    def should_send(self, motion: float, now: float) -> bool:
        if motion >= self.threshold:
            self._last_motion = now
        if now - self._last_motion <= self.hold_s:
            return True
        return now - self._last_sent >= self.keyframe_interval_s

    def sent(self, now: float) -> None:
        self._last_sent = now
