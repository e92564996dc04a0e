"""The archiver with real Redis and a real database (SQLite and PostgreSQL)."""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from pathlib import Path

import pytest

from services.archiver.archiver import Archiver
from services.archiver.config import ArchiverConfig
from shared.eventstore import EventQuery, EventStore
from shared.redisutil import connect, publish_record
from shared.storage import FsMediaStore, snapshot_key
from tests.helpers import wait_for
from tests.storage_servers import start_postgres


def _events(n: int, cam: str = "lab/cam", start: int = 0) -> list[dict]:
    out = []
    for i in range(start, start + n):
        base = {"camera_id": cam, "class": "person", "track_id": i, "first_seen": 1000 + i,
                "confidence": 0.5}  # fmt: skip
        out.append({**base, "type": "object_entered", "event_id": f"in{i}", "ts": 1100 + i})
        out.append({**base, "type": "object_left", "event_id": f"out{i}", "ts": 9000 + i})
    return out


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'events.db'}"
    return request.getfixturevalue("pg_url")


def _archiver(redis_url, keys, db_url, media=None, consumer="a1", **cfg) -> Archiver:
    cfg.setdefault("block_ms", 50)
    return Archiver(connect(redis_url), connect(redis_url, decode=False), keys,
                    lambda: EventStore(db_url), ArchiverConfig(consumer=consumer, **cfg), media)  # fmt: skip


def test_every_event_once_one_row_per_track(redis_url, r, keys, db_url):
    for ev in _events(30):
        publish_record(r, keys, "events", ev, maxlen=10_000)
    arch = _archiver(redis_url, keys, db_url, batch=7)
    wait_for(lambda: arch.step() == 0 and arch.stored == 60, timeout=30, what="archived")
    store = EventStore(db_url)
    assert store.count_events() == 60
    page, _ = store.list_events(EventQuery(type="object_entered", limit=500))
    assert len(page) == 30 and len({e["object"]["object_id"] for e in page}) == 30
    assert all(e["object"]["end"] == 9000 + e["object"]["track_id"] for e in page)
    assert arch.consumer.pending_count() == 0


def test_crash_before_ack_redelivers_without_duplicates(redis_url, r, keys, db_url):
    for ev in _events(10):
        publish_record(r, keys, "events", ev, maxlen=10_000)
    first = _archiver(redis_url, keys, db_url, batch=5)
    first._ensure()
    # Stored but "killed" before the ack: simulate by storing without acking.
    batch = first.consumer.read(5, 50)
    first.store.apply_events(batch)
    assert first.consumer.pending_count() == 5
    # Restart with the same consumer name: its pending entries come back first.
    second = _archiver(redis_url, keys, db_url, batch=5)
    wait_for(lambda: second.step() == 0 and second.consumer.pending_count() == 0
             and EventStore(db_url).count_events() == 20, timeout=30)  # fmt: skip
    assert second.stored == 15  # the 5 redelivered were already there


def test_dead_consumer_entries_are_claimed(redis_url, r, keys, tmp_path):
    db_url = f"sqlite:///{tmp_path / 'e.db'}"
    for ev in _events(3):
        publish_record(r, keys, "events", ev, maxlen=10_000)
    dead = _archiver(redis_url, keys, db_url, consumer="dead")
    dead._ensure()
    assert len(dead.consumer.read(100, 50)) == 6  # never acknowledged: it "died"
    other = _archiver(redis_url, keys, db_url, consumer="other", claim_idle_s=1)
    wait_for(lambda: (other.step(), other.stored)[1] == 6, timeout=20, what="claimed")


def test_snapshots_move_from_redis_to_media(redis_url, r, keys, tmp_path):
    media = FsMediaStore(tmp_path / "media")
    rb = connect(redis_url, decode=False)
    rb.set(keys.snapshot("snap-1"), b"\xff\xd8jpeg", ex=60)
    publish_record(r, keys, "events", {"type": "object_entered", "event_id": "e1",
                   "camera_id": "../../etc", "snapshot_id": "snap-1", "ts": 5}, maxlen=100)  # fmt: skip
    arch = _archiver(redis_url, keys, f"sqlite:///{tmp_path / 'e.db'}", media)
    wait_for(lambda: (arch.step(), arch.stored)[1] == 1, timeout=20)
    assert media.get(snapshot_key("snap-1")) == b"\xff\xd8jpeg"
    assert all(media.root in p.parents for p in media.root.rglob("*"))


def test_database_outage_holds_then_catches_up(redis_url, r, keys):
    base = Path(tempfile.mkdtemp(prefix="sentri-pg-outage-"))
    os.chmod(base, 0o755)
    pg = start_postgres(base / "pg")
    try:
        db_url = pg.url(pg.create_db())
        arch = _archiver(redis_url, keys, db_url, batch=10, retry_max_s=0.5)
        t = threading.Thread(target=arch.run, daemon=True)
        t.start()
        for ev in _events(5):
            publish_record(r, keys, "events", ev, maxlen=10_000)
        wait_for(lambda: arch.stored == 10, timeout=30, what="first batch")
        pg.stop()
        # Producers are never blocked: publishing goes on while the database is down.
        for ev in _events(20, start=100):
            publish_record(r, keys, "events", ev, maxlen=10_000)
        wait_for(lambda: arch._failures > 0, timeout=30, what="outage noticed")
        pg.start()
        wait_for(lambda: arch.stored == 50, timeout=60, what="caught up")
        arch.stop()
        t.join(10)
        assert EventStore(db_url).count_events() == 50
    finally:
        pg.stop()
        shutil.rmtree(base, ignore_errors=True)


def test_config_rejects_unknown_fields():
    with pytest.raises(ValueError):
        ArchiverConfig(nope=1)
    assert ArchiverConfig().consumer.startswith("archiver-")
