"""Fault 3: one of two detector replicas dies (kill -9) while six cameras stream.

Replicas shard cameras by rendezvous hashing over the live members in Redis.  The
dead replica stops heartbeating; once its membership entry is older than
worker.member_ttl_s (default 4 s) the survivor owns every camera, subscribes to
their topics and detections resume for each of them within 10 s.
"""

from __future__ import annotations

import json
import time

import pytest

from shared.keys import STREAM_DETECTIONS
from shared.redisutil import parse_entry
from shared.worker import rendezvous_owner
from tests.faults.procs import DETECTOR_ENV, CameraFeeder, bus_jpeg, detector_args, service_env
from tests.helpers import wait_for

pytestmark = pytest.mark.faults

REPLICAS = ("det-a", "det-b")
RECOVERY_S = 10.0


def pick_cameras(per_replica: int = 2) -> list[str]:
    """Camera ids such that each replica owns ``per_replica`` of them."""
    owned: dict[str, list[str]] = {m: [] for m in REPLICAS}
    i = 0
    while any(len(v) < per_replica for v in owned.values()):
        cam = f"fo/cam{i}"
        owner = rendezvous_owner(cam, REPLICAS)
        assert owner is not None
        if len(owned[owner]) < per_replica:
            owned[owner].append(cam)
        i += 1
    return sorted(c for v in owned.values() for c in v)


def detections_since(r, keys, ms: int) -> list[dict]:
    return [parse_entry(i, f) for i, f in r.xrange(keys.stream(STREAM_DETECTIONS), min=f"{ms}-0")]


def test_survivor_takes_over_every_camera(
    procs, redis_url, prefix, keys, r, state_dir, port_factory, record_recovery
):
    cams = pick_cameras(3)
    r.sadd(keys.cameras, *cams)
    pub_port = port_factory()
    feeder = CameraFeeder(pub_port, bus_jpeg(), fps=2.0)
    feeder.feed(*cams)
    feeder.start()
    env = service_env(redis_url, prefix, state_dir, **DETECTOR_ENV)
    try:
        dets = {
            rid: procs(rid, detector_args(f"tcp://127.0.0.1:{pub_port}", rid), env)
            for rid in REPLICAS
        }
        for d in dets.values():
            d.wait_log("detector ready", 90)

        # Both replicas work, each on its own shard (the first one ready briefly owns
        # everything; the latest record of each camera comes from its owner once both run).
        def sharded() -> bool:
            for cam in cams:
                latest = r.get(keys.latest(STREAM_DETECTIONS, cam))
                if not latest or json.loads(latest)["replica"] != rendezvous_owner(cam, REPLICAS):
                    return False
            return True

        wait_for(sharded, 60, what="each camera detected by its own replica")

        victim, survivor = REPLICAS
        dets[victim].kill9()
        killed_ms = time.time_ns() // 1_000_000
        lost = [c for c in cams if rendezvous_owner(c, REPLICAS) == victim]

        def resumed() -> dict[str, int]:
            first: dict[str, int] = {}
            for rec in detections_since(r, keys, killed_ms):
                assert rec["replica"] == survivor
                first.setdefault(rec["camera_id"], int(rec["id"].split("-")[0]))
            return first if set(first) == set(cams) else {}

        first = wait_for(resumed, RECOVERY_S, what="survivor detecting every camera")
        takeover_s = max(first[c] - killed_ms for c in lost) / 1000
        # Real detections on the taken-over cameras: the bus photo has people.
        recs = [x for x in detections_since(r, keys, killed_ms) if x["camera_id"] in lost]
        assert any(o["class"] for x in recs for o in x["objects"]), recs[:2]
        assert dets[survivor].alive()
        live = {m for m, _s in r.zrange(keys.members("detector"), 0, -1, withscores=True)}
        assert survivor in live
        record_recovery("detector_kill9_takeover", takeover_s)
    finally:
        feeder.close()
