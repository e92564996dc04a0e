"""The rule engine on scripted tracks (injectable clock: ``t`` is passed in)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from shared.rules import (
    CameraRules,
    LineRule,
    RuleEngine,
    RulesConfig,
    RulesRuntime,
    RulesStore,
    TrackedObject,
    ZoneRule,
)

DOOR = LineRule(id="door", name="Door", points=[(0.0, 0.5), (1.0, 0.5)],
                a_label="street", b_label="shop")  # fmt: skip
DRIVE = ZoneRule(id="drive", name="Driveway",
                 points=[(0.2, 0.2), (0.6, 0.2), (0.6, 0.6), (0.2, 0.6)], loiter_s=30)  # fmt: skip


def person(tid: int, foot_x: float, foot_y: float, cls: str = "person", h: float = 0.2):
    """A box whose bottom-centre point is (foot_x, foot_y)."""
    return TrackedObject(tid, cls, (foot_x - 0.05, foot_y - h, foot_x + 0.05, foot_y))


def run(engine: RuleEngine, path, t0: float = 100.0, dt: float = 0.1, tid: int = 1, **kw):
    events = []
    t = t0
    for x, y in path:
        events += engine.update([person(tid, x, y, **kw)], t)[1]
        t += dt
    return events, t


def walk(y0: float, y1: float, steps: int = 20, x: float = 0.5):
    return [(x, y0 + (y1 - y0) * i / (steps - 1)) for i in range(steps)]


def crossings(events):
    return [e["direction"] for e in events if e["type"] == "line_crossed"]


def test_line_crossing_once_each_way():
    eng = RuleEngine("shop/cam0", CameraRules(lines=[DOOR]))
    ev, t = run(eng, walk(0.1, 0.9))
    assert crossings(ev) == ["a_to_b"]
    e = ev[0]
    assert e["line"] == "door" and e["from_side"] == "street" and e["to_side"] == "shop"
    assert e["camera_id"] == "shop/cam0" and e["client_id"] == "shop" and e["class"] == "person"
    assert len(e["event_id"]) == 32
    back, _ = run(eng, walk(0.9, 0.1), t0=t)
    assert crossings(back) == ["b_to_a"]


def test_jitter_on_the_line_counts_once():
    eng = RuleEngine("c/0", CameraRules(lines=[DOOR]))
    # Approach from A, wobble around the line (±1.5 %, inside the 2 % margin) for
    # 50 frames, then continue to B.
    path = walk(0.2, 0.49, 10)
    path += [(0.5, 0.5 + (0.015 if i % 2 else -0.015)) for i in range(50)]
    path += walk(0.51, 0.8, 10)
    ev, _ = run(eng, path)
    assert crossings(ev) == ["a_to_b"]


def test_wobble_after_crossing_does_not_count_back():
    eng = RuleEngine("c/0", CameraRules(lines=[DOOR]))
    path = walk(0.2, 0.6, 10) + [(0.5, 0.49 + 0.012 * (i % 3)) for i in range(40)]
    ev, _ = run(eng, path)
    assert crossings(ev) == ["a_to_b"]


def test_passing_beside_a_short_line_is_not_a_crossing():
    short = LineRule(id="gate", points=[(0.6, 0.5), (0.9, 0.5)])
    eng = RuleEngine("c/0", CameraRules(lines=[short]))
    ev, _ = run(eng, walk(0.1, 0.9, x=0.3))
    assert crossings(ev) == []
    ev, _ = run(eng, walk(0.1, 0.9, x=0.75), tid=2)
    assert crossings(ev) == ["a_to_b"]


def test_line_class_filter_and_min_area():
    line = LineRule(id="l", points=[(0.0, 0.5), (1.0, 0.5)], classes=["person"], min_area=0.01)
    eng = RuleEngine("c/0", CameraRules(lines=[line]))
    assert crossings(run(eng, walk(0.1, 0.9), cls="car")[0]) == []
    assert crossings(run(eng, walk(0.1, 0.9), tid=2, h=0.05)[0]) == []  # 0.1*0.05 < 0.01
    assert crossings(run(eng, walk(0.1, 0.9), tid=3)[0]) == ["a_to_b"]


def test_zone_enter_leave_with_dwell_and_loiter_at_the_right_time():
    eng = RuleEngine("c/0", CameraRules(zones=[DRIVE]))
    zones, ev = eng.update([person(1, 0.1, 0.4)], 0.0)
    assert ev == [] and zones == {1: []}
    zones, ev = eng.update([person(1, 0.4, 0.4)], 1.0)
    assert [e["type"] for e in ev] == ["zone_entered"] and zones == {1: ["drive"]}
    assert ev[0]["zone"] == "drive" and ev[0]["zone_name"] == "Driveway" and ev[0]["ts"] == 1000
    # Standing in the zone: nothing until loiter_s (30 s) has passed.
    for t in range(2, 31):
        assert eng.update([person(1, 0.4, 0.4)], float(t))[1] == []
    ev = eng.update([person(1, 0.4, 0.4)], 31.0)[1]
    assert [e["type"] for e in ev] == ["loitering"] and ev[0]["dwell_s"] == 30.0
    assert eng.update([person(1, 0.4, 0.4)], 40.0)[1] == []  # once per visit
    ev = eng.update([person(1, 0.8, 0.4)], 41.0)[1]
    assert [e["type"] for e in ev] == ["zone_left"]
    assert ev[0]["dwell_s"] == 40.0 and ev[0]["reason"] == "exited"


def test_zone_boundary_jitter_enters_once():
    eng = RuleEngine("c/0", CameraRules(zones=[DRIVE]))
    ev, _ = run(eng, [(0.6 + (0.004 if i % 2 else -0.004), 0.4) for i in range(40)])
    assert [e["type"] for e in ev] == ["zone_entered"]


def test_lost_track_leaves_its_zone_and_tick_fires_loitering_without_frames():
    eng = RuleEngine("c/0", CameraRules(zones=[DRIVE.model_copy(update={"loiter_s": 5})]),
                     forget_after_s=2.0)  # fmt: skip
    eng.update([person(1, 0.4, 0.4)], 10.0)
    # Unseen for 5 s > forget_after_s: lost, and no loitering for a track not seen.
    assert [e["type"] for e in eng.tick(15.0)] == ["zone_left"]
    eng2 = RuleEngine("c/0", CameraRules(zones=[DRIVE.model_copy(update={"loiter_s": 1})]))
    eng2.update([person(1, 0.4, 0.4)], 10.0)
    assert [e["type"] for e in eng2.tick(11.5)] == ["loitering"]
    left = eng2.tick(13.0)
    assert [e["type"] for e in left] == ["zone_left"] and left[0]["reason"] == "lost"
    assert left[0]["dwell_s"] == 0.0  # dwell ends at the last sighting


def test_tick_reports_lost_zone_left():
    eng = RuleEngine("c/0", CameraRules(zones=[DRIVE]), forget_after_s=2.0)
    eng.update([person(1, 0.4, 0.4)], 10.0)
    eng.update([person(1, 0.4, 0.4)], 11.0)
    ev = eng.tick(13.5)
    assert [e["type"] for e in ev] == ["zone_left"] and ev[0]["dwell_s"] == 1.0


def test_rules_swap_keeps_state_of_unchanged_zone():
    eng = RuleEngine("c/0", CameraRules(zones=[DRIVE]))
    eng.update([person(1, 0.4, 0.4)], 1.0)
    eng.set_rules(CameraRules(zones=[DRIVE], lines=[DOOR]))
    assert eng.update([person(1, 0.41, 0.4)], 2.0)[1] == []  # no second zone_entered


@pytest.mark.parametrize(
    ("zone", "field"),
    [
        ({"id": "z", "points": [[0.1, 0.1], [0.5, 0.5]]}, "points"),
        ({"id": "z", "points": [[0.1, 0.1], [0.9, 0.9], [0.9, 0.1], [0.1, 0.9]]}, "points"),
        ({"id": "z", "points": [[0.1, 0.1], [1.5, 0.1], [0.5, 0.5]]}, "points"),
        ({"id": "bad id!", "points": [[0.1, 0.1], [0.5, 0.1], [0.5, 0.5]]}, "id"),
    ],
)
def test_invalid_zone_names_the_field(zone, field):
    with pytest.raises(ValidationError) as ei:
        ZoneRule.model_validate(zone)
    assert ei.value.errors()[0]["loc"][0] == field


def test_self_intersection_message():
    with pytest.raises(ValidationError, match="self-intersecting"):
        ZoneRule(id="z", points=[(0.1, 0.1), (0.9, 0.9), (0.9, 0.1), (0.1, 0.9)])


def test_duplicate_ids_refused():
    with pytest.raises(ValidationError, match="duplicate"):
        CameraRules(lines=[DOOR, DOOR])


def test_runtime_tags_publishes_counts_and_reloads(r, keys):
    published = []
    clock = [0.0]
    rt = RulesRuntime(r, keys, published.append, RulesConfig(reload_s=1.0), clock=lambda: clock[0])
    store = RulesStore(r, keys)
    store.put("c/0", CameraRules(zones=[DRIVE]))

    def record(ts_ms, y):
        return {"type": "detection", "camera_id": "c/0", "ts": ts_ms,
                "objects": [{"class": "person", "track_id": 7, "box": [0.35, y - 0.2, 0.45, y]},
                            {"class": "person", "track_id": None, "box": [0, 0, 0.1, 0.1]}]}  # fmt: skip

    rec = record(1_000, 0.4)
    rt.apply(rec)
    assert rec["objects"][0]["zones"] == ["drive"] and "zones" not in rec["objects"][1]
    assert [e["type"] for e in published] == ["zone_entered"]
    # A line added through the store applies once the reload interval has passed.
    store.put("c/0", CameraRules(zones=[DRIVE], lines=[DOOR]))
    rt.apply(record(1_100, 0.45))
    clock[0] = 1.5
    for i, y in enumerate((0.45, 0.55, 0.65, 0.75)):
        rt.apply(record(1_200 + 100 * i, y))
    assert [e["type"] for e in published][1:] == ["line_crossed", "zone_left"]
    assert store.totals("c/0") == {"door": {"a_to_b": 1, "b_to_a": 0}}
    assert store.counts("c/0", 0, 10_000) == {"door": {"a_to_b": 1, "b_to_a": 0}}
    assert store.counts("c/0", 60_000, 120_000) == {}


def test_runtime_keeps_events_redis_refused(r, keys):
    import redis as redis_mod

    out, fail = [], [True]

    def publish(rec):
        if fail[0]:
            raise redis_mod.ConnectionError("down")
        out.append(rec)

    rt = RulesRuntime(r, keys, publish)
    RulesStore(r, keys).put("c/0", CameraRules(zones=[DRIVE]))
    rec = {"camera_id": "c/0", "ts": 0, "objects": [{"class": "person", "track_id": 1,
                                                      "box": [0.35, 0.2, 0.45, 0.4]}]}  # fmt: skip
    rt.apply(rec)
    assert out == []
    fail[0] = False
    rt.apply({**rec, "ts": 100})
    assert [e["type"] for e in out] == ["zone_entered"]


def test_seed_from_yaml_does_not_overwrite_dashboard_edits(r, keys):
    store = RulesStore(r, keys)
    store.put("a/0", CameraRules(lines=[DOOR]))
    cfg = RulesConfig(
        cameras={"a/0": CameraRules(zones=[DRIVE]), "b/0": CameraRules(zones=[DRIVE])}
    )
    assert store.seed(cfg) == 1
    assert store.get("a/0").lines and not store.get("a/0").zones
    assert store.get("b/0").zones
    assert store.seed(RulesConfig(cameras=cfg.cameras, replace_on_start=True)) == 2
    assert store.get("a/0").zones


def test_runtime_tick_fires_loitering_between_frames_but_never_forgets(r, keys):
    """Frames processed seconds apart (overload, motion gating): loitering comes on
    time by the local clock (not the agent's); only a processed frame without the
    track declares it lost."""
    out, clock = [], [500.0]
    rt = RulesRuntime(r, keys, out.append, RulesConfig(forget_after_s=2.0), clock=lambda: clock[0])
    RulesStore(r, keys).put("c/0", CameraRules(zones=[DRIVE.model_copy(update={"loiter_s": 1})]))
    seen = {"class": "person", "track_id": 1, "box": [0.35, 0.2, 0.45, 0.4]}
    rt.apply({"camera_id": "c/0", "ts": 5_000, "objects": [seen]})  # agent clock: 5 s
    assert [e["type"] for e in out] == ["zone_entered"]
    clock[0] += 1.5
    rt.tick()
    assert [e["type"] for e in out] == ["zone_entered", "loitering"]
    clock[0] += 10.0  # no frame for 10 s: still in the zone
    rt.tick()
    assert [e["type"] for e in out] == ["zone_entered", "loitering"]
    rt.apply({"camera_id": "c/0", "ts": 16_000, "objects": [seen]})  # still there
    assert [e["type"] for e in out] == ["zone_entered", "loitering"]
    rt.apply({"camera_id": "c/0", "ts": 19_000, "objects": []})  # a frame without it
    assert out[-1]["type"] == "zone_left" and out[-1]["reason"] == "lost"
    assert out[-1]["dwell_s"] == 11.0  # 5 s .. 16 s, its last sighting


_pts = st.lists(st.tuples(st.floats(0.05, 0.95), st.floats(0.05, 0.95)), min_size=1, max_size=60)


@settings(max_examples=200)
@given(path=_pts)
def test_crossings_of_one_track_alternate_and_match_the_confirmed_sides(path):
    """Whatever the path: directions alternate (A>B, B>A, ...), and the first and last
    crossing agree with where the track was first and last confirmed."""
    line = LineRule(id="l", points=[(0.0, 0.5), (1.0, 0.5)], margin=0.02)
    eng = RuleEngine("c/0", CameraRules(lines=[line]))
    ev, _ = run(eng, path)
    dirs = crossings(ev)
    assert all(a != b for a, b in zip(dirs, dirs[1:], strict=False))
    sides = ["A" if y < 0.48 else "B" for _, y in path if abs(y - 0.5) > 0.02]
    if dirs:
        assert dirs[0].startswith(sides[0].lower()) and dirs[-1].endswith(sides[-1].lower())
    else:
        assert len(set(sides)) <= 1


@settings(max_examples=100)
@given(ys=st.lists(st.floats(0.485, 0.515), min_size=2, max_size=80))
def test_wobbling_inside_the_margin_never_counts(ys):
    eng = RuleEngine("c/0", CameraRules(lines=[DOOR]))
    ev, _ = run(eng, [(0.2, 0.3)] + [(0.5, y) for y in ys])
    assert crossings(ev) == []
