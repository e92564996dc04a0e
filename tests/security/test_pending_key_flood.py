"""Pending-key flood on a real ingest (CURVE mode): 60 connections with fresh keys
from one address leave at most ``limits.pending_keys_per_source`` pending records,
dashboards get coalesced notices (not one per key), and an approved agent keeps
streaming."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq

from services.ingest.server import IngestServer
from shared.config import IngestConfig, RedisConfig
from shared.security import AgentKeyStore, generate_keypair
from tests.helpers import encode_jpeg, wait_for
from tests.services.ingest.emulators import Agent, Worker, prime

FLOOD = 60


@pytest.fixture
def ctx() -> Iterator[zmq.Context]:
    context = zmq.Context()
    yield context
    context.destroy(linger=0)


@pytest.fixture
def ingest(redis_config: RedisConfig, tmp_path: Path) -> Iterator[IngestServer]:
    cfg = IngestConfig(
        frame_port=0, control_port=0, pub_port=0, insecure=False,
        limits={"pending_keys_per_source": 4, "pending_notice_s": 0.5,
                "key_cache_refresh_s": 0.2},
    )  # fmt: skip
    server = IngestServer(cfg, redis_config, keys_dir=tmp_path / "keys").start()
    assert server.wait_ready(10)
    yield server
    server.stop()


def test_fresh_key_flood_is_capped_and_notices_coalesced(ctx, ingest, r, keys):
    import numpy as np

    store = AgentKeyStore(r, keys)
    good = generate_keypair()
    store.approve(good[0])
    spub = ingest.server_public
    img = np.zeros((120, 160, 3), np.uint8)
    img[::4] = 200
    jpeg = encode_jpeg(img)
    agent = Agent(ctx, "good", control_port=ingest.control_port,
                  frame_port=ingest.frame_port, curve=(*good, spub))  # fmt: skip
    worker = Worker(ctx, ingest.pub_port, ["good/cam1"])
    sub = r.pubsub()
    sub.subscribe(keys.notify)
    sub.get_message(timeout=1)
    flood: list[Agent] = []
    try:
        agent.register()
        prime(agent, worker, "cam1", jpeg, 160, 120)
        for i in range(FLOOD):
            a = Agent(ctx, f"x{i}", control_port=ingest.control_port,
                      frame_port=ingest.frame_port, curve=(*generate_keypair(), spub))  # fmt: skip
            a.send("heartbeat", stats={})
            flood.append(a)
        wait_for(
            lambda: (
                ingest.key_cache.refused_pending["per_source"]
                + ingest.key_cache.refused_pending["rate"]
                >= FLOOD - 4
            ),
            what="flood refused at the caps",
        )
        wait_for(lambda: len(store.records()) == 1 + 4, what="the per-source cap recorded")
        notices: list[dict] = []

        def collect() -> int:
            while (msg := sub.get_message(timeout=0.1)) is not None:
                if msg["type"] == "message":
                    data = json.loads(msg["data"])
                    if data["type"] == "agent_key_pending":
                        notices.append(data)
            return sum(n["count"] for n in notices)

        wait_for(lambda: collect() >= 4, what="the pending keys announced")
        time.sleep(1.0)  # two notice windows: any further notice would show now
        assert collect() == 4 and 1 <= len(notices) <= 4
        assert len(store.records()) == 1 + 4
        seq = agent.frame("cam1", jpeg, 160, 120)
        wait_for(lambda: worker.poll() is not None and seq in worker.seqs("good/cam1"))
    finally:
        for a in flood:
            a.close()
        agent.close()
        worker.close()
        sub.close()
