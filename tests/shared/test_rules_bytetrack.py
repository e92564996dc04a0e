"""Scripted detections through the detector's real ByteTrack tracker into the rule engine."""

from __future__ import annotations

import numpy as np

from services.detector.config import TrackerConfig
from services.detector.detections import Detections
from services.detector.tracking import CameraTracker
from shared.rules import CameraRules, LineRule, RuleEngine, TrackedObject, ZoneRule

W, H = 640, 480


def frame_det(cx: float, foot_y: float, jitter: float = 0.0) -> Detections:
    """One person 60x160 px whose feet are at (cx, foot_y) in pixels."""
    box = [cx - 30 + jitter, foot_y - 160 + jitter, cx + 30 + jitter, foot_y + jitter]
    return Detections(np.array([box], np.float32), np.array([0.9]), np.array([0]))


def test_person_walking_through_bytetrack_crosses_once_each_way_and_visits_zone():
    tracker = CameraTracker("shop/cam0", TrackerConfig())
    engine = RuleEngine(
        "shop/cam0",
        CameraRules(
            lines=[LineRule(id="door", points=[(0.0, 0.5), (1.0, 0.5)])],
            zones=[ZoneRule(id="mat", points=[(0.3, 0.55), (0.7, 0.55), (0.7, 0.8), (0.3, 0.8)])],
        ),
    )
    rng = np.random.default_rng(1)
    # Feet from y=180 px (A side) down to y=420 px (B side), back again, 2 px jitter.
    ys = list(np.linspace(180, 420, 40)) + list(np.linspace(420, 180, 40))
    events, ids = [], set()
    for i, y in enumerate(ys):
        t = 1000.0 + i / 10
        det, _ = tracker.update(
            frame_det(320, y, float(rng.normal(0, 2))), width=W, height=H,
            ts_ms=int(t * 1000), jpeg=b"", now=t,
        )  # fmt: skip
        boxes = det.normalized_boxes(W, H)
        objs = [
            TrackedObject(int(det.tracker_id[k]), "person", tuple(float(v) for v in boxes[k]))
            for k in range(len(det))
            if det.tracker_id[k] >= 0
        ]
        ids |= {o.track_id for o in objs}
        events += engine.update(objs, t)[1]
    assert len(ids) == 1, "the tracker kept one identity"
    kinds = [(e["type"], e.get("direction") or e.get("zone")) for e in events]
    assert kinds == [
        ("line_crossed", "a_to_b"),
        ("zone_entered", "mat"),
        ("zone_left", "mat"),  # walked past the mat's far edge (y 0.8)
        ("zone_entered", "mat"),  # and back over it
        ("zone_left", "mat"),
        ("line_crossed", "b_to_a"),
    ]
