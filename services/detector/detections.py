"""The one result type of the detector path: a frame's detections as parallel arrays.

Backends produce :class:`Detections` (pixel ``xyxy`` boxes in the original image),
the label map turns raw model classes into reported classes, the tracker fills
``tracker_id`` and the processor turns it into JSON at the very end.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(slots=True)
class Detections:
    """N detections of one image.

    ``xyxy`` float32 (N, 4) pixels; ``confidence`` float32 (N,); ``class_id`` int64 (N,)
    (raw model class until :meth:`LabelMap.apply`); ``tracker_id`` int64 (N,), -1 = none;
    ``attributes`` one dict per detection (e.g. ``{"posture": "fallen"}``).
    """

    xyxy: np.ndarray
    confidence: np.ndarray
    class_id: np.ndarray
    tracker_id: np.ndarray = field(default=None)  # type: ignore[assignment]
    attributes: list[dict[str, Any]] = field(default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        self.xyxy = np.asarray(self.xyxy, dtype=np.float32).reshape(-1, 4)
        n = len(self.xyxy)
        self.confidence = np.asarray(self.confidence, dtype=np.float32).reshape(n)
        self.class_id = np.asarray(self.class_id, dtype=np.int64).reshape(n)
        if self.tracker_id is None:
            self.tracker_id = np.full(n, -1, dtype=np.int64)
        else:
            self.tracker_id = np.asarray(self.tracker_id, dtype=np.int64).reshape(n)
        if self.attributes is None:
            self.attributes = [{} for _ in range(n)]
        elif len(self.attributes) != n:
            raise ValueError("attributes must have one entry per detection")

    @classmethod
    def empty(cls) -> Detections:
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64))

    def __len__(self) -> int:
        return len(self.xyxy)

    def __getitem__(self, index: np.ndarray | Sequence[int] | slice) -> Detections:
        """Subset by boolean mask, index array or slice (keeps every column aligned)."""
        if isinstance(index, slice):
            idx = np.arange(len(self))[index]
        else:
            idx = np.asarray(index)
            if idx.dtype == bool:
                idx = np.flatnonzero(idx)
        idx = idx.astype(np.int64, copy=False)
        return Detections(
            xyxy=self.xyxy[idx],
            confidence=self.confidence[idx],
            class_id=self.class_id[idx],
            tracker_id=self.tracker_id[idx],
            attributes=[self.attributes[i] for i in idx],
        )

    # -- the attribute names ultralytics' trackers read (Boxes-like adapter) -------
    @property
    def conf(self) -> np.ndarray:
        return self.confidence

    @property
    def cls(self) -> np.ndarray:
        return self.class_id.astype(np.float32)

    @property
    def xywh(self) -> np.ndarray:
        """Centre x, centre y, width, height (pixels)."""
        out = np.empty_like(self.xyxy)
        out[:, 0] = (self.xyxy[:, 0] + self.xyxy[:, 2]) / 2
        out[:, 1] = (self.xyxy[:, 1] + self.xyxy[:, 3]) / 2
        out[:, 2] = self.xyxy[:, 2] - self.xyxy[:, 0]
        out[:, 3] = self.xyxy[:, 3] - self.xyxy[:, 1]
        return out

    def normalized_boxes(self, width: int, height: int) -> np.ndarray:
        """Boxes as fractions of the image size, clipped to 0..1."""
        scale = np.array([width, height, width, height], dtype=np.float32)
        return np.clip(self.xyxy / scale, 0.0, 1.0)

    def nms(self, iou: float) -> Detections:
        """Class-wise non-maximum suppression (highest confidence wins)."""
        if len(self) < 2:
            return self
        import cv2

        xywh = self.xyxy.copy()
        xywh[:, 2:] -= xywh[:, :2]
        keep = cv2.dnn.NMSBoxesBatched(
            xywh, self.confidence, self.class_id.astype(np.int32), -1.0, iou
        )
        keep = np.sort(np.asarray(keep, np.int64).reshape(-1))
        return self if len(keep) == len(self) else self[keep]

    def top_k(self, k: int) -> Detections:
        if len(self) <= k:
            return self
        return self[np.argsort(-self.confidence, kind="stable")[:k]]


@dataclass(frozen=True)
class ReportedClass:
    """What a raw model class is reported as."""

    name: str
    class_id: int
    attributes: dict[str, Any] = field(default_factory=dict)


class LabelMap:
    """Raw model class id -> reported class (name, id, attributes), plus class filtering.

    Models trained on COCO report their own names.  The bundled fall-detection model's
    classes ``Normal``/``Fall`` are both a person: reported as class ``person`` (COCO id 0)
    with attribute ``posture`` ``standing``/``fallen``, so tracks survive a fall.
    """

    def __init__(
        self, model_names: dict[int, str], overrides: dict[int, ReportedClass] | None = None
    ):
        self.model_names = dict(model_names)
        self.classes: dict[int, ReportedClass] = {
            i: ReportedClass(name, i) for i, name in self.model_names.items()
        }
        self.classes.update(overrides or {})
        self._name_by_id = {c.class_id: c.name for c in self.classes.values()}

    @property
    def names(self) -> set[str]:
        return {c.name for c in self.classes.values()}

    def allowed_raw_ids(self, wanted: Sequence[str]) -> set[int] | None:
        """Raw class ids whose reported name is in ``wanted`` (None = all classes)."""
        if not wanted:
            return None
        wanted_set = set(wanted)
        return {i for i, c in self.classes.items() if c.name in wanted_set}

    @property
    def merges_classes(self) -> bool:
        """Several raw classes report as one (the fall model's Normal/Fall -> person)."""
        return len({c.class_id for c in self.classes.values()}) < len(self.classes)

    def apply(self, det: Detections, allowed: set[int] | None) -> Detections:
        """Filter to ``allowed`` raw ids and rewrite class ids/attributes to reported ones."""
        if allowed is not None and len(det):
            det = det[np.isin(det.class_id, list(allowed))]
        if not len(det):
            return det
        reported = [
            self.classes.get(int(c), ReportedClass(str(int(c)), int(c))) for c in det.class_id
        ]
        return Detections(
            xyxy=det.xyxy,
            confidence=det.confidence,
            class_id=np.array([r.class_id for r in reported], dtype=np.int64),
            tracker_id=det.tracker_id,
            attributes=[
                {**a, **r.attributes} for a, r in zip(det.attributes, reported, strict=True)
            ],
        )

    def name_of(self, class_id: int) -> str:
        return self._name_by_id.get(class_id, str(class_id))


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix of pixel boxes ``a`` (N, 4) and ``b`` (M, 4)."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)), np.float32)
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)
