"""Fault 6: the snapshot store is full.

The detector keeps event snapshots (best-frame JPEGs) in Redis with a TTL
(``keys.snapshot``), not on disk, so "disk full" for snapshots is Redis reaching
``maxmemory`` with ``noeviction``: every write is refused with OOM.  The detector
process keeps running, counts the refused writes
(``sentri_detector_publish_failures_total``), keeps the events Redis refused in a
bounded retry queue, and once memory is freed it stores results, the held-back
events and their snapshots without a restart: an object that appeared while the
store was full is still announced.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest

from shared.keys import STREAM_DETECTIONS, STREAM_EVENTS
from shared.redisutil import EmbeddedRedis, connect, parse_entry
from tests.faults.procs import (
    DETECTOR_ENV,
    CameraFeeder,
    bus_jpeg,
    detector_args,
    parse_metrics,
    scrape,
    service_env,
)
from tests.helpers import wait_for

pytestmark = pytest.mark.faults

RECOVERY_S = 10.0


@pytest.fixture
def own_redis() -> Iterator[EmbeddedRedis]:
    """A Redis of this test's own: its memory limit is changed."""
    with EmbeddedRedis() as server:
        yield server


def errors(port: int) -> float:
    return parse_metrics(scrape(port), "sentri_detector_publish_failures_total")


def entered_with_snapshot(r, keys, cam: str, since_ms: int = 0) -> dict | None:
    for entry_id, fields in r.xrange(keys.stream(STREAM_EVENTS), min=f"{since_ms}-0"):
        ev = parse_entry(entry_id, fields)
        if ev["camera_id"] == cam and ev["type"] == "object_entered" and ev["snapshot_id"]:
            return ev
    return None


def test_detector_survives_full_snapshot_store(
    own_redis, procs, prefix, keys, state_dir, port_factory, record_recovery
):
    r = connect(own_redis.url)
    rb = connect(own_redis.url, decode=False)
    cam1, cam2 = "full/cam1", "full/cam2"
    r.sadd(keys.cameras, cam1, cam2)
    pub_port, metrics_port = port_factory(), port_factory()
    feeder = CameraFeeder(pub_port, bus_jpeg(), fps=3.0)
    feeder.feed(cam1)
    feeder.start()
    # The drill's premise is snapshots held in Redis (the pre-media-store mode, still
    # selectable): a full Redis must not lose events.
    env = service_env(
        own_redis.url, prefix, state_dir, **DETECTOR_ENV, SENTRI_STORAGE__SNAPSHOT_STORE="redis"
    )
    try:
        det = procs(
            "detector", detector_args(f"tcp://127.0.0.1:{pub_port}", "det-full", metrics_port), env
        )
        det.wait_log("detector ready", 90)
        ev = wait_for(lambda: entered_with_snapshot(r, keys, cam1), 60, what="cam1 snapshot")
        assert rb.get(keys.snapshot(ev["snapshot_id"])).startswith(b"\xff\xd8")
        before = errors(metrics_port)

        # "Disk full": no write fits any more.
        r.config_set("maxmemory-policy", "noeviction")
        r.config_set("maxmemory", "1")
        full_ms = time.time_ns() // 1_000_000
        wait_for(
            lambda: errors(metrics_port) >= before + 3, RECOVERY_S, what="failed writes counted"
        )
        assert det.alive()
        stalled = r.xlen(keys.stream(STREAM_DETECTIONS))
        # A new camera's people appear while the store is full: their events wait.
        feeder.feed(cam2)
        wait_for(lambda: errors(metrics_port) >= before + 10, 30, what="cam2 processed while full")
        wait_for(lambda: "will retry" in det.log_text(), 30, what="cam2's events held back")
        assert "used memory > 'maxmemory'" in det.log_text()

        # Memory freed: results flow again and the held-back events are published.
        r.config_set("maxmemory", "0")
        freed = time.monotonic()
        freed_ms = time.time_ns() // 1_000_000
        wait_for(
            lambda: r.xlen(keys.stream(STREAM_DETECTIONS)) > stalled,
            RECOVERY_S,
            what="detections stored again",
        )
        resumed = time.monotonic() - freed
        ev2 = wait_for(
            lambda: entered_with_snapshot(r, keys, cam2, freed_ms),
            30,
            what="the held-back event of the new object, with its snapshot",
        )
        assert ev2["first_seen"] < freed_ms  # seen while full, announced after
        snapshot_after = time.monotonic() - freed
        jpeg = rb.get(keys.snapshot(ev2["snapshot_id"]))
        assert jpeg and jpeg.startswith(b"\xff\xd8")
        assert 0 < rb.ttl(keys.snapshot(ev2["snapshot_id"])) <= 7 * 24 * 3600
        # Nothing was written while full.
        assert not [
            e
            for e in r.xrange(
                keys.stream(STREAM_DETECTIONS), min=f"{full_ms + 500}-0", max=f"{freed_ms - 500}-0"
            )
        ]

        # The camera that was there before has fresh results again: its latest record
        # is replaced (the held-back event of cam2 can arrive before cam1's next frame).
        def cam1_fresh() -> dict | None:
            latest = json.loads(r.get(keys.latest(STREAM_DETECTIONS, cam1)))
            return latest if latest["ts"] >= freed_ms - 2000 else None

        latest = wait_for(cam1_fresh, RECOVERY_S, what="cam1's latest record replaced")
        assert latest["replica"] == "det-full"
        assert det.alive()
        record_recovery("snapshot_store_full_detections_resume", resumed)
        record_recovery("snapshot_store_full_new_snapshot", snapshot_after)
    finally:
        feeder.close()
        r.close()
        rb.close()
