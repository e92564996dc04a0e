"""The agent against the real ingest (services.ingest.server.IngestServer, CURVE on):
one client id claimed by two approved agents, and an agent left pending for a while.

A worker's view is a real SUB socket on ingest's fan-out.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import zmq

from edge_agent.agent import EdgeAgent
from edge_agent.config import EdgeConfig
from services.ingest.server import IngestServer
from shared import registry
from shared.config import IngestConfig, RedisConfig
from shared.protocol import FrameHeader, decode_fanout, topic_for
from shared.security import AgentKeyStore, fingerprint, write_keypair
from tests.helpers import wait_for

CAM = "garage/demo-coffee"


class Subscriber:
    """A worker's SUB socket on ingest's fan-out, filtered to one camera."""

    def __init__(self, pub_port: int, camera_id: str) -> None:
        self.ctx = zmq.Context()
        self.sub = self.ctx.socket(zmq.SUB)
        self.sub.setsockopt(zmq.LINGER, 0)
        self.sub.setsockopt(zmq.SUBSCRIBE, topic_for(camera_id))
        self.sub.connect(f"tcp://127.0.0.1:{pub_port}")
        self.headers: list[tuple[float, FrameHeader]] = []

    def poll(self) -> list[tuple[float, FrameHeader]]:
        while self.sub.poll(50):
            header, _jpeg = decode_fanout(self.sub.recv_multipart())
            self.headers.append((time.monotonic(), header))
        return self.headers

    def since(self, t: float) -> list[FrameHeader]:
        return [h for at, h in self.poll() if at >= t]

    def close(self) -> None:
        self.sub.close(0)
        self.ctx.term()


@pytest.fixture
def ingest_server(redis_config: RedisConfig, tmp_path) -> Iterator[IngestServer]:
    cfg = IngestConfig(frame_port=0, control_port=0, pub_port=0, stats_interval_s=0.2)
    assert cfg.insecure is False  # CURVE, the default
    server = IngestServer(cfg, redis_config, keys_dir=tmp_path / "ingest").start()
    assert server.wait_ready(10)
    yield server
    server.stop()


@pytest.fixture
def subscriber(ingest_server: IngestServer) -> Iterator[Subscriber]:
    sub = Subscriber(ingest_server.pub_port, CAM)
    yield sub
    sub.close()


@pytest.fixture
def run_agent(ingest_server: IngestServer) -> Iterator[Callable[..., EdgeAgent]]:
    """A real agent with the default liveness settings (reply timeout, backoff)."""
    agents: list[EdgeAgent] = []

    def start(key_dir: str, **overrides: Any) -> EdgeAgent:
        fields: dict[str, Any] = {
            "client_id": "garage",
            "frame_endpoint": f"tcp://127.0.0.1:{ingest_server.frame_port}",
            "control_endpoint": f"tcp://127.0.0.1:{ingest_server.control_port}",
            "sources": ["demo:coffee"],
            "fps": 8,
            "server_key": ingest_server.server_public,
            "key_dir": key_dir,
            **overrides,
        }
        agent = EdgeAgent(EdgeConfig(**fields))
        agents.append(agent)
        agent.start()
        return agent

    yield start
    for agent in agents:
        agent.stop()


def test_second_agent_with_same_client_id_cannot_steal_the_control_connection(
    ingest_server, subscriber, run_agent, r, keys, tmp_path
):
    store = AgentKeyStore(r, keys)
    legit_pub, _ = write_keypair(tmp_path / "legit", "edge")
    store.approve(legit_pub)
    legit = run_agent(str(tmp_path / "legit"))
    wait_for(lambda: len(subscriber.poll()) >= 3, timeout=10, what="legit agent streaming")
    session = ingest_server.sessions.by_client("garage")
    assert session is not None and session.key == legit_pub
    routing_id = session.routing_id
    assert routing_id != b"garage"  # the client id is not the routing id

    # A second machine, its key approved too, claims the same client id; its frames
    # are 320x240 so they can be told apart.  Ingest's rule (services/ingest/README):
    # the client id belongs to the first approved key that registered it.
    mallory_pub, _ = write_keypair(tmp_path / "mallory", "edge")
    store.approve(mallory_pub)
    mallory = run_agent(str(tmp_path / "mallory"), width=320, height=240)
    wait_for(lambda: ingest_server.invalid_count("client_key_mismatch") >= 2, timeout=15,
             what="mallory's register refused, twice")  # fmt: skip

    # The real agent's control connection was never touched: same session, same
    # routing id, no reconnect, frames go on and only its frames reach the worker.
    t = time.monotonic()
    wait_for(lambda: len(subscriber.since(t)) >= 5, timeout=10, what="legit frames go on")
    assert {(h.w, h.h) for _, h in subscriber.poll()} == {(640, 480)}
    session = ingest_server.sessions.by_client("garage")
    assert session.key == legit_pub and session.routing_id == routing_id
    assert legit.control.reconnects == 0 and legit.control.connected
    assert mallory.control.acks == 0

    # A command for "garage" reaches the real agent, not the impostor.
    registry.send_command(r, keys, "garage", "stop_streaming", camera="demo-coffee")
    wait_for(lambda: not legit.camera("demo-coffee").settings.streaming, timeout=10,
             what="stop_streaming applied by the legit agent")  # fmt: skip
    assert mallory.camera("demo-coffee").settings.streaming
    wait_for(lambda: ingest_server.counters["commands_sent"] >= 1, timeout=5, what="command sent")
    registry.send_command(r, keys, "garage", "start_streaming", camera="demo-coffee")
    t = time.monotonic()
    wait_for(lambda: subscriber.since(t), timeout=10, what="streaming again on command")
    assert legit.control.reconnects == 0


def test_agent_pending_for_a_while_streams_within_seconds_of_approval(
    ingest_server, subscriber, run_agent, r, keys, tmp_path
):
    store = AgentKeyStore(r, keys)
    agent = run_agent(str(tmp_path / "agent"))  # default reply timeout and backoff
    key = agent.public_key
    assert key is not None
    wait_for(lambda: store.status(key) == "pending", what="agent key pending")
    wait_for(lambda: agent.control.refusals >= 1, what="agent saw the refusal")

    # Pending for about 20 s: long enough for the old exponential backoff to reach
    # waits of 6 + 16 s.  Each turn of this wait polls the worker's socket.
    t0 = time.monotonic()
    wait_for(lambda: not subscriber.poll() and time.monotonic() - t0 >= 20, timeout=30,
             what="20 s pending")  # fmt: skip
    assert subscriber.poll() == [] and not agent.control.connected
    retries = agent.control.reconnects
    assert retries >= 5, retries  # every few seconds, not ever more rarely

    store.approve(fingerprint(key))
    approved_at = time.monotonic()
    wait_for(lambda: subscriber.poll(), timeout=8, what="frames within 8 s of approval")
    took = time.monotonic() - approved_at
    print(f"\nfirst frame reached the subscriber {took:.1f}s after approval "
          f"(after {retries} retries while pending)")  # fmt: skip
    # Frames flow once the session exists; the registry is written off that path.
    wait_for(
        lambda: (registry.get_client(r, keys, "garage") or {}).get("status") == "online",
        what="the client online in the registry",
    )
    assert store.key_for_client("garage") == key
