"""Face detection, quality measurement and encoding with dlib's face models.

These are the models and calls of ``face_recognition`` 1.3.0 (HOG or MMOD-CNN
detector, 5-point landmarks, ResNet 128-d encoder from ``face_recognition_models``),
made directly on dlib: ``import face_recognition`` also loads the 100 MB 68-point
landmark model that encoding never uses (~2 s and ~100 MB per process), and calls
``quit()`` when its models are missing.

One :class:`FaceEngine` per process (:func:`get_engine`); dlib's DNN encoder is not
safe to call from several threads at once, so calls are serialised by a lock.

Pipeline for one image (:meth:`FaceEngine.analyze`):

1. detect on a grey copy scaled by ``downscale`` (and capped at ``max_detect_width``),
   with ``upsample`` pyramid doublings;
2. map boxes back to full-resolution pixels and measure each face: size (shorter box
   side) and sharpness (variance of the Laplacian of the face resized to 64x64 grey);
3. the quality gate rejects faces that are too small or blurred; only the faces that
   pass are encoded (128-d embedding, computed on the full-resolution image).
"""

from __future__ import annotations

import logging
import threading
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from services.faces.config import FacesConfig

log = logging.getLogger(__name__)

#: Side of the square grey crop the sharpness is measured on, so the score does not
#: depend on how large the face is in the frame.
SHARPNESS_SIDE = 64

REJECT_TOO_SMALL = "too_small"
REJECT_BLURRY = "blurry"
REJECT_TOO_MANY = "too_many"
REJECT_REASONS = (REJECT_TOO_SMALL, REJECT_BLURRY, REJECT_TOO_MANY)


def model_paths() -> dict[str, str]:
    """Paths of the dlib model files shipped by ``face_recognition_models``.

    The package imports the deprecated ``pkg_resources``, whose UserWarning (fatal
    under ``-W error``) is silenced here and only here.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*pkg_resources.*")
        try:
            import face_recognition_models as frm
        except ImportError as exc:
            raise RuntimeError(
                "face models are not installed: "
                "pip install dlib-bin face-recognition-models 'setuptools<81'"
            ) from exc
    return {
        "landmarks5": frm.pose_predictor_five_point_model_location(),
        "encoder": frm.face_recognition_model_location(),
        "cnn": frm.cnn_face_detector_model_location(),
    }


@dataclass(slots=True)
class DetectedFace:
    """One face found in an image, in full-resolution pixel coordinates."""

    box: tuple[int, int, int, int]  # x1, y1, x2, y2
    size_px: int
    sharpness: float
    score: float = 0.0
    reject_reason: str | None = None
    encoding: np.ndarray | None = None

    @property
    def accepted(self) -> bool:
        return self.reject_reason is None

    def normalised_box(self, width: int, height: int) -> list[float]:
        x1, y1, x2, y2 = self.box
        return [
            round(x1 / width, 4),
            round(y1 / height, 4),
            round(x2 / width, 4),
            round(y2 / height, 4),
        ]


@dataclass(slots=True)
class Analysis:
    faces: list[DetectedFace] = field(default_factory=list)
    detect_ms: float = 0.0
    encode_ms: float = 0.0
    scale: float = 1.0

    @property
    def accepted(self) -> list[DetectedFace]:
        return [f for f in self.faces if f.accepted]

    @property
    def rejected(self) -> list[DetectedFace]:
        return [f for f in self.faces if not f.accepted]


def sharpness(gray: np.ndarray, box: tuple[int, int, int, int]) -> float:
    """Variance of the Laplacian of the face crop resized to 64x64 (higher = sharper)."""
    x1, y1, x2, y2 = box
    crop = gray[max(0, y1) : max(0, y2), max(0, x1) : max(0, x2)]
    if crop.size == 0:
        return 0.0
    interp = cv2.INTER_AREA if min(crop.shape[:2]) >= SHARPNESS_SIDE else cv2.INTER_LINEAR
    crop = cv2.resize(crop, (SHARPNESS_SIDE, SHARPNESS_SIDE), interpolation=interp)
    return float(cv2.Laplacian(crop, cv2.CV_64F).var())


def quality_reason(size_px: int, sharp: float, config: FacesConfig) -> str | None:
    """Why a face fails the quality gate, or None when it passes."""
    if size_px < config.min_face_px:
        return REJECT_TOO_SMALL
    if config.min_sharpness > 0 and sharp < config.min_sharpness:
        return REJECT_BLURRY
    return None


def measure(
    rgb: np.ndarray,
    found: list[tuple[tuple[int, int, int, int], float]],
    config: FacesConfig,
) -> list[DetectedFace]:
    """Size, sharpness and quality verdict of detected faces."""
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    faces = []
    for box, score in found:
        size = min(box[2] - box[0], box[3] - box[1])
        sharp = round(sharpness(gray, box), 1)
        faces.append(DetectedFace(box, size, sharp, score, quality_reason(size, sharp, config)))
    return faces


def detection_scale(width: int, config: FacesConfig) -> float:
    scale = config.downscale
    if config.max_detect_width and width * scale > config.max_detect_width:
        scale = config.max_detect_width / width
    return scale


class FaceEngine:
    """dlib face detector + encoder with the quality gate between them."""

    def __init__(self) -> None:
        import dlib

        self._dlib = dlib
        self._paths = model_paths()
        self._hog = dlib.get_frontal_face_detector()
        self._landmarks = dlib.shape_predictor(self._paths["landmarks5"])
        self._encoder = dlib.face_recognition_model_v1(self._paths["encoder"])
        self._cnn: Any = None  # loaded on first use: "cnn" must be chosen explicitly
        self._lock = threading.Lock()

    def detect(
        self,
        rgb: np.ndarray,
        *,
        model: str = "hog",
        scale: float = 1.0,
        upsample: int = 0,
        min_score: float = 0.0,
    ) -> list[tuple[tuple[int, int, int, int], float]]:
        """Faces as ``((x1, y1, x2, y2), score)`` in ``rgb`` pixel coordinates.

        ``score`` is the HOG detector's margin (0 is dlib's default threshold; clear
        frontal faces score about 1-2, spurious detections near 0) or the CNN's
        confidence; detections below ``min_score`` are dropped.
        """
        h, w = rgb.shape[:2]
        # HOG works on grey as well as on colour and is ~15% faster on it; the CNN wants RGB.
        src = rgb if model == "cnn" else cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        if scale != 1.0:
            dw, dh = max(1, round(w * scale)), max(1, round(h * scale))
            src = cv2.resize(src, (dw, dh), interpolation=cv2.INTER_AREA)
        with self._lock:
            if model == "cnn":
                if self._cnn is None:
                    self._cnn = self._dlib.cnn_face_detection_model_v1(self._paths["cnn"])
                found = [(d.rect, float(d.confidence)) for d in self._cnn(src, upsample)]
            else:
                rects, scores, _ = self._hog.run(src, upsample, min_score)
                found = list(zip(rects, (float(s) for s in scores), strict=True))
        out = []
        for rect, score in found:
            if score < min_score:
                continue
            x1 = min(max(0, int(rect.left() / scale)), w - 1)
            y1 = min(max(0, int(rect.top() / scale)), h - 1)
            x2 = min(max(x1 + 1, round(rect.right() / scale)), w)
            y2 = min(max(y1 + 1, round(rect.bottom() / scale)), h)
            out.append(((x1, y1, x2, y2), round(score, 3)))
        return out

    def encode(
        self, rgb: np.ndarray, boxes: list[tuple[int, int, int, int]], num_jitters: int = 1
    ) -> list[np.ndarray]:
        """128-d encodings of the faces at ``boxes`` (full-resolution RGB image)."""
        if not boxes:
            return []
        out = []
        with self._lock:
            for x1, y1, x2, y2 in boxes:
                shape = self._landmarks(rgb, self._dlib.rectangle(x1, y1, x2, y2))
                desc = self._encoder.compute_face_descriptor(rgb, shape, num_jitters)
                out.append(np.asarray(desc, dtype=np.float64))
        return out

    def analyze(
        self,
        rgb: np.ndarray,
        config: FacesConfig,
        *,
        num_jitters: int | None = None,
        upsample: int | None = None,
        max_faces: int | None = None,
    ) -> Analysis:
        """Detect, measure, gate and encode the faces of one RGB image."""
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise ValueError("expected an HxWx3 uint8 RGB image")
        rgb = np.ascontiguousarray(rgb)
        h, w = rgb.shape[:2]
        scale = detection_scale(w, config)
        t0 = time.perf_counter()
        found = self.detect(
            rgb,
            model=config.model,
            scale=scale,
            upsample=config.upsample if upsample is None else upsample,
            min_score=config.min_detection_score,
        )
        t1 = time.perf_counter()
        faces = measure(rgb, found, config)
        faces.sort(key=lambda f: f.size_px, reverse=True)
        limit = config.max_faces_per_frame if max_faces is None else max_faces
        good = [f for f in faces if f.accepted]
        for f in good[limit:]:
            f.reject_reason = REJECT_TOO_MANY
        good = good[:limit]
        t2 = time.perf_counter()
        encs = self.encode(
            rgb, [f.box for f in good], config.num_jitters if num_jitters is None else num_jitters
        )
        for f, e in zip(good, encs, strict=True):
            f.encoding = e
        t3 = time.perf_counter()
        return Analysis(
            faces=faces, detect_ms=(t1 - t0) * 1000, encode_ms=(t3 - t2) * 1000, scale=scale
        )


_engine: FaceEngine | None = None
_engine_lock = threading.Lock()


def get_engine() -> FaceEngine:
    """The process-wide engine (models load on first use)."""
    global _engine
    with _engine_lock:
        if _engine is None:
            t0 = time.perf_counter()
            _engine = FaceEngine()
            log.info("face models loaded", extra={"ms": round((time.perf_counter() - t0) * 1000)})
        return _engine
