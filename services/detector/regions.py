"""Region detection: run the model on square crops around what moves, not the full frame.

When motion is confined to part of the frame, the model runs on one or a few square
crops around the motion boxes and the live tracks' boxes, at ``region_imgsz``
(320 by default: a quarter of the pixels of a 640 input), and the boxes are mapped
back into the frame.  Widespread motion, or tracks spread over the frame, make the
crops too big (more than ``region_max_area`` of the frame, or more than
``max_regions`` of them): then the full frame runs as before.

Crops that overlap are merged into one; detections from different crops are merged
and deduplicated with class-wise NMS.  An object cut by a crop's inner edge (one
that is not the frame's edge) is dropped when a bigger, uncut sighting of it exists
in another crop, and kept otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from services.detector.detections import Detections

#: Motion and track boxes are grown by this fraction of their size on every side
#: (moving limbs cover only part of a person; the person may move on meanwhile).
PAD_FRACTION = 0.25
#: ... and at least this many pixels.
PAD_MIN_PX = 24


@dataclass(frozen=True, slots=True)
class Region:
    """A square crop ``side`` pixels wide at (x0, y0) of the frame."""

    x0: int
    y0: int
    side: int

    @property
    def xyxy(self) -> tuple[int, int, int, int]:
        return (self.x0, self.y0, self.x0 + self.side, self.y0 + self.side)

    def crop(self, img: np.ndarray) -> np.ndarray:
        return img[self.y0 : self.y0 + self.side, self.x0 : self.x0 + self.side]

    def unmap(self, det: Detections) -> Detections:
        """Boxes in crop pixels -> frame pixels."""
        out = det[np.arange(len(det))]
        out.xyxy = out.xyxy + np.array([self.x0, self.y0, self.x0, self.y0], np.float32)
        return out


def _square(box: np.ndarray, width: int, height: int, min_side: int) -> Region | None:
    """The smallest square inside the frame holding ``box`` (grown to ``min_side``)."""
    x1, y1, x2, y2 = (float(v) for v in box)
    side = int(np.ceil(max(x2 - x1, y2 - y1, min_side)))
    if side > min(width, height):
        return None
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    x0 = int(round(min(max(cx - side / 2, 0), width - side)))
    y0 = int(round(min(max(cy - side / 2, 0), height - side)))
    return Region(x0, y0, side)


def _overlaps(a: Region, b: Region) -> bool:
    ax1, ay1, ax2, ay2 = a.xyxy
    bx1, by1, bx2, by2 = b.xyxy
    return ax1 < bx2 and bx1 < ax2 and ay1 < by2 and by1 < ay2


def plan_regions(
    boxes: np.ndarray,
    width: int,
    height: int,
    *,
    min_side: int,
    max_area: float,
    max_regions: int,
) -> list[Region] | None:
    """Square crops covering ``boxes`` (pixels xyxy), or None for "run the full frame".

    ``boxes`` are the motion and live-track boxes; an empty list means the full frame
    too (nothing to aim at: a keyframe).
    """
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    if len(boxes) == 0:
        return None
    size = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
    pad = np.maximum(size * PAD_FRACTION, PAD_MIN_PX)[:, None]
    grown = boxes + np.hstack([-pad, -pad, pad, pad])
    grown[:, [0, 2]] = grown[:, [0, 2]].clip(0, width)
    grown[:, [1, 3]] = grown[:, [1, 3]].clip(0, height)
    # Greedy clustering: each box's square; overlapping squares merge into one around
    # the union of their boxes, until nothing overlaps.
    clusters: list[np.ndarray] = [g.copy() for g in grown]
    while True:
        squares = [_square(c, width, height, min_side) for c in clusters]
        if any(s is None for s in squares):
            return None
        merged = False
        for i in range(len(clusters)):
            for j in range(i + 1, len(clusters)):
                if _overlaps(squares[i], squares[j]):  # type: ignore[arg-type]
                    a, b = clusters[i], clusters[j]
                    clusters[i] = np.array(
                        [min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3])],
                        np.float32,
                    )
                    del clusters[j]
                    merged = True
                    break
            if merged:
                break
        if not merged:
            break
    regions = [s for s in squares if s is not None]
    if len(regions) > max_regions:
        return None
    if sum(r.side * r.side for r in regions) > max_area * width * height:
        return None
    return regions


def merge_detections(
    parts: list[tuple[Region, Detections]], width: int, height: int, iou: float
) -> Detections:
    """Detections of several crops (crop pixels) as one frame's (frame pixels), deduplicated."""
    if not parts:
        return Detections.empty()
    mapped = []
    for region, det in parts:
        if len(det) == 0:
            continue
        d = region.unmap(det)
        mapped.append((region, d))
    if not mapped:
        return Detections.empty()
    if len(mapped) == 1:
        return mapped[0][1]
    allx = np.concatenate([d.xyxy for _, d in mapped])
    conf = np.concatenate([d.confidence for _, d in mapped])
    cls = np.concatenate([d.class_id for _, d in mapped])
    attrs = [a for _, d in mapped for a in d.attributes]
    # Cut at a crop's inner edge: less reliable than a whole sighting in another crop.
    cut = np.concatenate([_cut_by_edge(r, d.xyxy, width, height) for r, d in mapped])
    score = conf - 0.5 * cut  # prefer uncut sightings in NMS
    xywh = allx.copy()
    xywh[:, 2:] -= xywh[:, :2]
    keep = cv2.dnn.NMSBoxesBatched(
        xywh.astype(np.float32), score.astype(np.float32), cls.astype(np.int32), -1.0, iou
    )
    keep = np.asarray(keep, np.int64).reshape(-1)
    return Detections(allx[keep], conf[keep], cls[keep], attributes=[attrs[i] for i in keep])


def _cut_by_edge(region: Region, xyxy: np.ndarray, width: int, height: int) -> np.ndarray:
    """1.0 for boxes touching an edge of the crop that is not an edge of the frame."""
    x1, y1, x2, y2 = region.xyxy
    m = 2.0
    cut = np.zeros(len(xyxy), np.float32)
    if x1 > 0:
        cut[xyxy[:, 0] <= x1 + m] = 1
    if y1 > 0:
        cut[xyxy[:, 1] <= y1 + m] = 1
    if x2 < width:
        cut[xyxy[:, 2] >= x2 - m] = 1
    if y2 < height:
        cut[xyxy[:, 3] >= y2 - m] = 1
    return cut
