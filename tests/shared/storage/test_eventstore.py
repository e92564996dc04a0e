"""Event store behaviour, identical on SQLite and on a real PostgreSQL."""

from __future__ import annotations

import random

from sqlalchemy import text

from shared.eventstore import EventQuery, EventStore


def _track(cam, track, first, *, entered_ts, left_ts=None, conf=0.5, sid=None, n=0):
    base = {"camera_id": cam, "class": "person", "class_id": 0, "track_id": track,
            "first_seen": first, "box": [0.1, 0.2, 0.3, 0.4]}  # fmt: skip
    out = [
        {**base, "type": "object_entered", "event_id": f"in-{cam}-{track}-{first}",
         "ts": entered_ts, "confidence": conf, "snapshot_id": sid, "id": f"{entered_ts}-{n}"}
    ]  # fmt: skip
    if left_ts is not None:
        out.append(
            {**base, "type": "object_left", "event_id": f"out-{cam}-{track}-{first}",
             "ts": left_ts, "last_seen": left_ts - 100, "confidence": conf + 0.2,
             "snapshot_id": f"{sid}-best" if sid else None, "reason": "lost",
             "id": f"{left_ts}-{n}"}
        )  # fmt: skip
    return out


def test_schema_matches_models_and_wal(store: EventStore):
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from shared.eventstore.models import Base

    with store.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
        if store.is_sqlite:
            assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
    assert diff == []
    store.migrate()  # idempotent


def test_entered_and_left_are_one_row_in_any_order_and_redelivery_is_harmless(store):
    evs = _track("lab/cam1", 7, 1000, entered_ts=1200, left_ts=5000, sid="s1")
    assert store.apply_events([evs[1]]) == 1  # left first (redelivered out of order)
    assert store.apply_events(evs) == 1  # entered new, left already known
    assert store.apply_events(evs) == 0  # full redelivery: nothing new
    page, cursor = store.list_events(EventQuery())
    assert cursor is None and len(page) == 2
    objs = {e["object"]["object_id"] for e in page}
    assert len(objs) == 1
    obj = page[0]["object"]
    assert obj["start"] == 1000 and obj["end"] == 4900  # last sighting and obj["running"] is False
    assert obj["confidence"] == 0.7 and obj["snapshot_id"] == "s1-best"
    assert obj["label"] == "person" and obj["track_id"] == 7
    assert store.get_event("in-lab/cam1-7-1000")["object"]["object_id"] in objs
    assert store.get_event("out-lab/cam1-7-1000")["type"] == "object_left"
    assert store.get_event("nope") is None
    with store.engine.connect() as conn:
        assert conn.execute(text("select count(*) from tracked_objects")).scalar() == 1
        assert conn.execute(text("select count(*) from events")).scalar() == 2


def test_running_track_then_faces_and_summary_attach(store):
    store.apply_events(_track("c", 1, 1000, entered_ts=1100, sid="x"))
    store.apply_events([
        {"type": "face_recognized", "event_id": "f1", "camera_id": "c", "ts": 1500,
         "name": "alice", "snapshot_id": "face-f1", "id": "1501-0"},
        {"type": "analysis", "event_id": "a1", "camera_id": "c", "ts": 1600,
         "summary": "A person at the door.", "id": "1601-0"},
    ])  # fmt: skip
    ev = store.get_event("in-c-1-1000")
    assert ev["object"]["running"] is True and ev["object"]["end"] is None
    assert ev["object"]["faces"] == ["alice"]
    assert ev["object"]["summary"] == "A person at the door."
    # label matches a class or a recognised name.
    by_name, _ = store.list_events(EventQuery(label="alice"))
    assert {e["event_id"] for e in by_name} == {"in-c-1-1000", "f1"}
    by_class, _ = store.list_events(EventQuery(label="person"))
    assert [e["event_id"] for e in by_class] == ["in-c-1-1000"]


def test_filters_and_cursor_pagination(store):
    rng = random.Random(3)
    batch = []
    for i in range(60):
        cam = ["a/1", "b/2", "c/3"][i % 3]
        batch += _track(cam, i, 10_000 + i * 100, entered_ts=10_000 + i * 100 + 50,
                        left_ts=10_000 + i * 100 + 90, n=i)  # fmt: skip
    rng.shuffle(batch)
    for k in range(0, len(batch), 17):
        store.apply_events(batch[k : k + 17])
    seen, cursor = [], None
    while True:
        page, cursor = store.list_events(EventQuery(limit=7, cursor=cursor and tuple(
            int(x) for x in cursor.split("-"))))  # fmt: skip
        seen += page
        if cursor is None:
            break
    assert len(seen) == 120 and len({e["event_id"] for e in seen}) == 120
    keys = [tuple(int(x) for x in e["id"].split("-")) for e in seen]
    assert keys == sorted(keys, reverse=True)
    entered, _ = store.list_events(EventQuery(type="object_entered", limit=500))
    assert len(entered) == 60 and {e["type"] for e in entered} == {"object_entered"}
    cam, _ = store.list_events(EventQuery(camera_id="b/2", limit=500))
    assert len(cam) == 40 and {e["camera_id"] for e in cam} == {"b/2"}
    win, _ = store.list_events(EventQuery(since=10_000 + 1050, until=10_000 + 1290, limit=500))
    assert sorted(e["ts"] for e in win) == [11_050, 11_090, 11_150, 11_190, 11_250, 11_290]
    scoped, _ = store.list_events(EventQuery(cameras=frozenset({"a/1"}), limit=500))
    assert {e["camera_id"] for e in scoped} == {"a/1"}


def test_has_clip_from_segments(store):
    store.apply_events(_track("c", 1, 10_000, entered_ts=10_100, left_ts=20_000))
    store.apply_events(_track("c", 2, 100_000, entered_ts=100_100, left_ts=110_000))
    store.add_segment("c", 18_000, 28_000, "recordings/c/x.mp4", 1000, 150, "events", True)
    store.add_segment("c", 18_000, 28_000, "recordings/c/x.mp4", 1000, 150, "events", True)
    with_clip, _ = store.list_events(EventQuery(has_clip=True, type="object_entered"))
    assert [e["object"]["track_id"] for e in with_clip] == [1]
    without, _ = store.list_events(EventQuery(has_clip=False, type="object_entered"))
    assert [e["object"]["track_id"] for e in without] == [2]
    assert len(store.segments("c", 0, 10**13)) == 1
    store.add_gap("c", 28_000, 40_000, "handover")
    assert store.gaps("c", 0, 10**13) == [{"start": 28_000, "end": 40_000, "reason": "handover"}]
    assert store.storage_by_camera()["c"]["bytes"] == 1000


def test_malformed_records_are_stored_not_fatal(store):
    n = store.apply_events([
        {"id": "5-0"},
        {"type": 5, "camera_id": ["x"], "ts": "soon", "event_id": {"a": 1}, "id": "6-0"},
        {"type": "object_left", "camera_id": "c", "track_id": "x", "first_seen": None,
         "confidence": "high", "snapshot_id": "../../etc", "id": "7-0", "event_id": "z" * 500},
    ])  # fmt: skip
    assert n == 3
    page, _ = store.list_events(EventQuery())
    assert len(page) == 3


def test_nul_and_unstorable_values_never_block_the_batch(store):
    n = store.apply_events([
        {"type": "object_entered", "event_id": "ok1", "camera_id": "c\x00am", "ts": 5,
         "class": "per\x00son", "attributes": {"k\x00": "v\x00"}, "id": "8-0"},
        {"type": "object_entered", "event_id": "big", "camera_id": "c", "ts": 10**30,
         "track_id": 10**30, "first_seen": 10**30, "id": "9-0"},
        {"type": "object_entered", "event_id": "ok2", "camera_id": "c", "ts": 7, "id": "10-0"},
    ])  # fmt: skip
    assert n >= 2
    assert store.get_event("ok1")["camera_id"] == "cam"
    assert store.get_event("ok2") is not None


def test_cameras_and_snapshot_owner(store):
    store.apply_events(_track("a/1", 1, 1000, entered_ts=1100, sid="snapA"))
    store.apply_events(_track("b/2", 2, 1000, entered_ts=1200, sid="snapB", n=1))
    assert store.event_camera_ids() == ["a/1", "b/2"]
    assert store.camera_of_snapshot("snapB") == "b/2"
    assert store.camera_of_snapshot("nope") is None
