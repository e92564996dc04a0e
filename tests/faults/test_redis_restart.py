"""Fault 2: Redis dies (kill -9) and comes back on the same port and data dir.

* The frame path does not depend on Redis: ingest keeps forwarding the agent's
  frames to subscribers during the outage.
* The registry recovers by itself: ingest's writer reconnects and the client's
  ``last_seen`` / camera stats are fresh again; if Redis came back *empty* for the
  client (a lost key), the next heartbeat registers it again.
* Events acknowledged (XADD returned) before the crash survive it (AOF).
  ``EmbeddedRedis(persistent=True)`` runs ``--appendonly yes`` with Redis' default
  ``appendfsync everysec``: a *process* crash loses nothing already written to the
  AOF file, but Redis may postpone that write while an fsync is slow (up to 2 s), and
  a machine crash loses up to the last second.  So the guarantee asserted is for
  events acknowledged more than ``DURABLE_AFTER_S`` before the kill; how many of the
  later ones survived is reported, not asserted.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
import redis

from shared.keys import STREAM_EVENTS, Keys
from shared.redisutil import EmbeddedRedis, connect, publish_record
from tests.faults.procs import FrameSink, agent_args, approve_agent, ingest_args, service_env
from tests.helpers import wait_for

pytestmark = pytest.mark.faults

CAMS = ("rr/demo-bus", "rr/demo-zidane")
RECOVERY_S = 10.0
DURABLE_AFTER_S = 2.0


class EventWriter(threading.Thread):
    """XADDs events like the detector does until Redis goes away; remembers when each
    one was acknowledged."""

    def __init__(self, url: str, keys: Keys) -> None:
        super().__init__(daemon=True)
        self.r = connect(url, timeout=1.0)
        self.keys = keys
        self.acked: list[tuple[str, float]] = []  # (entry id, wall time of the ack)
        self.stop_ev = threading.Event()

    def run(self) -> None:
        n = 0
        while not self.stop_ev.wait(0.02):
            n += 1
            record = {"type": "object_entered", "camera_id": CAMS[0], "event_id": f"ev{n}"}
            try:
                entry = publish_record(
                    self.r, self.keys, STREAM_EVENTS, record, maxlen=100_000, latest=False
                )
            except redis.RedisError:
                return  # the crash
            self.acked.append((entry, time.time()))

    def acked_before(self, t: float) -> list[str]:
        return [e for e, at in list(self.acked) if at < t]


@pytest.fixture
def persistent_redis(tmp_path) -> Iterator[EmbeddedRedis]:
    """A Redis of this test's own (it is killed): AOF on, data dir kept across restarts."""
    server = EmbeddedRedis(tmp_path / "redis", persistent=True).start()
    yield server
    server.close()


def test_frames_flow_and_state_survives_redis_kill9(
    persistent_redis, procs, prefix, tmp_path, port_factory, record_recovery
):
    server = persistent_redis
    keys = Keys(prefix)
    ports = (port_factory(), port_factory(), port_factory())
    state = tmp_path / "state"
    curve = approve_agent(server.url, prefix, state, "rr")
    env = service_env(server.url, prefix, state, SENTRI_INGEST__STATS_INTERVAL_S="0.5")
    sink = FrameSink(f"tcp://127.0.0.1:{ports[2]}")
    writer = EventWriter(server.url, keys)
    r = connect(server.url, timeout=2.0)
    try:
        procs("ingest", ingest_args(ports), env).wait_log("ingest ready", 30)
        procs(
            "agent", agent_args("rr", ports, curve=curve, sources=["demo:bus", "demo:zidane"]), env
        )
        wait_for(lambda: all(sink.count(c) >= 3 for c in CAMS), 40, what="frames of both cameras")
        wait_for(lambda: r.exists(keys.client("rr")), 10, what="client registered")
        writer.start()
        wait_for(
            lambda: len(writer.acked_before(time.time() - DURABLE_AFTER_S - 0.5)) >= 20,
            15,
            what="events old enough to be durable",
        )

        server.kill()
        killed, killed_wall = time.monotonic(), time.time()
        writer.join(10)
        assert not writer.is_alive(), "the event writer did not notice the crash"
        durable = writer.acked_before(killed_wall - DURABLE_AFTER_S)
        recent = [e for e, at in writer.acked if at >= killed_wall - DURABLE_AFTER_S]

        # Outage: frames keep flowing agent -> ingest -> subscriber without Redis.
        wait_for(
            lambda: all(sink.count(c, since=killed + 0.2) >= 5 for c in CAMS),
            RECOVERY_S,
            what="frames forwarded while Redis is down",
        )
        outage_frames = sum(sink.count(c, since=killed + 0.2) for c in CAMS)

        server.start()
        back, back_wall = time.monotonic(), time.time()
        # Acknowledged events survived the crash (AOF).
        ids = {e for e, _f in r.xrange(keys.stream(STREAM_EVENTS))}
        missing = [e for e in durable if e not in ids]
        assert not missing, f"{len(missing)} of {len(durable)} durable events lost"
        survived_recent = sum(1 for e in recent if e in ids)

        # The registry is live again: ingest's writer reconnected by itself.
        def fresh() -> bool:
            seen = r.hget(keys.client("rr"), "last_seen")
            frame_ts = r.hget(keys.camera(CAMS[0]), "last_frame_ts")
            return bool(
                seen and frame_ts and float(seen) > back_wall and float(frame_ts) > back_wall
            )

        wait_for(fresh, RECOVERY_S, what="registry updated after Redis returned")
        registry_back = time.monotonic() - back
        assert r.hget(keys.client("rr"), "status") == "online"

        # Redis came back without this client (e.g. an older snapshot): it is registered
        # again from ingest's session at the next heartbeat.
        r.delete(keys.client("rr"), keys.client_cameras("rr"), keys.camera(CAMS[0]))
        r.srem(keys.clients, "rr")
        deleted = time.monotonic()
        wait_for(
            lambda: (
                r.sismember(keys.clients, "rr")
                and r.sismember(keys.client_cameras("rr"), CAMS[0])
                and r.hget(keys.camera(CAMS[0]), "width") == "640"
            ),
            RECOVERY_S,
            what="client registered again after its keys vanished",
        )
        reregistered = time.monotonic() - deleted
        assert all(sink.count(c, since=back) >= 1 for c in CAMS)

        print(
            f"[faults] redis outage: {outage_frames} frames forwarded without Redis; "
            f"{len(durable)} durable events kept; {survived_recent}/{len(recent)} events "
            f"acked in the last {DURABLE_AFTER_S} s before the kill also survived"
        )
        record_recovery("redis_kill9_registry_fresh_after_restart", registry_back)
        record_recovery("redis_lost_client_reregistered", reregistered)
    finally:
        writer.stop_ev.set()
        sink.close()
        r.close()
