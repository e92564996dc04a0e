"""Motion-aware scheduling: run the model only when something may have changed.

Most surveillance scenes are static most of the time, and a static frame gives the
same detections as the last one.  For every frame the :class:`MotionScheduler`
decides whether the model runs:

* **motion**: the agent's ``motion`` header or the central check (below) is at
  least ``motion_threshold``; detection continues for ``motion_hold_s`` after it;
* **tracks**: the camera's tracker holds unsettled tracks (not yet confirmed,
  missed by the last detection, or moved within ``motion_hold_s``);
* **keyframe**: nothing of the above, but ``idle_interval_s`` passed since the last
  detection (an agent that under-reports motion is caught here at the latest);
* otherwise the frame is passed over and counted as ``skipped_static``.

The **central check** (:class:`CentralMotion`) decodes the JPEG at 1/4 or 1/8 size in
grey (libjpeg scales in the DCT, so this costs about a millisecond), blurs it and
compares it with a running-average background; it yields the changed fraction and
the boxes of the changed areas, which :mod:`services.detector.regions` crops to.

Time is the frame's clock: ingest's receive stamp (``rx``) when present, else the
worker's receive time; agents' clocks are never trusted for decisions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np

from services.detector import metrics
from services.detector.config import DetectorConfig
from shared.worker import Frame

#: The central check works on frames at most this wide (after the JPEG's DCT scaling).
CENTRAL_MAX_WIDTH = 320
#: Changed areas smaller than this fraction of the frame are noise, not boxes.
MIN_BOX_AREA = 0.0005


def frame_clock(frame: Frame) -> float:
    """Seconds (unix) the scheduler and tracker decide by: ingest's stamp, else receipt."""
    return frame.rx_time


def header_motion(frame: Frame) -> float | None:
    """The agent's motion score, clamped to 0..1; out-of-range values are counted."""
    value = frame.header.motion
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        metrics.MOTION_HEADER_CLAMPED.inc()
        return None
    if not 0.0 <= value <= 1.0:
        metrics.MOTION_HEADER_CLAMPED.inc()
        return min(1.0, max(0.0, float(value)))
    return float(value)


@dataclass(slots=True)
class MotionResult:
    """Changed fraction of the frame (0..1) and the changed areas (pixel xyxy, full frame)."""

    score: float
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))


def _reduced_flag(width: int) -> tuple[int, int]:
    for factor, flag in (
        (2, cv2.IMREAD_REDUCED_GRAYSCALE_2),
        (4, cv2.IMREAD_REDUCED_GRAYSCALE_4),
        (8, cv2.IMREAD_REDUCED_GRAYSCALE_8),
    ):
        if width / factor <= CENTRAL_MAX_WIDTH:
            return factor, flag
    return 8, cv2.IMREAD_REDUCED_GRAYSCALE_8


class CentralMotion:
    """Motion of one camera measured on a small grey copy against a running background.

    The background follows the scene with time constant ``memory_s``: something that
    stops moving melts into it within a few seconds, as in the edge agent's meter.
    The first frame (and a frame of another size) measures 1.0: everything is new.
    """

    def __init__(self, pixel_delta: int = 18, memory_s: float = 1.0) -> None:
        self.pixel_delta = pixel_delta
        self.memory_s = memory_s
        self._background: np.ndarray | None = None
        self._size: tuple[int, int] = (0, 0)
        self._last_t = 0.0

    def measure(self, jpeg: bytes, width: int, height: int, t: float) -> MotionResult | None:
        """Motion of the frame (``width``×``height``) at ``t``; None if it does not decode."""
        factor, flag = _reduced_flag(width)
        small = cv2.imdecode(np.frombuffer(jpeg, np.uint8), flag)
        if small is None:
            return None
        if small.shape[1] > CENTRAL_MAX_WIDTH:
            small = cv2.resize(
                small,
                (CENTRAL_MAX_WIDTH, max(1, small.shape[0] * CENTRAL_MAX_WIDTH // small.shape[1])),
                interpolation=cv2.INTER_AREA,
            )
        small = cv2.GaussianBlur(small, (5, 5), 0).astype(np.float32)
        dt, self._last_t = t - self._last_t, t
        bg = self._background
        if bg is None or bg.shape != small.shape or self._size != (width, height):
            self._background, self._size = small, (width, height)
            full = np.array([[0, 0, width, height]], np.float32)
            return MotionResult(1.0, full)
        diff = cv2.absdiff(small, bg)
        mask = (diff > self.pixel_delta).astype(np.uint8)
        changed = cv2.countNonZero(mask) / float(mask.size)
        alpha = 1.0 - math.exp(-max(dt, 0.0) / self.memory_s)
        cv2.accumulateWeighted(small, bg, alpha)
        if changed == 0.0:
            return MotionResult(0.0)
        mask = cv2.dilate(mask, np.ones((3, 3), np.uint8), iterations=2)
        contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        sx, sy = width / mask.shape[1], height / mask.shape[0]
        min_area = MIN_BOX_AREA * mask.size
        boxes = []
        for c in contours:
            x, y, w, h = cv2.boundingRect(c)
            if w * h >= min_area:
                boxes.append((x * sx, y * sy, (x + w) * sx, (y + h) * sy))
        return MotionResult(changed, np.array(boxes, np.float32).reshape(-1, 4))


@dataclass(slots=True)
class Decision:
    """Whether to run the model on a frame, why, and the motion measured."""

    detect: bool
    #: motion | tracks | keyframe | always | static
    reason: str
    motion: MotionResult | None = None
    #: The agent's claim (clamped), for logs and tests.
    header_motion: float | None = None


@dataclass(slots=True)
class _CameraSchedule:
    central: CentralMotion
    last_detect_t: float = -math.inf
    last_motion_t: float = -math.inf


class MotionScheduler:
    """Per-camera detect-or-skip decisions (see the module docstring)."""

    def __init__(self, config: DetectorConfig) -> None:
        self.config = config
        self._cams: dict[str, _CameraSchedule] = {}

    def forget(self, camera_id: str) -> None:
        self._cams.pop(camera_id, None)

    def decide(self, frame: Frame, *, tracks_unsettled: bool, t: float | None = None) -> Decision:
        """Decide for ``frame``; ``tracks_unsettled`` comes from the camera's tracker."""
        cfg = self.config
        t = frame_clock(frame) if t is None else t
        claimed = header_motion(frame)
        if not cfg.motion_aware:
            return Decision(True, "always", None, claimed)
        st = self._cams.get(frame.camera_id)
        if st is None:
            st = self._cams[frame.camera_id] = _CameraSchedule(
                CentralMotion(cfg.motion_pixel_delta)
            )
        motion = None
        if cfg.central_motion:
            motion = st.central.measure(frame.jpeg, frame.header.w, frame.header.h, t)
        moving = (claimed is not None and claimed >= cfg.motion_threshold) or (
            motion is not None and motion.score >= cfg.motion_threshold
        )
        if moving:
            st.last_motion_t = t
        if t - st.last_motion_t <= cfg.motion_hold_s:
            reason = "motion"
        elif tracks_unsettled:
            reason = "tracks"
        elif t - st.last_detect_t >= cfg.idle_interval_s or t < st.last_detect_t:
            reason = "keyframe"  # (or the clock went backwards: do not stall)
        else:
            return Decision(False, "static", motion, claimed)
        st.last_detect_t = t
        return Decision(True, reason, motion, claimed)
