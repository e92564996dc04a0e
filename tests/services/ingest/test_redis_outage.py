"""Redis goes away: frames keep flowing, control keeps answering, the registry heals."""

from __future__ import annotations

import pytest

from services.ingest.server import IngestServer
from shared import registry
from shared.config import RedisConfig
from shared.keys import Keys
from shared.redisutil import EmbeddedRedis, connect
from tests.helpers import wait_for

from .conftest import ingest_config
from .emulators import prime


@pytest.fixture
def own_redis():
    """A private redis-server this test may kill (not the session's shared one)."""
    server = EmbeddedRedis().start()
    yield server
    server.close()


def test_frames_flow_while_redis_is_down_and_registry_heals(
    own_redis, make_agent, make_worker, photo
):
    jpeg, w, h = photo
    keys = Keys("outage:")
    server = IngestServer(
        ingest_config(stats_interval_s=0.1), RedisConfig(url=own_redis.url, prefix="outage:")
    ).start()
    try:
        agent = make_agent(server, "edge1", cameras=("cam1",))
        agent.register()
        worker = make_worker(server, ["edge1/cam1"])
        prime(agent, worker, "cam1", jpeg, w, h)
        r = connect(own_redis.url)
        wait_for(lambda: registry.get_client(r, keys, "edge1"), what="registered")
        r.close()

        own_redis.kill()  # kill -9: the registry is gone with it (no persistence)
        first = agent.seq["cam1"] + 1
        for _ in range(30):
            agent.frame("cam1", jpeg, w, h)
        last = agent.seq["cam1"]
        wait_for(lambda: worker.poll() is not None and last in worker.seqs("edge1/cam1"))
        assert worker.seqs("edge1/cam1")[-30:] == list(range(first, last + 1))
        # Control keeps answering from memory; registry writes queue up.
        assert agent.heartbeat({"cam1": {"fps": 7.0}})["type"] == "ack"
        agent.send("camera_info", camera={"name": "cam1", "quality": 55})
        assert agent.recv()["type"] == "ack"
        wait_for(lambda: server.writer.errors > 0, what="a failed registry write")
        # Heartbeats during the outage replace each other instead of piling up.
        for _ in range(20):
            assert agent.heartbeat({"cam1": {"fps": 7.0}})["type"] == "ack"
        queued = server.writer.queued()  # (the write in flight is not listed)
        assert queued.count("heartbeat edge1") <= 1, queued
        assert len(queued) == len(set(queued)) <= 5, queued  # at most one of each kind

        restarted = EmbeddedRedis(port=own_redis.port, password=own_redis.password).start()
        try:
            r = connect(restarted.url)
            # The queued heartbeat finds the client missing and registers it again.
            cam = wait_for(
                lambda: (
                    (c := registry.get_camera(r, keys, "edge1/cam1"))
                    and c.get("quality") == 55
                    and "agent_fps" in c  # written after the registration, by the same job
                    and c
                ),
                what="registry rebuilt after the outage",
            )
            assert cam["agent_fps"] == 7.0
            assert registry.get_client(r, keys, "edge1")["hostname"] == "edge-1"
            wait_for(
                lambda: (registry.get_camera(r, keys, "edge1/cam1") or {}).get("frames_in", 0) > 30,
                what="stats flushed again",
            )
            r.close()
        finally:
            server.stop()
            restarted.close()
    finally:
        if not server.stop_event.is_set():
            server.stop()
