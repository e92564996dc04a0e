"""Scenes for the detector's motion-aware tests and benchmarks, from real photos.

* :class:`PasserByScene`: a still camera on a real photo (edge demo scenes, motionless)
  that a real person (cut from ultralytics' ``bus.jpg``) crosses now and then;
* busy cameras are the edge agent's moving demo scenes (``DemoScene``), which pan and
  zoom over the whole frame all the time.

Nothing here is random: a scene at time ``t`` is always the same image.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from edge_agent.demo import DemoScene

#: The rightmost standing person of bus.jpg (810x1080), pixels x1, y1, x2, y2, with a margin.
BUS_PERSON = (660, 385, 812, 885)


def bus_photo() -> np.ndarray:
    import ultralytics

    img = cv2.imread(str(Path(ultralytics.__file__).parent / "assets" / "bus.jpg"))
    if img is None:
        raise RuntimeError("ultralytics/assets/bus.jpg is missing")
    return img


def person_sprite(height: int) -> np.ndarray:
    """The person from bus.jpg, scaled to ``height`` pixels."""
    x1, y1, x2, y2 = BUS_PERSON
    crop = bus_photo()[y1:y2, x1:x2]
    scale = height / crop.shape[0]
    return cv2.resize(crop, (max(1, round(crop.shape[1] * scale)), height), cv2.INTER_AREA)


class PasserByScene:
    """A motionless camera on ``background`` that a person crosses every ``period_s``.

    The person walks from left to right in ``cross_s`` seconds, starting ``phase``
    seconds into each period; outside a crossing the frame is exactly the still photo.
    """

    def __init__(
        self,
        background: str = "coffee",
        width: int = 640,
        height: int = 480,
        *,
        period_s: float = 20.0,
        cross_s: float = 4.0,
        phase: float = 2.0,
        person_height: float = 0.45,
        y: float = 0.45,
    ) -> None:
        self.width, self.height = width, height
        self.background = DemoScene(background, width, height, static=True).render(0).copy()
        self.sprite = person_sprite(int(height * person_height))
        self.period_s, self.cross_s, self.phase = period_s, cross_s, phase
        self.y = int(height * y)

    def person_x(self, t: float) -> int | None:
        """Left edge of the person at ``t`` (pixels), or None when nobody is in view."""
        into = (t - self.phase) % self.period_s
        if t < self.phase or into >= self.cross_s:
            return None
        sw = self.sprite.shape[1]
        return int(-sw + (self.width + sw) * into / self.cross_s)

    def present(self, t: float) -> bool:
        """The person is fully in view at ``t``."""
        x = self.person_x(t)
        return x is not None and 0 <= x <= self.width - self.sprite.shape[1]

    def render(self, t: float) -> np.ndarray:
        x = self.person_x(t)
        if x is None:
            return self.background
        frame = self.background.copy()
        paste(frame, self.sprite, x, self.y)
        return frame


def paste(frame: np.ndarray, sprite: np.ndarray, x: int, y: int) -> None:
    """Copy ``sprite`` into ``frame`` at (x, y), clipped to the frame."""
    h, w = sprite.shape[:2]
    fx0, fy0 = max(0, x), max(0, y)
    fx1, fy1 = min(frame.shape[1], x + w), min(frame.shape[0], y + h)
    if fx0 >= fx1 or fy0 >= fy1:
        return
    frame[fy0:fy1, fx0:fx1] = sprite[fy0 - y : fy1 - y, fx0 - x : fx1 - x]
