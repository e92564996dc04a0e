"""The faces worker end to end: real ZeroMQ fan-out -> WorkerRuntime -> dlib -> Redis."""

from __future__ import annotations

import json
import time

import cv2
import numpy as np
from prometheus_client import REGISTRY

from services.faces.config import FacesConfig
from services.faces.gallery import Gallery
from shared.keys import STREAM_DETECTIONS
from shared.redisutil import publish_record
from tests.helpers import wait_for
from tests.services.faces.support import astronaut_face_bgr, background, compose, stream_records

CAM = "lobby/door"


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_known_face_recognised_unknown_face_reported(
    faces_worker, r, keys, astronaut_jpeg, two_people_scene
) -> None:
    config = FacesConfig(gate_on_person=False, max_rate_per_camera=0, debounce_s=3600)
    Gallery(r, keys, config).enroll("astronaut", [astronaut_jpeg])
    worker = faces_worker(config)

    def both_seen() -> bool:
        names = {rec["name"] for rec in stream_records(r, keys, "faces")}
        return {"astronaut", "unknown"} <= names

    worker.feed_until(two_people_scene, both_seen, what="astronaut and unknown records")
    records = stream_records(r, keys, "faces")
    known = next(rec for rec in records if rec["name"] == "astronaut")
    unknown = next(rec for rec in records if rec["name"] == "unknown")
    for rec in (known, unknown):
        assert rec["type"] == "face" and rec["camera_id"] == CAM
        assert abs(rec["ts"] - time.time() * 1000) < 60_000  # capture time, unix ms
        x1, y1, x2, y2 = rec["box"]
        assert 0 <= x1 < x2 <= 1 and 0 <= y1 < y2 <= 1
        assert rec["size_px"] >= 90 and rec["sharpness"] > 25 and rec["score"] > 0
    assert known["distance"] < 0.6 < unknown["distance"]
    # She was pasted on the left half, the other man on the right.
    assert known["box"][2] < 0.5 < unknown["box"][0]

    # One face_recognized event, with the frame stored as its snapshot.
    events = wait_for(lambda: stream_records(r, keys, "events"), timeout=5, what="event")
    assert len(events) == 1
    event = events[0]
    assert event["type"] == "face_recognized" and event["name"] == "astronaut"
    assert event["camera_id"] == CAM and event["box"] == known["box"]
    assert event["distance"] == known["distance"] and event["event_id"]
    snap_key = keys.snapshot(event["snapshot_id"])
    assert 0 < r.ttl(snap_key) <= config.snapshot_ttl_s
    raw = r.execute_command("GET", snap_key, NEVER_DECODE=True)  # binary JPEG
    img = cv2.imdecode(np.frombuffer(raw, np.uint8), cv2.IMREAD_COLOR)
    assert img is not None and img.shape == (480, 640, 3)

    # Debounced: she stays in view and is recognised again, but no second event.
    recognised = worker.stats().faces_recognised
    worker.feed_until(two_people_scene, lambda: worker.stats().faces_recognised >= recognised + 3)
    assert len(stream_records(r, keys, "events")) == 1
    assert worker.stats().events == 1

    # Per-camera stats reach Redis for the dashboard: the runtime's one stats hash.
    def written():
        raw = r.hget(keys.worker_stats("faces"), CAM)
        counters = json.loads(raw)["counters"] if raw else {}
        return counters if counters.get("faces_recognised", 0) >= 1 else None

    counters = wait_for(written, timeout=5, what="faces counters in worker_stats")
    assert counters["events"] == 1 and counters["frames_analysed"] >= 1
    assert r.exists(keys.k("faces_stats")) == 0, "no second stats hash"


def test_person_gate_skips_detection_until_the_detector_sees_someone(
    faces_worker, r, keys, astronaut_jpeg, known_scene
) -> None:
    config = FacesConfig(gate_on_person=True, person_recent_s=3, max_rate_per_camera=0)
    Gallery(r, keys, config).enroll("astronaut", [astronaut_jpeg])
    worker = faces_worker(config)
    gated_before = metric("sentri_faces_frames_gated_total", camera_id=CAM, reason="no_person")

    # No detector record at all: frames are gated, the face detector never runs.
    worker.feed_until(known_scene, lambda: worker.stats().frames_gated >= 5)
    # A record without a person, and a stale person record, keep the gate closed.
    now_ms = time.time_ns() // 1_000_000
    det = {"type": "detections", "camera_id": CAM, "ts": now_ms, "objects": [{"class": "car"}]}
    publish_record(r, keys, STREAM_DETECTIONS, det, maxlen=1000)
    gated = worker.stats().frames_gated
    worker.feed_until(known_scene, lambda: worker.stats().frames_gated >= gated + 3)
    stale = {**det, "ts": now_ms - 60_000, "objects": [{"class": "person", "confidence": 0.9}]}
    publish_record(r, keys, STREAM_DETECTIONS, stale, maxlen=1000)
    gated = worker.stats().frames_gated
    worker.feed_until(known_scene, lambda: worker.stats().frames_gated >= gated + 3)
    # Garbage in the detector's latest key is not a crash, just a closed gate.
    r.set(keys.latest(STREAM_DETECTIONS, CAM), "{not json")
    gated = worker.stats().frames_gated
    worker.feed_until(known_scene, lambda: worker.stats().frames_gated >= gated + 3)

    st = worker.stats()
    assert st.frames_analysed == 0 and st.faces_detected == 0
    assert stream_records(r, keys, "faces") == []
    assert (
        metric("sentri_faces_frames_gated_total", camera_id=CAM, reason="no_person") - gated_before
        >= st.frames_gated
    )

    # The detector reports a person now: faces are looked for and found.
    fresh = {**det, "ts": time.time_ns() // 1_000_000, "objects": [{"class": "person"}]}
    publish_record(r, keys, STREAM_DETECTIONS, fresh, maxlen=1000)
    worker.feed_until(
        known_scene,
        lambda: [x for x in stream_records(r, keys, "faces") if x["name"] == "astronaut"],
        what="face after the person gate opened",
    )
    assert worker.stats().frames_analysed >= 1


def test_tiny_face_rejected_by_quality_gate_and_not_matched(
    faces_worker, r, keys, astronaut_jpeg
) -> None:
    # upsample 2 lets dlib find a 20 px face in a small frame; the gate must reject it.
    config = FacesConfig(gate_on_person=False, max_rate_per_camera=0, upsample=2, min_face_px=40)
    Gallery(r, keys, config).enroll("astronaut", [astronaut_jpeg])
    worker = faces_worker(config)
    before = metric("sentri_faces_rejected_total", camera_id=CAM, reason="too_small")
    tiny = compose([(astronaut_face_bgr(), 20 / 87, 60, 40)], 160, 120)
    worker.feed_until(tiny, lambda: worker.stats().faces_rejected["too_small"] >= 2)
    st = worker.stats()
    # Feeding stopped: once the frame in flight is done, every face found was rejected.
    wait_for(lambda: st.faces_detected == st.faces_rejected["too_small"], timeout=5)
    assert st.faces_recognised == 0 and st.faces_unknown == 0
    assert stream_records(r, keys, "faces") == [] and stream_records(r, keys, "events") == []
    assert metric("sentri_faces_rejected_total", camera_id=CAM, reason="too_small") - before >= 2


def test_rate_limit_and_undecodable_frames(faces_worker, r, keys) -> None:
    config = FacesConfig(gate_on_person=False, max_rate_per_camera=1.0)
    worker = faces_worker(config)
    invalid_before = metric("sentri_invalid_input_total", service="faces", reason="bad_jpeg")
    # A frame whose payload is not a JPEG is counted and dropped; the worker carries on.
    scene = background()
    worker.feed_until(
        scene, lambda: worker.stats().frames_invalid >= 1, jpeg=b"\xff\xd8" + b"\x00" * 500
    )
    assert metric("sentri_invalid_input_total", service="faces", reason="bad_jpeg") > invalid_before
    # At 1 frame/s most of a 10 fps stream is rate limited, and what is analysed is real.
    worker.feed_until(scene, lambda: worker.stats().frames_rate_limited >= 5)
    worker.feed_until(scene, lambda: worker.stats().frames_analysed >= 1)
    st = worker.stats()
    assert st.frames_rate_limited > st.frames_analysed
    assert st.faces_detected == 0  # the coffee cup has no face
