"""Test support. Real photos: the scikit-image astronaut, a man from ultralytics' zidane.jpg,
and scenes composed from them on a face-free background."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import cv2
import numpy as np
from skimage import data

from shared.redisutil import parse_entry

FRAME_W, FRAME_H = 640, 480


def ultralytics_asset(name: str) -> Path:
    """A photo shipped with ultralytics, found without importing it (torch is slow)."""
    spec = importlib.util.find_spec("ultralytics")
    assert spec is not None and spec.origin, "ultralytics is not installed"
    path = Path(spec.origin).parent / "assets" / name
    assert path.exists(), path
    return path


def astronaut_bgr() -> np.ndarray:
    """Eileen Collins (skimage.data.astronaut is RGB; OpenCV wants BGR)."""
    return cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)


def astronaut_face_bgr() -> np.ndarray:
    """Her head and shoulders: the face is ~87 px wide at scale 1."""
    return astronaut_bgr()[30:240, 120:330].copy()


def other_face_bgr() -> np.ndarray:
    """A different person: the right-hand man of ultralytics' zidane.jpg (face ~150 px)."""
    img = cv2.imread(str(ultralytics_asset("zidane.jpg")), cv2.IMREAD_COLOR)
    assert img is not None
    return img[60:340, 860:1140].copy()


def background(width: int = FRAME_W, height: int = FRAME_H) -> np.ndarray:
    """A real photo with no face in it (skimage coffee cup)."""
    return cv2.resize(cv2.cvtColor(data.coffee(), cv2.COLOR_RGB2BGR), (width, height))


def compose(
    patches: list[tuple[np.ndarray, float, int, int]],
    width: int = FRAME_W,
    height: int = FRAME_H,
) -> np.ndarray:
    """Paste (patch, scale, x, y) onto the background."""
    scene = background(width, height)
    for patch, scale, x, y in patches:
        p = cv2.resize(patch, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        ph, pw = p.shape[:2]
        assert x + pw <= width and y + ph <= height, "patch does not fit"
        scene[y : y + ph, x : x + pw] = p
    return scene


def stream_records(r, keys, stream: str) -> list[dict]:
    return [parse_entry(i, f) for i, f in r.xrange(keys.stream(stream))]


ROOT = Path(__file__).resolve().parents[3]
