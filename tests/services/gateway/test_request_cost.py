"""The gateway's cost per request does not grow with clients x cameras (issue 12, item 11)."""

from __future__ import annotations

import json
import threading
import time

import redis

from shared.keys import SERVICES
from tests.helpers import wait_for
from tests.services.gateway.conftest import add_client


def _redis_commands_during(redis_url: str, r: redis.Redis, action) -> list[str]:
    """The commands the real Redis executed while ``action`` ran (MONITOR)."""
    seen: list[str] = []
    done = threading.Event()

    def monitor() -> None:
        conn = redis.Redis.from_url(redis_url, decode_responses=True)
        with conn.monitor() as m:
            for cmd in m.listen():
                seen.append(cmd["command"])
                if "monitor-end-marker" in cmd["command"]:
                    done.set()
                    return

    t = threading.Thread(target=monitor, daemon=True)
    t.start()

    def started() -> bool:
        r.echo("monitor-start-marker")
        return any("monitor-start-marker" in c for c in seen)

    wait_for(started, 5, what="MONITOR running")
    action()
    r.echo("monitor-end-marker")
    assert done.wait(10)
    t.join(5)
    return seen


def test_clients_list_reads_worker_stats_once_per_request(client, r, keys, redis_url):
    for i in range(12):
        add_client(r, keys, f"c{i}", ("a", "b"))
    now = time.time()
    for svc in SERVICES:
        r.hset(
            keys.worker_stats(svc),
            mapping={f"c{i}/a": json.dumps({"fps": 1, "updated": now}) for i in range(12)},
        )
    bodies = []
    seen = _redis_commands_during(
        redis_url, r, lambda: bodies.append(client.get("/api/distributed/clients").json())
    )
    assert bodies[0]["count"] == 12
    assert bodies[0]["clients"][0]["cameras"][0]["worker_stats"]["detector"]["fps"] == 1
    stats_reads = [c for c in seen if "worker_stats" in c and "HGETALL" in c.upper()]
    assert len(stats_reads) == len(SERVICES), stats_reads
