"""Retention on a real media store and event store: size cap, age per camera."""

from __future__ import annotations

import os

from shared.eventstore import EventStore
from shared.storage import FsMediaStore, StorageConfig, segment_key, snapshot_key
from shared.storage.retention import DELETED, Retention

HOUR = 3_600_000
T0 = 1_767_225_600_000
SEG = 60_000  # bytes per fake 10 s segment


def _fill(media, store, cam, start, n, *, event_every=0):
    for i in range(n):
        s = start + i * 10_000
        key = segment_key(cam, s, s + 10_000)
        media.put(key, os.urandom(SEG))
        ev = bool(event_every) and i % event_every == 0
        store.add_segment(cam, s, s + 10_000, key, SEG, 150, "continuous", ev)


def test_size_cap_oldest_continuous_first_events_and_snapshots_survive(tmp_path):
    media = FsMediaStore(tmp_path / "media")
    store = EventStore(f"sqlite:///{tmp_path / 'e.db'}")
    cap = 20 * 1024 * 1024
    cfg = StorageConfig(max_bytes=cap, min_free_percent=0, recordings_retain_days=0,
                        events_retain_days=0)  # fmt: skip
    ret = Retention(store, media, cfg)
    snaps = []
    for i in range(40):  # event snapshots spread over the hours
        sid = f"snap{i}"
        media.put(snapshot_key(sid), os.urandom(20_000))
        store.apply_events([{"type": "object_entered", "event_id": f"e{i}", "camera_id": "yard/cam",
                             "ts": T0 + i * 180_000, "snapshot_id": sid, "id": f"{T0 + i}-0"}])  # fmt: skip
        snaps.append(sid)
    before = DELETED.labels("segment", "size")._value.get()
    # Two hours of footage, 60 segments at a time, retention after each batch.
    for batch in range(12):
        _fill(media, store, "yard/cam", T0 + batch * 600_000, 60, event_every=10)
        ret.run_once(now_ms=T0 + (batch + 1) * 600_000)
        assert ret.usage() <= cap
        assert media.usage() <= cap
    segs = store.segments("yard/cam", 0, 10**14)
    continuous = [s for s in segs if not s["event"]]
    events = [s for s in segs if s["event"]]
    # The oldest continuous footage went first: what is left is one newest stretch.
    assert continuous and continuous[-1]["end"] == T0 + 12 * 600_000
    all_cont_starts = [T0 + i * 10_000 for i in range(720) if i % 10]
    assert [s["start"] for s in continuous] == all_cont_starts[-len(continuous) :]
    # Event footage outlives it: every event segment is still there.
    assert len(events) == 72
    # Snapshots are never deleted for size.
    assert all(media.size(snapshot_key(s)) for s in snaps)
    assert DELETED.labels("segment", "size")._value.get() - before == 648 - len(continuous)
    # Index and media agree: nothing deleted from one only.
    assert sorted(o.key for o in media.list("recordings/")) == sorted(s["key"] for s in segs)


def test_age_per_camera_recordings_and_events_separately(tmp_path):
    media = FsMediaStore(tmp_path / "media")
    store = EventStore(f"sqlite:///{tmp_path / 'e.db'}")
    now = T0 + 10 * 24 * HOUR
    cfg = StorageConfig(
        recordings_retain_days=7, events_retain_days=30, min_free_percent=0,
        cameras={"short/cam": {"recordings_retain_days": 1, "events_retain_days": 2}},
    )  # fmt: skip
    for cam in ("long/cam", "short/cam"):
        for day in range(10):
            _fill(media, store, cam, T0 + day * 24 * HOUR, 2)
            sid = f"{cam[:4]}-{day}"
            media.put(snapshot_key(sid), b"jpeg")
            store.apply_events([{"type": "face_recognized", "event_id": f"{sid}-ev", "camera_id": cam,
                                 "ts": T0 + day * 24 * HOUR, "name": "x", "snapshot_id": sid,
                                 "id": f"{T0 + day}-{len(cam)}"}])  # fmt: skip
    stats = Retention(store, media, cfg).run_once(now_ms=now)
    long_days = {(s["start"] - T0) // (24 * HOUR) for s in store.segments("long/cam", 0, 10**14)}
    short_days = {(s["start"] - T0) // (24 * HOUR) for s in store.segments("short/cam", 0, 10**14)}
    assert long_days == {3, 4, 5, 6, 7, 8, 9} and short_days == {9}
    assert store.get_event("shor-7-ev") is None and store.get_event("shor-8-ev") is not None
    assert media.size(snapshot_key("shor-7")) is None
    assert media.size(snapshot_key("shor-8")) == 4
    assert store.get_event("long-0-ev") is not None  # 30 days for events
    assert stats["snapshots"] == 8 and stats["events"] == 8


def test_min_free_percent_on_a_small_filesystem(tmp_path):
    import subprocess

    import pytest

    mnt = tmp_path / "small"
    mnt.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)],
                         capture_output=True)  # fmt: skip
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {res.stderr.decode().strip()}")
    try:
        media = FsMediaStore(mnt / "media")
        store = EventStore(f"sqlite:///{tmp_path / 'e.db'}")
        _fill(media, store, "cam/x", T0, 50)  # ~3 MB of a 4 MB filesystem
        cfg = StorageConfig(min_free_percent=50, recordings_retain_days=0)
        Retention(store, media, cfg).run_once(now_ms=T0 + HOUR)
        free, total = media.free_space()
        assert free >= total * 0.5
        left = store.segments("cam/x", 0, 10**14)
        assert left and left[-1]["start"] == T0 + 49 * 10_000  # the newest kept
        assert len(left) < 50
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)
