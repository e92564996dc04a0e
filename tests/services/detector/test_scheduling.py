"""Motion-aware scheduling and region detection with the real person model on real photos.

Frames are handed to the real ``DetectorProcessor`` (inside a started
``WorkerRuntime`` on real Redis) one by one with ingest's receive stamp (``rx``) on
a simulated clock, so idle gaps of several seconds take no test time and do not
depend on this machine's speed.
"""

from __future__ import annotations

import contextlib
import json

import cv2
import numpy as np
import pytest
from prometheus_client import REGISTRY

from bench.detector_mixed import missed as match_tracks
from bench.detector_mixed import track_lives
from bench.scenes import PasserByScene, paste
from services.detector.config import SECTION, DetectorConfig
from services.detector.detections import Detections
from services.detector.regions import Region, merge_detections, plan_regions
from shared.config import ConfigError, load_section
from shared.keys import STREAM_DETECTIONS, STREAM_EVENTS
from shared.protocol import FrameHeader
from shared.worker import Frame
from tests.helpers import encode_jpeg, wait_for
from tests.services.detector.conftest import (
    iou,
    read_stream,
    register_cameras,
    running_detector,
    streaming,
)

T0 = 1_800_000_000.0  # the simulated clock's start (unix s)


class Camera:
    """Feeds one camera's frames straight into the processor on a simulated clock."""

    def __init__(self, runtime, camera_id: str) -> None:
        self.runtime, self.camera_id, self.seq = runtime, camera_id, 0
        self.detected: list[float] = []
        self.skipped: list[float] = []

    def feed(self, img: np.ndarray, t: float, motion: float | None = None) -> bool:
        """One frame at ``T0 + t``; True when the model ran on it."""
        self.seq += 1
        h, w = img.shape[:2]
        ns = int((T0 + t) * 1e9)
        header = FrameHeader(
            client_id=self.camera_id.split("/")[0],
            camera_id=self.camera_id,
            seq=self.seq,
            ts=ns,
            w=w,
            h=h,
            motion=motion,
            rx=ns,
        )
        frame = Frame(header, encode_jpeg(img, 85))
        passed = self.runtime.processor.process_batch([frame])
        ran = frame not in passed
        (self.detected if ran else self.skipped).append(t)
        return ran


@contextlib.contextmanager
def camera(onnx_backend, redis_config, r, keys, publisher, state_dir, name: str, **config):
    cam_id = register_cameras(r, keys, "sched", [name])[0]
    with running_detector(
        onnx_backend, redis_config, publisher.endpoint, state_dir, **config
    ) as rt:
        wait_for(lambda: cam_id in rt.owned, 10, what="camera owned")
        # Frames go straight in on a simulated clock, so a slow machine could take
        # longer than lost_after_s between two of them: stop the wall-clock sweep that
        # closes the tracks of cameras gone silent (tested in test_service.py).
        rt.processor._stop.set()
        yield Camera(rt, cam_id)


def events(r, keys, kind: str) -> list[dict]:
    return [e for e in read_stream(r, keys, STREAM_EVENTS) if e["type"] == kind]


def sample(name: str, labels: dict | None = None) -> float:
    return REGISTRY.get_sample_value(name, labels or {}) or 0.0


AWARE = {"motion_aware": True, "idle_interval_s": 3.0, "motion_hold_s": 0.5}


def test_people_standing_still_are_seen_on_keyframes_and_their_tracks_survive_the_gaps(
    onnx_backend, redis_config, r, keys, publisher, state_dir, small_bus_jpeg
):
    still = cv2.imdecode(np.frombuffer(small_bus_jpeg, np.uint8), cv2.IMREAD_COLOR)
    with camera(onnx_backend, redis_config, r, keys, publisher, state_dir, "still", **AWARE) as c:
        # 16 s at 5 fps of a motionless street with 4 people; lost_after_s is 1 s,
        # far shorter than the 3 s between keyframes.
        for i in range(80):
            c.feed(still, i * 0.2)
    entered = events(r, keys, "object_entered")
    assert len(entered) >= 3
    lost = [e for e in events(r, keys, "object_left") if e["reason"] != "shutdown"]
    assert lost == [], "no object_left for people who stood still"
    # The model ran while the tracks settled, then once per idle_interval_s.
    assert len(c.detected) <= 4 + 16 / 3 + 1, c.detected
    assert len(c.skipped) >= 65
    late = [t for t in c.detected if t > 3]
    assert late and all(b - a >= 3.0 - 1e-6 for a, b in zip(late, late[1:], strict=False))
    recs = read_stream(r, keys, STREAM_DETECTIONS)
    assert len(recs) == len(c.detected), "one record per detection run, none for skipped frames"
    # The same tracks on the last keyframe as after settling: no re-entry.
    ids = {o["track_id"] for o in recs[-1]["objects"] if o["track_id"] is not None}
    assert ids and ids <= {e["track_id"] for e in entered}


def test_a_passer_by_is_detected_in_a_region_and_announced_like_without_scheduling(
    onnx_backend, redis_config, r, keys, publisher, state_dir
):
    scene = PasserByScene("rocket", period_s=100, cross_s=8.0, phase=2.0)
    fps = 5

    def run(name: str, **config) -> tuple[Camera, list[dict], list[dict]]:
        with camera(onnx_backend, redis_config, r, keys, publisher, state_dir, name, **config) as c:
            for i in range(int(14 * fps)):
                c.feed(scene.render(i / fps), i / fps)
        recs = [d for d in read_stream(r, keys, STREAM_DETECTIONS) if d["camera_id"] == c.camera_id]
        evs = [e for e in read_stream(r, keys, STREAM_EVENTS) if e["camera_id"] == c.camera_id]
        return c, recs, evs

    base, _, base_events = run("baseline", motion_aware=False)
    aware, recs, aware_events = run("aware", **AWARE)
    # (camera, entered, left) with the camera name dropped: two cameras, one scene.
    base_tracks = [("", a, b) for _, a, b in track_lives(base_events, 14.0, T0)]
    aware_tracks = [("", a, b) for _, a, b in track_lives(aware_events, 14.0, T0)]
    assert base_tracks, "the baseline announced the passer-by"
    missed, delay = match_tracks(base_tracks, aware_tracks)
    assert missed == 0, (base_tracks, aware_tracks)
    assert delay <= 1.0, "announced at most a second later"
    assert len(base.detected) == 70
    # Nobody in view for the first 2 s and the last 4 s: mostly skipped.
    assert len(aware.detected) <= 56, aware.detected
    assert sum(1 for t in aware.skipped if t < 2) >= 5
    assert sum(1 for t in aware.skipped if t > 11.5) >= 10
    regional = [d for d in recs if d["regions"] > 0]
    assert regional, "the walking person was run in a crop, not the full frame"
    people = [d for d in regional if d["objects"]]
    assert people, "and found there"
    for d in people:
        t = (d["ts"] / 1000) - T0
        if not scene.present(t):
            continue  # half in view: the truth box is cut
        x = scene.person_x(t)
        truth = [
            x / 640,
            scene.y / 480,
            (x + scene.sprite.shape[1]) / 640,
            (scene.y + scene.sprite.shape[0]) / 480,
        ]
        assert max(iou(truth, o["box"]) for o in d["objects"]) >= 0.5, (t, d["objects"])


def test_a_passer_by_among_people_standing_still_runs_in_a_crop_and_their_tracks_live_on(
    onnx_backend, redis_config, r, keys, publisher, state_dir
):
    """Frigate's stationary-object rule: the crops aim at what moves; the people standing
    still outside them keep their tracks (carried at their last box) and are re-checked
    by a full frame every idle_interval_s.  The events are the baseline's."""
    scene = PasserByScene("static", period_s=100, cross_s=8.0, phase=4.0)
    fps, seconds = 5, 14.0

    def run(name: str, **config) -> tuple[list[dict], list[dict]]:
        with camera(onnx_backend, redis_config, r, keys, publisher, state_dir, name, **config) as c:
            for i in range(int(seconds * fps)):
                c.feed(scene.render(i / fps), i / fps)
        recs = [d for d in read_stream(r, keys, STREAM_DETECTIONS) if d["camera_id"] == c.camera_id]
        evs = [e for e in read_stream(r, keys, STREAM_EVENTS) if e["camera_id"] == c.camera_id]
        return recs, evs

    tracker = {"min_hits": 3, "lost_after_s": 2.0}
    _, base_events = run("street-base", motion_aware=False, tracker=tracker)
    recs, evs = run("street", **AWARE, tracker=tracker)
    base_tracks = [("", a, b) for _, a, b in track_lives(base_events, seconds, T0)]
    tracks = [("", a, b) for _, a, b in track_lives(evs, seconds, T0)]
    assert match_tracks(base_tracks, tracks)[0] == 0, (base_tracks, tracks)
    assert match_tracks(tracks, base_tracks)[0] == 0, (base_tracks, tracks)
    crossing = [d for d in recs if 4.6 <= d["ts"] / 1000 - T0 <= 11.4]
    # Crops while the walker is away from the people standing still (near them, their
    # boxes move too and the crop would cover most of the frame: full frame then).
    regional = [d for d in crossing if d["regions"] > 0]
    assert len(regional) >= 5, [d["regions"] for d in crossing]
    full = [d["ts"] / 1000 - T0 for d in crossing if d["regions"] == 0]
    # Stationary tracks are re-checked on a full frame at least every idle_interval_s.
    assert all(b - a <= 3.0 + 0.2 + 1e-6 for a, b in zip(full, full[1:], strict=False)), full
    still = [e for e in evs if e["type"] == "object_entered" and e["ts"] / 1000 - T0 < 4.0]
    assert len(still) >= 3, "the people standing still were announced before the crossing"
    left = {e["track_id"] for e in evs if e["type"] == "object_left" and e["reason"] == "lost"}
    # A crop frame reports every standing person still tracked (seen or carried).
    for d in regional:
        ids = {o["track_id"] for o in d["objects"]}
        alive = {e["track_id"] for e in still} - left
        assert alive <= ids, (d["ts"] / 1000 - T0, d["objects"])


def test_an_agent_claiming_no_motion_is_caught_by_the_central_check_and_by_keyframes(
    onnx_backend, redis_config, r, keys, publisher, state_dir
):
    scene = PasserByScene("rocket")
    empty = scene.background
    person = empty.copy()
    paste(person, scene.sprite, 280, scene.y)  # someone appears and stands still
    for central, caught_within in ((True, 0.2), (False, 3.0)):
        name = f"lying-central-{central}"
        with camera(
            onnx_backend, redis_config, r, keys, publisher, state_dir, name,
            central_motion=central, **AWARE,
        ) as c:  # fmt: skip
            for i in range(10):
                c.feed(empty, i * 0.2, motion=0.0)
            # The first frame (all new to the central check, which then holds motion
            # for motion_hold_s); without the central check, a first keyframe.
            assert c.detected == ([0.0, 0.2, 0.4] if central else [0.0])
            appeared = 10 * 0.2
            i = 10
            while not c.feed(person, i * 0.2, motion=0.0):
                i += 1
                assert i * 0.2 - appeared <= caught_within + 1e-6, f"not caught (central={central})"
            assert i * 0.2 - appeared <= caught_within + 1e-6


def test_a_motion_header_outside_0_1_is_clamped_and_counted(
    onnx_backend, redis_config, r, keys, publisher, state_dir
):
    still = PasserByScene("rocket").background
    before = sample("sentri_detector_motion_header_clamped_total")
    with camera(
        onnx_backend, redis_config, r, keys, publisher, state_dir, "clamp",
        central_motion=False, **AWARE,
    ) as c:  # fmt: skip
        c.feed(still, 0.0)
        assert not c.feed(still, 0.2, motion=0.0)
        assert c.feed(still, 0.4, motion=7.5), "clamped to 1.0: motion"
        assert sample("sentri_detector_motion_header_clamped_total") == before + 1
        assert c.feed(still, 2.0, motion=-3.0) is False, "clamped to 0.0: no motion"
        assert sample("sentri_detector_motion_header_clamped_total") == before + 2


def test_worker_stats_show_static_skips_and_tracks_survive_in_real_time(
    onnx_backend, redis_config, r, keys, publisher, state_dir, small_bus_jpeg
):
    cam = register_cameras(r, keys, "tile", ["still"])[0]
    # lost_after_s below idle_interval_s (3 s), with room for a loaded box's pauses.
    with running_detector(
        onnx_backend, redis_config, publisher.endpoint, state_dir, **AWARE,
        tracker={"min_hits": 2, "lost_after_s": 2.5},
    ) as rt:  # fmt: skip
        wait_for(lambda: cam in rt.owned, 10, what="camera owned")
        with streaming(publisher, [cam], small_bus_jpeg, fps=5):

            def stats():
                raw = r.hget(keys.worker_stats("detector"), cam)
                st = json.loads(raw) if raw else {}
                return st if st.get("skipped_static", 0) >= 25 else None

            # 25 frames passed over at 5 fps: longer than idle_interval_s (3 s) and
            # lost_after_s (2.5 s), in real time with the silence sweep running.
            st = wait_for(stats, 60, what="skipped_static in worker_stats")
            evs = read_stream(r, keys, STREAM_EVENTS)
    assert st["processed"] < st["skipped_static"], st
    assert sum(e["type"] == "object_entered" for e in evs) >= 3
    assert [e for e in evs if e["type"] == "object_left"] == [], "tracks survived the gaps"
    assert rt.stats[cam].skipped_static >= 10
    assert sample("sentri_detector_frames_skipped_static_total", {"camera": cam}) >= 10


# ------------------------------------------------------------------ regions


def test_region_boxes_map_back_onto_a_real_photo_in_a_larger_canvas(onnx_backend, bus_image):
    photo = cv2.resize(bus_image, (480, 640), interpolation=cv2.INTER_AREA)
    alone = onnx_backend.infer([photo], conf=0.25, imgsz=640)[0]
    alone = alone[alone.confidence >= 0.5]
    assert len(alone) >= 3
    canvas = np.full((1080, 1920, 3), 114, np.uint8)  # the letterbox grey
    ox, oy = 1200, 400
    canvas[oy : oy + 640, ox : ox + 480] = photo
    motion = np.array([[ox + 60, oy + 100, ox + 420, oy + 560]], np.float32)
    regions = plan_regions(motion, 1920, 1080, min_side=320, max_area=0.45, max_regions=2)
    assert regions is not None and len(regions) == 1
    reg = regions[0]
    assert reg.x0 <= ox and reg.y0 <= oy and reg.x0 + reg.side >= ox + 480
    # Through the model: a 640 px crop at imgsz 640 with the photo on the model's
    # 32 px grid sees the photo as it was seen alone (plus grey around it, which moves
    # the boxes of this model by a few pixels), so the boxes must agree.
    aligned = Region(ox - 64, oy, 640)
    dets = onnx_backend.infer([aligned.crop(canvas)], conf=0.25, imgsz=640)[0]
    got = merge_detections([(aligned, dets)], 1920, 1080, 0.45)
    got = got[got.confidence >= 0.4]
    expected = alone.xyxy + np.array([ox, oy, ox, oy], np.float32)
    for box in expected:
        assert max(iou(box, g) for g in got.xyxy) >= 0.85, (expected.round(), got.xyxy.round())
    # The mapping itself is exact.
    crop_det = Detections(np.array([[10, 20, 110, 220]]), [0.9], [0])
    assert reg.unmap(crop_det).xyxy.tolist() == [
        [reg.x0 + 10, reg.y0 + 20, reg.x0 + 110, reg.y0 + 220]
    ]


def test_widespread_motion_or_tracks_across_the_frame_run_the_full_frame():
    kw = {"min_side": 320, "max_area": 0.45, "max_regions": 2}
    assert plan_regions(np.zeros((0, 4)), 640, 480, **kw) is None, "nothing to aim at"
    assert plan_regions(np.array([[0, 0, 640, 480]]), 640, 480, **kw) is None
    two_corners = np.array([[10, 10, 60, 100], [560, 360, 630, 470]], np.float32)
    assert plan_regions(two_corners, 640, 480, **kw) is None, "two crops > 45 % of the frame"
    big = {"min_side": 320, "max_area": 0.45, "max_regions": 2}
    found = plan_regions(two_corners * 3, 1920, 1440, **big)
    assert found is not None and len(found) == 2, "far apart in a big frame: two crops"
    near = np.array([[100, 100, 160, 200], [170, 120, 220, 210]], np.float32)
    one = plan_regions(near, 1920, 1080, **big)
    assert one is not None and len(one) == 1, "overlapping crops merge"
    assert plan_regions(near, 1920, 1080, min_side=320, max_area=0.45, max_regions=1)


def test_a_person_seen_in_two_overlapping_crops_is_reported_once():
    a, b = Region(0, 0, 400), Region(300, 0, 400)
    # The same person at x 320..380 in both crops (crop pixels), plus one cut by a's edge.
    in_a = Detections(np.array([[320, 50, 380, 250], [360, 300, 400, 380]]), [0.8, 0.6], [0, 0])
    in_b = Detections(np.array([[20, 52, 81, 251], [60, 300, 130, 380]]), [0.7, 0.7], [0, 0])
    merged = merge_detections([(a, in_a), (b, in_b)], 1000, 400, 0.45)
    assert len(merged) == 2
    boxes = sorted(merged.xyxy.tolist())
    assert boxes[0][0] == 320 and boxes[1] == [360, 300, 430, 380], "the uncut sighting wins"


# ------------------------------------------------------------------ config


@pytest.mark.parametrize(
    ("env", "field"),
    [
        ({"SENTRI_DETECTOR__IDLE_INTERVAL_S": "0"}, "detector.idle_interval_s"),
        ({"SENTRI_DETECTOR__REGION_IMGSZ": "300"}, "detector.region_imgsz"),
        ({"SENTRI_DETECTOR__MOTION_THRESHOLD": "2"}, "detector.motion_threshold"),
        ({"SENTRI_DETECTOR__BACKEND__PRECISION": "int4"}, "detector.backend.onnx.precision"),
        (
            {
                "SENTRI_DETECTOR__BACKEND__TYPE": "auto",
                "SENTRI_DETECTOR__BACKEND__CANDIDATES": "[tpu]",
            },
            "detector.backend.auto.candidates",
        ),
    ],
)
def test_scheduling_and_backend_config_is_validated_and_names_the_field(env, field):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        load_section(DetectorConfig, SECTION, env=env)


def test_scheduling_config_from_env():
    cfg = load_section(
        DetectorConfig,
        SECTION,
        env={
            "SENTRI_DETECTOR__IDLE_INTERVAL_S": "10",
            "SENTRI_DETECTOR__MOTION_AWARE": "false",
            "SENTRI_DETECTOR__BACKEND__TYPE": "openvino",
            "SENTRI_DETECTOR__BACKEND__PRECISION": "int8",
        },
    )
    assert cfg.idle_interval_s == 10 and not cfg.motion_aware
    assert cfg.backend.type == "openvino" and cfg.backend.precision == "int8"
    assert DetectorConfig().motion_aware and DetectorConfig().regions
