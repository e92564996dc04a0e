"""Motion measure and motion gate."""

from __future__ import annotations

import numpy as np

from edge_agent.demo import DemoScene
from edge_agent.motion import MotionGate, MotionMeter


def test_still_scene_measures_zero_after_first_frame():
    frame = DemoScene("static").render(0.0)
    meter = MotionMeter()
    assert meter.measure(frame, 0.0) == 1.0
    assert [meter.measure(frame.copy(), t) for t in (0.1, 0.2, 0.3)] == [0.0, 0.0, 0.0]


def test_sensor_noise_is_not_motion():
    rng = np.random.default_rng(1)
    frame = DemoScene("static").render(0.0).astype(np.int16)
    meter = MotionMeter()
    meter.measure(frame.astype(np.uint8), 0.0)
    for i in range(1, 6):
        noisy = np.clip(frame + rng.normal(0, 4, frame.shape), 0, 255).astype(np.uint8)
        assert meter.measure(noisy, i * 0.1) < 0.001


def test_an_object_entering_is_motion():
    frame = DemoScene("static").render(0.0)
    meter = MotionMeter()
    meter.measure(frame, 0.0)
    meter.measure(frame, 0.1)
    moved = frame.copy()
    moved[200:280, 300:360] = (20, 200, 240)  # a 80x60 object appears: ~1.6 % of the frame
    assert 0.01 < meter.measure(moved, 0.2) < 0.03


def test_gate_sends_keyframes_when_still_and_everything_while_moving():
    gate = MotionGate(threshold=0.01, keyframe_interval_s=1.0, hold_s=0.5)
    sent = []
    for i in range(50):  # 5 s at 10 fps, still
        t = i / 10
        if gate.should_send(0.0, t):
            gate.sent(t)
            sent.append(t)
    assert sent == [0.0, 1.0, 2.0, 3.0, 4.0]
    moving = [gate.should_send(0.2, 5.0 + i / 10) for i in range(10)]
    assert all(moving)
    # Motion stops: the gate stays open for hold_s, then closes.
    assert gate.should_send(0.0, 6.3)
    gate.sent(6.3)
    assert not gate.should_send(0.0, 6.5)
