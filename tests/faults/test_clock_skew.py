"""Fault: two worker replicas whose wall clocks differ by 60 s.

Membership is scored by the Redis server's clock, so the replica that is 60 s fast
neither deletes its peer nor looks different to it: every camera keeps exactly one
owner for the whole drill (60 s, checked every 0.2 s).  With membership by each
replica's ``time.time()`` the fast replica dropped its peer on every heartbeat and
took every camera while the peer kept its share: cameras processed twice.
"""

from __future__ import annotations

import json
import os
import time

import pytest

from tests.faults.procs import service_env
from tests.helpers import wait_for

pytestmark = pytest.mark.faults

DRILL_S = float(os.environ.get("SENTRI_DRILL_S", "60"))
REPLICAS = {"slow-clock": 0.0, "fast-clock": 60.0}


def test_replicas_60s_apart_keep_one_owner_per_camera(
    procs, redis_url, prefix, keys, r, state_dir, port_factory, record_recovery
):
    cams = [f"skew/cam{i}" for i in range(16)]
    r.sadd(keys.cameras, *cams)
    env = service_env(redis_url, prefix, state_dir)
    pub = f"tcp://127.0.0.1:{port_factory()}"
    for name, offset in REPLICAS.items():
        p = procs(name, ["-m", "tests.faults.skewed_replica", "--url", redis_url, "--prefix",
                         prefix, "--replica", name, "--offset", str(offset), "--ingest-pub", pub],
                  env)  # fmt: skip
        p.wait_log("replica ready", 30)

    def owned() -> dict[str, set[str]]:
        out = {}
        for name in REPLICAS:
            raw = r.get(keys.k("drill", "owned", name))
            out[name] = set(json.loads(raw)) if raw else set()
        return out

    def split() -> dict[str, set[str]] | None:
        o = owned()
        parts = list(o.values())
        ok = all(parts) and set().union(*parts) == set(cams) and not (parts[0] & parts[1])
        return o if ok else None

    wait_for(split, 20, what="cameras split between both replicas")
    start = time.monotonic()
    checks = 0
    while time.monotonic() - start < DRILL_S:
        o = owned()
        a, b = o.values()
        assert not (a & b), f"cameras with two owners: {sorted(a & b)}"
        assert a | b == set(cams), f"cameras with no owner: {sorted(set(cams) - (a | b))}"
        assert a and b, "one replica took every camera"
        checks += 1
        time.sleep(0.2)
    live = sorted(r.zrange(keys.members("skewdrill"), 0, -1))
    assert live == sorted(REPLICAS)
    # The figure: how long every camera had exactly one owner (checked ``checks`` times).
    record_recovery("clock_skew_60s_one_owner_held", time.monotonic() - start)
    print(f"[faults] clock skew: {checks} ownership checks, never two owners")
