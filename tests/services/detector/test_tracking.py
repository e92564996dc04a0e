"""Track life cycle on synthetic detections (ultralytics' real BYTETracker, no model)."""

from __future__ import annotations

import numpy as np

from services.detector.config import TrackerConfig
from services.detector.detections import Detections
from services.detector.tracking import CameraTracker

W, H = 640, 480


def dets(*boxes: tuple[float, float, float, float], conf: float = 0.9) -> Detections:
    return Detections(np.array(boxes, np.float32), np.full(len(boxes), conf), np.zeros(len(boxes)))


def step(tr: CameraTracker, d: Detections, t: float, jpeg: bytes = b"jpeg"):
    return tr.update(d, width=W, height=H, ts_ms=int(t * 1000), jpeg=jpeg, now=t)


def test_track_enters_after_min_hits_and_leaves_after_lost_time():
    tr = CameraTracker("c/1", TrackerConfig(min_hits=3, lost_after_s=2.0))
    t = 1000.0
    seen_events = []
    for i in range(5):
        d, events = step(tr, dets((100 + i, 100, 200 + i, 300)), t + i * 0.1)
        seen_events += events
        if i == 2:
            assert [e.type for e in events] == ["object_entered"]
    assert [e.type for e in seen_events] == ["object_entered"], "entered exactly once"
    track_id = int(d.tracker_id[0])
    assert track_id > 0
    ev = seen_events[0]
    assert ev.track.track_id == track_id
    # Equal confidence everywhere: the first sighting stays the best one.
    assert ev.track.best_box == [round(v, 5) for v in (100 / W, 100 / H, 200 / W, 300 / H)]

    # Object gone: nothing before lost_after_s, then exactly one 'left'.
    _, events = step(tr, Detections.empty(), t + 1.0)
    assert events == []
    _, events = step(tr, Detections.empty(), t + 2.5)
    assert [(e.type, e.reason, e.track.track_id) for e in events] == [
        ("object_left", "lost", track_id)
    ]
    assert events[0].track.first_seen_ms == 1_000_000
    assert events[0].track.last_seen_ms == 1_000_400
    assert tr.expire(t + 100) == []


def test_stable_ids_for_two_objects_and_best_frame_kept():
    tr = CameraTracker("c/1", TrackerConfig(min_hits=1))
    t = 50.0
    ids = None
    for i, conf in enumerate([0.5, 0.9, 0.6]):
        d = Detections(
            np.array([[10 + i, 10, 60 + i, 110], [300, 200 - i, 380, 330 - i]], np.float32),
            [conf, 0.7],
            [0, 2],
        )
        d, _ = step(tr, d, t + i * 0.1, jpeg=f"frame{i}".encode())
        if i > 0:
            cur = list(d.tracker_id)
            ids = ids or cur
            assert cur == ids and len(set(cur)) == 2 and min(cur) > 0
    first = tr.tracks[ids[0]]
    assert first.best_confidence == np.float32(0.9) and first.best_jpeg == b"frame1"
    assert tr.tracks[ids[1]].class_id == 2


def test_a_one_frame_blip_never_enters_and_close_reports_entered_tracks():
    tr = CameraTracker("c/1", TrackerConfig(min_hits=3, lost_after_s=1.0))
    _, ev = step(tr, dets((0, 0, 50, 50)), 10.0)
    _, ev2 = step(tr, Detections.empty(), 12.0)
    assert ev == [] and ev2 == [], "a blip seen once is dropped silently"

    for i in range(4):
        step(tr, dets((100, 100, 200, 200)), 20.0 + i * 0.1)
    closed = tr.close("handover")
    assert [(e.type, e.reason) for e in closed] == [("object_left", "handover")]
    assert tr.tracks == {}
    _, ev = step(tr, dets((100, 100, 200, 200)), 30.0)
    assert ev == [] and tr.close() == []


def test_weak_detections_extend_a_track_but_do_not_start_one():
    cfg = TrackerConfig(min_hits=1, high_thresh=0.5, low_thresh=0.1)
    tr = CameraTracker("c/1", cfg)
    d, _ = step(tr, dets((100, 100, 200, 300), conf=0.2), 1.0)
    assert list(d.tracker_id) == [-1], "weak detection alone starts no track"
    d, _ = step(tr, dets((100, 100, 200, 300), conf=0.9), 1.1)
    d, _ = step(tr, dets((101, 100, 201, 300), conf=0.9), 1.2)
    tid = int(d.tracker_id[0])
    assert tid > 0
    d, _ = step(tr, dets((102, 100, 202, 300), conf=0.2), 1.3)
    assert list(d.tracker_id) == [tid], "weak detection keeps the existing track"


def test_one_person_seen_as_two_merged_classes_is_one_detection():
    from services.detector.models import label_map_for

    labels = label_map_for({0: "Normal", 1: "Fall"})
    assert labels.merges_classes and not label_map_for({0: "person", 1: "car"}).merges_classes
    raw = Detections(
        np.array([[100, 100, 200, 300], [102, 98, 201, 305], [400, 100, 500, 300]], np.float32),
        [0.6, 0.4, 0.5],
        [0, 1, 1],
    )
    out = labels.apply(raw, None).nms(0.45)
    assert len(out) == 2
    assert out.attributes[0] == {"posture": "standing"}, "the more confident posture wins"
    assert out.xyxy[1].tolist() == [400, 100, 500, 300]


def walk(tr: CameraTracker) -> list:
    """An empty street for a second, then a person walking 12 px per 0.2 s frame at
    confidence 0.35 (IoU ~0.7 between frames)."""
    for i in range(5):
        step(tr, Detections.empty(), 9.0 + 0.2 * i)
    events = []
    for i in range(10):
        x = 100 + 12 * i
        _, ev = step(tr, dets((x, 200, x + 70, 430), conf=0.35), 10.0 + 0.2 * i)
        events += ev
    return events


def test_a_weakly_seen_walking_person_is_announced():
    """A passer-by the model sees at confidence ~0.35 in every frame, walking 12 px per
    frame (IoU ~0.75 between frames): ByteTrack's score fusion (IoU x confidence must
    exceed 0.3 to confirm a new track) never confirmed it; plain IoU does."""
    tr = CameraTracker("c/1", TrackerConfig(min_hits=3))
    events = walk(tr)
    assert [e.type for e in events] == ["object_entered"]
    assert events[0].ts_ms <= 10_000 + 4 * 200, "announced within the first five frames"


def test_score_fusion_can_still_be_chosen():
    cfg = TrackerConfig(min_hits=3, fuse_score=True)
    tr = CameraTracker("c/1", cfg)
    events = walk(tr)
    assert events == [], "ByteTrack's MOT setting: the weak walker is not confirmed"
