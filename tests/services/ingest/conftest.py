"""Fixtures for ingest tests: a real photo as JPEG, a zmq context, servers."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import zmq
from skimage import data as skdata

from services.ingest.server import IngestServer
from shared.config import IngestConfig, RedisConfig
from tests.helpers import encode_jpeg

from .emulators import Agent, Worker


@pytest.fixture(scope="session")
def photo() -> tuple[bytes, int, int]:
    """A real photograph (scikit-image's astronaut, 512x512) as JPEG bytes, w, h."""
    img = skdata.astronaut()[:, :, ::-1].copy()  # RGB -> BGR for OpenCV
    return encode_jpeg(img, quality=80), img.shape[1], img.shape[0]


@pytest.fixture
def ctx() -> Iterator[zmq.Context]:
    context = zmq.Context()
    yield context
    context.destroy(linger=0)


def ingest_config(**overrides: Any) -> IngestConfig:
    """Random ports; plaintext unless ``insecure=False`` is given: the protocol tests
    speak to ingest without CURVE (test_curve*.py cover the secure default)."""
    base: dict[str, Any] = dict(
        frame_port=0, control_port=0, pub_port=0, pub_hwm=1000, stats_interval_s=0.2,
        insecure=True,
    )  # fmt: skip
    base.update(overrides)
    return IngestConfig(**base)


@pytest.fixture
def make_server(redis_config: RedisConfig) -> Iterator[Callable[..., IngestServer]]:
    """Start an IngestServer (random ports unless given); stopped at teardown."""
    servers: list[IngestServer] = []

    def factory(**overrides: Any) -> IngestServer:
        kwargs = {
            k: overrides.pop(k) for k in ("health_interval_s", "cleanup_interval_s", "keys_dir")
            if k in overrides
        }  # fmt: skip
        server = IngestServer(ingest_config(**overrides), redis_config, **kwargs).start()
        servers.append(server)
        assert server.wait_ready(10), "command reader did not start"
        return server

    yield factory
    for s in servers:
        if not s.stop_event.is_set():
            s.stop()


@pytest.fixture
def make_agent(ctx: zmq.Context) -> Iterator[Callable[..., Agent]]:
    agents: list[Agent] = []

    def factory(server: IngestServer, client_id: str = "edge1", **kw: Any) -> Agent:
        agent = Agent(
            ctx, client_id, control_port=server.control_port, frame_port=server.frame_port, **kw
        )
        agents.append(agent)
        return agent

    yield factory
    for a in agents:
        a.close()


@pytest.fixture
def make_worker(ctx: zmq.Context) -> Iterator[Callable[..., Worker]]:
    workers: list[Worker] = []

    def factory(
        server: IngestServer, camera_ids: list[str], curve: tuple[str, str, str] | None = None
    ) -> Worker:
        w = Worker(ctx, server.pub_port, camera_ids, curve=curve)
        workers.append(w)
        return w

    yield factory
    for w in workers:
        w.close()
