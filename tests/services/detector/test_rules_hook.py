"""Rules inside the real detector: people from a real photo walk across a line into a zone.

The bus photo slides right across a wider canvas, frame by frame, through the real
fan-out, model, ByteTrack tracker and rules hook.  Rules are written to Redis while
the detector runs (applied without a restart).
"""

from __future__ import annotations

from collections import Counter

import cv2
import numpy as np
import pytest

from shared.keys import STREAM_DETECTIONS, STREAM_EVENTS
from shared.rules import CameraRules, LineRule, RulesStore, ZoneRule
from tests.helpers import encode_jpeg, wait_for
from tests.services.detector.conftest import read_stream, register_cameras, running_detector

W, H = 960, 640

pytestmark = pytest.mark.slow  # ~30 model calls; the logic is covered fast in tests/shared


def canvas(bus_small: np.ndarray, shift: int) -> np.ndarray:
    img = np.full((H, W, 3), 90, np.uint8)
    img[:, shift : shift + bus_small.shape[1]] = bus_small
    return img


def test_people_crossing_a_line_and_entering_a_zone(
    onnx_backend, redis_config, keys, r, publisher, state_dir, bus_image
):
    bus_small = cv2.resize(bus_image, (480, 640), interpolation=cv2.INTER_AREA)
    cam = register_cameras(r, keys, "shop", ["door"])[0]
    store = RulesStore(r, keys)
    # One frame at a time, each waiting for its result: a pause of the box between two
    # must not close the tracks (lost_after_s is a wall-clock sweep).
    with running_detector(
        onnx_backend, redis_config, publisher.endpoint, state_dir,
        tracker={"min_hits": 2, "lost_after_s": 10.0},
    ) as rt:  # fmt: skip
        wait_for(lambda: cam in rt.owned, 10, what="camera owned")

        def send(shift: int) -> list[dict]:
            """Publish one frame and wait for its result (re-sent if the SUB missed it)."""
            jpeg = encode_jpeg(canvas(bus_small, shift))
            for _ in range(15):
                seq = publisher.publish(cam, jpeg=jpeg)
                try:
                    got = wait_for(
                        lambda seq=seq: [d for d in read_stream(r, keys, STREAM_DETECTIONS)
                                 if d["seq"] == seq], 2, what=f"frame {seq}",
                    )  # fmt: skip
                    return got[0]["objects"]
                except AssertionError:
                    continue
            raise AssertionError("frames are not processed")

        send(0)
        store.put(cam, CameraRules(
            lines=[LineRule(id="door", name="Door", points=[(0.5, 0.0), (0.5, 1.0)])],
            zones=[ZoneRule(id="right", points=[(0.5, 0.4), (1.0, 0.4), (1.0, 1.0), (0.5, 1.0)])],
        ))  # fmt: skip
        # Applied without a restart: tracked objects get a "zones" list once reloaded.
        wait_for(lambda: any("zones" in o for o in send(0)), 30, what="rules reloaded")
        for shift in range(0, 421, 16):
            last = send(shift)
        events = [e for e in read_stream(r, keys, STREAM_EVENTS) if e["camera_id"] == cam]
    crossed = [e for e in events if e["type"] == "line_crossed"]
    entered = [e for e in events if e["type"] == "zone_entered"]
    # Walking right across a top-to-bottom line is B -> A (A is the walker's left).
    assert len(crossed) >= 2 and {e["direction"] for e in crossed} == {"b_to_a"}
    per_track = Counter(e["track_id"] for e in crossed)
    assert set(per_track.values()) == {1}, f"each person counted once: {per_track}"
    assert {e["track_id"] for e in crossed} <= {e["track_id"] for e in entered}
    assert all(e["zone"] == "right" and e["class"] == "person" for e in entered)
    in_zone = [o for o in last if o.get("track_id") is not None and "right" in o.get("zones", [])]
    assert in_zone, "objects in the zone are tagged with it"
    assert store.totals(cam) == {"door": {"a_to_b": 0, "b_to_a": len(crossed)}}
