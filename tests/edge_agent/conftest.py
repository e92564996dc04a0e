"""Fixtures: a fake ingest on free loopback ports and a factory of running agents."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from edge_agent.agent import EdgeAgent
from edge_agent.config import EdgeConfig
from tests.edge_agent.fake_ingest import FakeIngest


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """``cli.main`` configures the root logger on pytest's captured stderr; undo it so
    later log lines do not go to a closed stream."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture
def ingest_factory(port_factory) -> Iterator[Callable[..., FakeIngest]]:
    made: list[FakeIngest] = []

    def make(**kwargs: Any) -> FakeIngest:
        ing = FakeIngest(port_factory(), port_factory(), **kwargs)
        made.append(ing)
        return ing

    yield make
    for ing in made:
        ing.close()


@pytest.fixture
def ingest(ingest_factory) -> FakeIngest:
    return ingest_factory()


@pytest.fixture
def agent_factory() -> Iterator[Callable[..., EdgeAgent]]:
    """Start an agent against a FakeIngest; every agent is stopped at teardown."""
    agents: list[EdgeAgent] = []

    def make(ing: FakeIngest, sources: list[str], **overrides: Any) -> EdgeAgent:
        fields: dict[str, Any] = {
            "client_id": "test-edge",
            "frame_endpoint": ing.frame_url,
            "control_endpoint": ing.control_url,
            "sources": sources,
            "heartbeat_interval_s": 0.3,
            "reply_timeout_s": 3.0,
            **overrides,
        }
        agent = EdgeAgent(EdgeConfig(**fields))
        agents.append(agent)
        agent.start()
        return agent

    yield make
    for agent in agents:
        agent.stop()
