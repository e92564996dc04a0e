"""A stalled Redis (SIGSTOP: connections open, no answers) never stops the frames of
connected agents, and the key check fails closed for keys it cannot look up."""

from __future__ import annotations

import os
import signal
import time

import pytest

from services.ingest.server import IngestServer
from shared.config import RedisConfig
from shared.keys import Keys
from shared.redisutil import EmbeddedRedis, connect
from shared.security import AgentKeyStore, generate_keypair
from tests.helpers import wait_for

from .conftest import ingest_config
from .emulators import prime

PREFIX = "stall:"


@pytest.fixture
def own_redis():
    """A private redis-server this test may stop (not the session's shared one)."""
    server = EmbeddedRedis().start()
    yield server
    if server.proc is not None:
        os.kill(server.proc.pid, signal.SIGCONT)
    server.close()


def test_sigstopped_redis_never_stops_connected_agents_frames(
    own_redis, make_agent, make_worker, photo, tmp_path
):
    jpeg, w, h = photo
    r = connect(own_redis.url)
    store = AgentKeyStore(r, Keys(PREFIX))
    streaming, newcomer, returning, stranger = (generate_keypair() for _ in range(4))
    for key in (streaming, newcomer, returning):
        store.approve(key[0])
    server = IngestServer(
        ingest_config(insecure=False, stats_interval_s=0.1),
        RedisConfig(url=own_redis.url, prefix=PREFIX),
        keys_dir=tmp_path,
    ).start()
    try:
        spub = server.server_public
        agent = make_agent(server, "edge1", curve=(*streaming, spub))
        agent.register()
        worker = make_worker(server, ["edge1/cam1"])
        prime(agent, worker, "cam1", jpeg, w, h)
        late = make_agent(server, "edge2", curve=(*newcomer, spub))  # connected, no session
        assert late.heartbeat()["type"] == "reregister"
        wait_for(lambda: server.key_cache.approved(returning[0]), what="key cache loaded")

        os.kill(own_redis.proc.pid, signal.SIGSTOP)
        stalled_at = time.monotonic()
        # A new client id needs a Redis round trip (binding it to its key): the
        # control side waits on the stalled server, the frame path must not.
        late.send("register", cameras=[{"name": "cam1"}])
        first = agent.seq["cam1"] + 1
        for _ in range(40):
            seq = agent.frame("cam1", jpeg, w, h)
            worker.poll(0.02)
        wait_for(lambda: worker.poll() is not None and seq in worker.seqs("edge1/cam1"),
                 timeout=5, what="frames during the stall")  # fmt: skip
        got = [s for s in worker.seqs("edge1/cam1") if s >= first]
        assert got == list(range(first, seq + 1)), "frames lost or reordered during the stall"
        # The binding could not be checked: the register is refused (counted), not
        # waited on forever; control answers the streaming agent from memory.
        wait_for(lambda: server.invalid_count("key_check_unavailable") >= 1,
                 timeout=10, what="register refused while Redis is stalled")  # fmt: skip
        assert agent.heartbeat()["type"] == "ack"
        # A known approved key reconnects from the cache; an unknown key fails closed.
        back = make_agent(server, "edge4", curve=(*returning, spub))
        assert back.heartbeat()["type"] == "reregister"
        unknown = make_agent(server, "edge3", curve=(*stranger, spub))
        unknown.send("heartbeat", stats={})
        assert unknown.no_message(0.5)
        wait_for(lambda: server.key_cache.unavailable >= 1, what="unknown key refused")
        seq = agent.frame("cam1", jpeg, w, h)
        wait_for(lambda: worker.poll() is not None and seq in worker.seqs("edge1/cam1"),
                 timeout=5, what="frames after the handshakes")  # fmt: skip
        assert server.counters["internal_error"] == 0
        stall_s = time.monotonic() - stalled_at

        os.kill(own_redis.proc.pid, signal.SIGCONT)

        # Redis back: the newcomer's retry binds its client id.
        def registered() -> bool:
            late.send("register", cameras=[{"name": "cam1"}])
            return not late.no_message(0.5) and late.recv()["type"] == "ack"

        wait_for(registered, timeout=10, what="register after the stall")
        assert store.key_for_client("edge2") == newcomer[0]
        print(f"stall {stall_s:.1f}s: {len(got)} frames forwarded, none lost")
    finally:
        os.kill(own_redis.proc.pid, signal.SIGCONT)
        server.stop()
        r.close()
