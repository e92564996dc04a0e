"""Demo cameras: real photos shown through a slowly moving virtual camera.

``demo:bus`` and ``demo:zidane`` are the photos ultralytics ships (4 and 2 people),
``demo:astronaut``, ``demo:coffee``, ``demo:chelsea``, ``demo:cameraman`` and
``demo:rocket`` come from scikit-image's bundled data.  The virtual camera pans on
an ellipse and breathes its zoom, always keeping the scene's subjects (the region
of interest, e.g. the people) fully in view, so detectors see them in every frame
while motion detection sees real motion.  ``demo:static`` (or ``?static`` on any
scene) never moves.  When a photo is not installed the scene falls back to a
generated picture and :attr:`DemoScene.fallback_reason` says why.

Nothing here downloads: the photos are read from the installed packages' files
without importing those (heavy) packages.
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

#: Background of the parts of the virtual view outside the photo.
BORDER_BGR = (36, 36, 36)
#: Seconds for one trip of the pan ellipse and one zoom breath.
PAN_PERIOD_S = 12.0
ZOOM_PERIOD_S = 17.0
#: Viewport size relative to the smallest one holding the region of interest.
ZOOM_MIN, ZOOM_MAX = 1.06, 1.22


def _package_dir(package: str) -> Path | None:
    """Directory of an installed package, found without importing it."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _package_image(package: str, relative: str) -> Callable[[], tuple[np.ndarray | None, str]]:
    def load() -> tuple[np.ndarray | None, str]:
        root = _package_dir(package)
        if root is None:
            return None, f"python package {package!r} is not installed"
        path = root / relative
        img = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if img is None:
            return None, f"{path} is missing or unreadable"
        return img, ""

    return load


def generated_scene(width: int = 960, height: int = 720) -> np.ndarray:
    """A textured synthetic scene (used when no photo is available)."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    img = np.empty((height, width, 3), np.uint8)
    img[..., 0] = (90 + 60 * np.sin(xx / 53.0) + 40 * np.cos(yy / 37.0)).clip(0, 255)
    img[..., 1] = (110 + 50 * np.sin((xx + yy) / 71.0)).clip(0, 255)
    img[..., 2] = (120 + 70 * np.cos(xx / 29.0 - yy / 61.0)).clip(0, 255)
    rng = np.random.default_rng(7)
    for _ in range(24):
        x, y = int(rng.integers(0, width)), int(rng.integers(0, height))
        color = tuple(int(c) for c in rng.integers(0, 256, 3))
        if rng.random() < 0.5:
            cv2.rectangle(img, (x, y), (x + int(rng.integers(30, 160)), y + 90), color, -1)
        else:
            cv2.circle(img, (x, y), int(rng.integers(20, 80)), color, -1)
    cv2.putText(
        img, "Sentri demo (generated)", (40, height // 2), cv2.FONT_HERSHEY_SIMPLEX, 1.6,
        (255, 255, 255), 3, cv2.LINE_AA,
    )  # fmt: skip
    return img


@dataclass(frozen=True, slots=True)
class SceneSpec:
    """A demo scene: where its photo comes from and what must stay in view."""

    name: str
    description: str
    load: Callable[[], tuple[np.ndarray | None, str]]
    #: Region that stays fully visible, as fractions (x0, y0, x1, y1) of the photo.
    roi: tuple[float, float, float, float] = (0.0, 0.0, 1.0, 1.0)
    static: bool = False


_ULTRA = "ultralytics"
_SKIMAGE = "skimage"

SCENES: dict[str, SceneSpec] = {}


def register_scene(spec: SceneSpec) -> SceneSpec:
    SCENES[spec.name] = spec
    return spec


# Person boxes in bus.jpg span y = 254..908 of 1080 rows and the full width.
register_scene(
    SceneSpec("bus", "street with a bus and 4 people (ultralytics)",
              _package_image(_ULTRA, "assets/bus.jpg"), roi=(0.0, 0.22, 1.0, 0.85))
)  # fmt: skip
register_scene(
    SceneSpec("zidane", "2 people, football coaches (ultralytics)",
              _package_image(_ULTRA, "assets/zidane.jpg"))
)  # fmt: skip
register_scene(
    SceneSpec("astronaut", "portrait of an astronaut, 1 face (scikit-image)",
              _package_image(_SKIMAGE, "data/astronaut.png"))
)  # fmt: skip
register_scene(
    SceneSpec("coffee", "a cup of coffee, no people (scikit-image)",
              _package_image(_SKIMAGE, "data/coffee.png"))
)  # fmt: skip
register_scene(
    SceneSpec("chelsea", "a cat (scikit-image)", _package_image(_SKIMAGE, "data/chelsea.png"))
)
register_scene(
    SceneSpec("cameraman", "a man with a camera, grayscale (scikit-image)",
              _package_image(_SKIMAGE, "data/camera.png"))
)  # fmt: skip
register_scene(
    SceneSpec("rocket", "a rocket on its launch pad (scikit-image)",
              _package_image(_SKIMAGE, "data/rocket.jpg"))
)  # fmt: skip
register_scene(
    SceneSpec("static", "the bus scene with a motionless camera (for motion gating)",
              _package_image(_ULTRA, "assets/bus.jpg"), roi=(0.0, 0.22, 1.0, 0.85), static=True)
)  # fmt: skip
register_scene(
    SceneSpec("generated", "a generated picture (needs no photo package)",
              lambda: (generated_scene(), ""))
)  # fmt: skip


class DemoScene:
    """Renders one demo scene as frames of ``width`` x ``height`` at any time ``t``.

    The photo is resized once so that the tightest view holding the region of
    interest maps 1:1 onto the output; each frame is then one ``warpAffine`` of a
    viewport between :data:`ZOOM_MIN` and :data:`ZOOM_MAX` times that size, whose
    centre moves on an ellipse inside the slack around the region of interest.
    """

    def __init__(
        self,
        name: str,
        width: int = 640,
        height: int = 480,
        *,
        static: bool = False,
        phase: float = 0.0,
    ) -> None:
        if name not in SCENES:
            raise KeyError(name)
        spec = SCENES[name]
        self.name = name
        self.description = spec.description
        self.width, self.height = width, height
        self.static = static or spec.static
        self.phase = phase
        image, why = spec.load()
        #: Empty when the real photo is shown; otherwise why a generated scene is.
        self.fallback_reason = why
        roi = spec.roi
        if image is None:
            image, roi = generated_scene(), (0.0, 0.0, 1.0, 1.0)
        ih, iw = image.shape[:2]
        rx0, ry0, rx1, ry1 = roi[0] * iw, roi[1] * ih, roi[2] * iw, roi[3] * ih
        aspect = width / height
        base_w = max(rx1 - rx0, (ry1 - ry0) * aspect)
        scale = width / base_w
        interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        self._image = cv2.resize(image, None, fx=scale, fy=scale, interpolation=interp)
        self._roi = (rx0 * scale, ry0 * scale, rx1 * scale, ry1 * scale)
        self._still: np.ndarray | None = None  # a static scene renders once

    @property
    def is_photo(self) -> bool:
        return not self.fallback_reason

    def viewport(self, t: float) -> tuple[float, float, float]:
        """(x0, y0, zoom) of the virtual camera at time ``t`` (seconds)."""
        rx0, ry0, rx1, ry1 = self._roi
        cx, cy = (rx0 + rx1) / 2, (ry0 + ry1) / 2
        if self.static:
            zoom = (ZOOM_MIN + ZOOM_MAX) / 2
            return cx - self.width * zoom / 2, cy - self.height * zoom / 2, zoom
        t = t + self.phase
        mid, amp = (ZOOM_MIN + ZOOM_MAX) / 2, (ZOOM_MAX - ZOOM_MIN) / 2
        zoom = mid + amp * math.sin(2 * math.pi * t / ZOOM_PERIOD_S)
        vw, vh = self.width * zoom, self.height * zoom
        # Slack: how far the centre may move while the ROI stays inside the view.
        slack_x = max(0.0, (vw - (rx1 - rx0)) / 2) * 0.9
        slack_y = max(0.0, (vh - (ry1 - ry0)) / 2) * 0.9
        angle = 2 * math.pi * t / PAN_PERIOD_S
        return (
            cx + slack_x * math.cos(angle) - vw / 2,
            cy + slack_y * math.sin(angle) - vh / 2,
            zoom,
        )

    def render(self, t: float) -> np.ndarray:
        """The BGR frame the virtual camera sees at time ``t`` (do not modify it)."""
        if self.static and self._still is not None:
            return self._still
        x0, y0, zoom = self.viewport(t)
        inv = 1.0 / zoom
        matrix = np.array([[inv, 0.0, -x0 * inv], [0.0, inv, -y0 * inv]], np.float32)
        frame = cv2.warpAffine(
            self._image,
            matrix,
            (self.width, self.height),
            flags=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_CONSTANT,
            borderValue=BORDER_BGR,
        )
        if self.static:
            frame.flags.writeable = False
            self._still = frame
        return frame

    def roi_in_frame(self, t: float) -> tuple[float, float, float, float]:
        """Where the region of interest lies in the frame at ``t`` (output pixels)."""
        x0, y0, zoom = self.viewport(t)
        rx0, ry0, rx1, ry1 = self._roi
        return (
            (rx0 - x0) / zoom,
            (ry0 - y0) / zoom,
            (rx1 - x0) / zoom,
            (ry1 - y0) / zoom,
        )
