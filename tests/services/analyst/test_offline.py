"""The offline provider's summary, the scene context it is built from, and the prompt."""

from __future__ import annotations

import json
import time

import cv2
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from services.analyst.prompt import ImageError, build_prompt, downscale_jpeg
from services.analyst.providers.offline import OFFLINE_LABEL, offline_summary
from services.analyst.scene import build_context, has_activity, parse_record, ts_seconds

NOW = 1_790_000_000.0

# A detections record the way the detector writes it (YOLO on a street camera, with
# ByteTrack ids), as services/detector/records.py documents it.
DETECTIONS = {
    "type": "detections",
    "camera_id": "shop/entrance",
    "ts": int(NOW * 1000) - 400,
    "seq": 18231,
    "w": 1280,
    "h": 720,
    "inference_ms": 48.2,
    "objects": [
        {"class": "person", "class_id": 0, "confidence": 0.91, "bbox": [412, 188, 530, 610], "track_id": 14},
        {"class": "person", "class_id": 0, "confidence": 0.84, "bbox": [760, 200, 860, 590], "track_id": 17},
        {"class": "person", "class_id": 0, "confidence": 0.47, "bbox": [1020, 260, 1080, 470], "track_id": None},
        {"class": "car", "class_id": 2, "confidence": 0.88, "bbox": [0, 330, 380, 640], "track_id": 3},
        {"class": "bicycle", "class_id": 1, "confidence": 0.62, "bbox": [900, 420, 1010, 600], "track_id": 21},
        {"class": "handbag", "class_id": 26, "confidence": 0.33, "bbox": [470, 400, 505, 450]},
    ],
}  # fmt: skip
T_MS = int(NOW * 1000)
# The faces worker writes one record per face (services/faces): the same stranger in
# two frames, a recognised person, and a face on another camera.
FACES = [
    {"type": "face", "camera_id": "shop/entrance", "ts": T_MS - 900, "name": "Maria Lopez", "distance": 0.41, "box": [0.34, 0.28, 0.39, 0.37]},
    {"type": "face", "camera_id": "shop/entrance", "ts": T_MS - 900, "name": "unknown", "distance": 0.71, "box": [0.61, 0.3, 0.65, 0.39]},
    {"type": "face", "camera_id": "shop/entrance", "ts": T_MS - 1500, "name": "unknown", "distance": 0.69, "box": [0.6, 0.3, 0.64, 0.39]},
    {"type": "face", "camera_id": "shop/yard", "ts": T_MS - 800, "name": "Bob", "distance": 0.3, "box": [0.1, 0.1, 0.2, 0.2]},
]  # fmt: skip
EVENT = {"type": "object_entered", "camera_id": "shop/entrance", "class": "person", "track_id": 17}


def test_offline_summary_of_a_realistic_scene():
    ctx = build_context(
        "shop/entrance", DETECTIONS, FACES, trigger="object_entered", event=EVENT, now=NOW
    )
    result = offline_summary(ctx)
    print("\nOFFLINE SUMMARY:", result.summary)
    print("NOTABLE OBJECTS:", result.notable_objects)
    assert result.summary == (
        f"{OFFLINE_LABEL}. Camera shop/entrance: 3 × person (tracks 14, 17), "
        "1 × bicycle (track 21), 1 × car (track 3), 1 × handbag. Recognised: Maria Lopez. "
        "1 unrecognised face. Trigger: person entered (track 17)."
    )
    assert result.notable_objects == [
        "person #14",
        "person #17",
        "bicycle #21",
        "car #3",
        "handbag",
        "recognised: Maria Lopez",
    ]
    # Nothing assessed a threat, so nothing claims to have.
    assert result.threat_level is None and result.suggested_action is None
    assert result.model is None


def test_offline_summary_says_why_and_handles_an_empty_scene():
    ctx = build_context("shop/entrance", None, None, now=NOW)
    result = offline_summary(ctx, "gemini paused after repeated failures")
    assert result.summary == (
        f"{OFFLINE_LABEL} (gemini paused after repeated failures). Camera shop/entrance: "
        "no objects detected. Trigger: periodic check."
    )
    assert result.notable_objects == []


def test_stale_records_are_not_reported_as_current():
    ctx = build_context("shop/entrance", DETECTIONS, FACES, now=NOW + 600, max_age_s=60)
    assert ctx.objects == [] and ctx.names == []
    assert has_activity(DETECTIONS, max_age_s=5, now=NOW)
    assert not has_activity(DETECTIONS, max_age_s=5, now=NOW + 10)
    assert not has_activity(dict(DETECTIONS, objects=[]), max_age_s=5, now=NOW)


def test_timestamps_in_any_unit():
    for value in (NOW, NOW * 1e3, NOW * 1e6, NOW * 1e9, str(int(NOW * 1e3))):
        assert abs(ts_seconds(value) - NOW) < 1e-3
    for bad in (None, True, "x", -5, float("nan"), [1]):
        assert ts_seconds(bad) is None


def test_prompt_carries_detections_names_and_trigger():
    ctx = build_context(
        "shop/entrance", DETECTIONS, FACES, trigger="object_entered", event=EVENT, now=NOW
    )
    prompt = build_prompt(ctx, captured_at=NOW)
    assert "Camera: shop/entrance" in prompt
    assert "- 3 × person (tracks 14, 17)" in prompt and "- 1 × car (track 3)" in prompt
    assert "Recognised people (face recognition): Maria Lopez" in prompt
    assert "Unrecognised faces: 1" in prompt
    assert "object_entered event (person entered (track 17))" in prompt


def test_downscale_keeps_aspect_and_leaves_small_images_alone():
    img = np.random.default_rng(1).integers(0, 255, (1080, 1920, 3), dtype=np.uint8)
    jpeg = cv2.imencode(".jpg", img)[1].tobytes()
    small, size = downscale_jpeg(jpeg, 640)
    assert size == (640, 360)
    decoded = cv2.imdecode(np.frombuffer(small, np.uint8), cv2.IMREAD_COLOR)
    assert decoded.shape == (360, 640, 3)
    same, size = downscale_jpeg(small, 640)
    assert same is small and size == (640, 360)
    try:
        downscale_jpeg(b"\xff\xd8garbage", 640)
    except ImageError:
        pass
    else:
        raise AssertionError("garbage JPEG accepted")


scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12)
FIELDS = ["class", "label", "name", "track_id", "tracker_id", "confidence", "object", "type"]
items = st.dictionaries(st.sampled_from(FIELDS), scalars | st.dictionaries(st.sampled_from(FIELDS), scalars, max_size=3), max_size=5) | scalars  # fmt: skip
record_like = st.dictionaries(
    st.sampled_from(["objects", "detections", "faces", *FIELDS]),
    scalars | st.lists(items, max_size=6),
    max_size=6,
)


@settings(max_examples=150, deadline=None)
@given(det=record_like, faces=st.lists(record_like | scalars, max_size=4), event=record_like)
def test_any_record_shape_from_redis_is_survived(det, faces, event):
    """Records come from other services through Redis: no shape may crash the analyst."""
    det["ts"] = NOW * 1000  # keep them "fresh" so their content is actually parsed
    for face in faces:
        if isinstance(face, dict):
            face.update(ts=NOW * 1000, camera_id="c/1")
    raw = json.dumps(det, allow_nan=True)
    ctx = build_context("c/1", parse_record(raw), faces, trigger="x", event=event, now=NOW)
    result = offline_summary(ctx)
    assert result.summary.startswith(OFFLINE_LABEL)
    build_prompt(ctx, captured_at=time.time())
    assert parse_record(b"\xff not json") is None and parse_record("[1, 2]") is None
