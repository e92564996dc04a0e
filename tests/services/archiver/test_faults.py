"""Archiver drills for ``make test-faults``: kill -9 mid-batch; the database away 30 s."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import pytest

from shared.eventstore import EventStore
from shared.redisutil import publish_record
from tests.faults.procs import Proc, service_env
from tests.helpers import wait_for
from tests.storage_servers import start_postgres

pytestmark = pytest.mark.faults


def _publish(r, keys, n: int, tag: str) -> list[str]:
    ids = []
    now = time.time_ns() // 1_000_000  # recent: retention must not expire them
    for i in range(n):
        base = {"camera_id": f"drill/cam{i % 4}", "class": "person", "track_id": i,
                "first_seen": now + i}  # fmt: skip
        for kind in ("object_entered", "object_left"):
            eid = f"{tag}-{kind[7:]}-{i}"
            publish_record(r, keys, "events", {**base, "type": kind, "event_id": eid,
                                               "ts": now + 100 + i}, maxlen=1_000_000)  # fmt: skip
            ids.append(eid)
    return ids


@pytest.fixture
def record_recovery(record_property):
    def record(name: str, value: float) -> None:
        record_property(name, round(value, 2))
        print(f"[faults] {name}: {value:.2f} s")

    return record


@pytest.fixture
def pg(tmp_path):
    base = Path(tempfile.mkdtemp(prefix="sentri-pg-drill-"))
    os.chmod(base, 0o755)
    server = start_postgres(base / "pg")
    yield server
    server.stop()


def _archiver(redis_url, prefix, tmp_path, db_url, name="drill", batch=100) -> Proc:
    env = service_env(redis_url, prefix, tmp_path / "state",
                      SENTRI_STORAGE__DATABASE_URL=db_url, SENTRI_ARCHIVER__BATCH=str(batch),
                      SENTRI_ARCHIVER__RETRY_MAX_S="1", SENTRI_ARCHIVER__CONSUMER="drill-1")  # fmt: skip
    return Proc(name, ["-m", "services.archiver"], env, tmp_path).start()


def _count(db_url: str) -> int:
    s = EventStore(db_url, migrate=False)
    try:
        return s.count_events()
    finally:
        s.close()


def test_kill9_mid_batch_then_restart_every_event_exactly_once(redis_url, r, keys, prefix,
                                                              tmp_path, pg, record_recovery):  # fmt: skip
    db_url = pg.url(pg.create_db())
    EventStore(db_url).close()  # schema
    ids = _publish(r, keys, 3000, "k")
    stream, group = keys.stream("events"), "archiver"
    mid_batch = False
    for attempt in range(5):
        proc = _archiver(redis_url, prefix, tmp_path, db_url, name=f"arch{attempt}")
        proc.wait_log("archiver ready", 30)
        before = _count(db_url)
        wait_for(lambda b=before: _count(db_url) > b, 60, interval=0.01, what="archiving")
        proc.kill9()
        info = r.xpending(stream, group)
        mid_batch = mid_batch or int(info["pending"]) > 0
        if mid_batch:
            break
        if _count(db_url) == len(ids):  # a fast machine finished first: more work
            ids += _publish(r, keys, 3000, f"k{attempt}")
    assert mid_batch, "never caught the archiver between read and acknowledge"
    t0 = time.monotonic()
    proc = _archiver(redis_url, prefix, tmp_path, db_url, name="arch-final")
    wait_for(lambda: _count(db_url) == len(ids) and int(r.xpending(stream, group)["pending"]) == 0,
             90, what="all archived after restart")  # fmt: skip
    record_recovery("archiver_kill9_catch_up", time.monotonic() - t0)
    proc.stop()
    store = EventStore(db_url, migrate=False)
    with store.engine.connect() as conn:
        from sqlalchemy import text

        rows = conn.execute(text("select event_id from events")).scalars().all()
        objects = conn.execute(text("select count(*) from tracked_objects")).scalar()
    assert sorted(rows) == sorted(ids)  # every event exactly once
    assert objects == len(ids) // 2  # one row per track


def test_database_away_30s_nothing_lost(redis_url, r, keys, prefix, tmp_path, pg,
                                        record_recovery):  # fmt: skip
    db_url = pg.url(pg.create_db())
    EventStore(db_url).close()  # schema
    proc = _archiver(redis_url, prefix, tmp_path, db_url)
    proc.wait_log("archiver ready", 30)
    first = _publish(r, keys, 100, "before")
    wait_for(lambda: _count(db_url) == len(first), 30, what="archived before the outage")
    pg.stop()
    t_down = time.monotonic()
    during = []
    while time.monotonic() - t_down < 30:  # producers keep publishing: never blocked
        during += _publish(r, keys, 20, f"during{len(during)}")
        time.sleep(1.0)
    assert proc.alive()
    pg.start()
    t0 = time.monotonic()
    wait_for(lambda: _count(db_url) == len(first) + len(during), 90, what="caught up")
    record_recovery("archiver_db_outage_catch_up", time.monotonic() - t0)
    assert "event store unavailable" in proc.log_text()
    proc.stop()
