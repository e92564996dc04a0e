"""The mixed-site bench's event matcher: which baseline events the new pipeline missed."""

from __future__ import annotations

from bench.detector_mixed import T0, missed, missed_spatial, sightings, track_lives


def box(x: float, w: float = 0.1) -> list[float]:
    return [x, 0.3, x + w, 0.9]


def records(frames: list[tuple[float, dict[int, list[float]]]], cam: str = "site/c") -> list[dict]:
    return [
        {
            "camera_id": cam,
            "ts": (T0 + t) * 1000,
            "objects": [{"track_id": tid, "box": b} for tid, b in objs.items()],
        }
        for t, objs in frames
    ]


def entered(cam: str, tid: int, t: float) -> dict:
    return {"type": "object_entered", "camera_id": cam, "track_id": tid, "ts": (T0 + t) * 1000}


def left(cam: str, tid: int, t: float) -> dict:
    return {
        "type": "object_left",
        "camera_id": cam,
        "track_id": tid,
        "ts": (T0 + t) * 1000,
        "reason": "lost",
    }


def walker(t: float) -> list[float]:
    return box(0.02 * t)


def test_a_baseline_id_switch_against_one_continuous_new_track_is_not_a_miss():
    ts = [i * 0.2 for i in range(40)]
    # Baseline: the walker is track 1 until 4 s, then track 2 (an ID switch).
    base_recs = records([(t, {1 if t < 4 else 2: walker(t)}) for t in ts])
    base_ev = [entered("site/c", 1, 0.4), left("site/c", 1, 6.0), entered("site/c", 2, 4.4)]
    new_recs = records([(t, {7: walker(t)}) for t in ts])
    new_ev = [entered("site/c", 7, 0.4)]
    base_s, new_s = sightings(base_recs, base_ev), sightings(new_recs, new_ev)
    assert missed_spatial(base_s, new_s) == []
    assert missed_spatial(new_s, base_s) == []
    # The old one-to-one time-overlap rule counted the switch as a miss.
    lives = track_lives(base_ev, 8.0), track_lives(new_ev, 8.0)
    assert missed(*lives)[0] == 1


def test_a_passer_by_the_new_pipeline_did_not_announce_is_a_miss_even_beside_a_tracked_person():
    ts = [i * 0.2 for i in range(40)]
    still = box(0.4)
    # The passer-by walks past a person standing still (overlapping him for a moment).
    base_recs = records([(t, {1: still, 2: box(0.1 * t - 0.1)}) for t in ts])
    base_ev = [entered("site/c", 1, 0.4), entered("site/c", 2, 0.4)]
    new_recs = records([(t, {5: still, 6: box(0.1 * t - 0.1)}) for t in ts])
    new_ev = [entered("site/c", 5, 0.4)]  # track 6 never announced
    got = missed_spatial(sightings(base_recs, base_ev), sightings(new_recs, new_ev))
    assert got == [("c", 2, 0.0)]


def test_frames_the_new_pipeline_passed_over_keep_its_last_state():
    ts = [i * 0.2 for i in range(50)]
    still = box(0.4)
    base_recs = records([(t, {1: still}) for t in ts])
    # Motion-aware: the new pipeline ran at 0, 0.2, 0.4 and one keyframe every 5 s.
    new_recs = records([(t, {3: still}) for t in ts if t < 0.5 or round(t * 5) % 25 == 0])
    base_s = sightings(base_recs, [entered("site/c", 1, 0.4)])
    new_s = sightings(new_recs, [entered("site/c", 3, 0.4)])
    assert missed_spatial(base_s, new_s) == []
    # Another camera's tracks never count.
    other = sightings(records([(t, {3: still}) for t in ts], "site/d"), [entered("site/d", 3, 0)])
    assert missed_spatial(base_s, other) == [("c", 1, 0.0)]
