"""Faces events go through the runtime's ordered, retried publisher: a face
recognised while Redis refuses writes is announced once Redis accepts them again,
and the debounce is only armed by an event that was written or queued."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from services.faces.config import FacesConfig
from services.faces.gallery import Gallery
from shared.config import RedisConfig
from shared.keys import Keys
from shared.redisutil import EmbeddedRedis, connect
from tests.helpers import wait_for
from tests.services.faces.support import stream_records


@pytest.fixture(scope="module")
def own_redis() -> Iterator[EmbeddedRedis]:
    """A Redis of this module's own: its memory limit is changed."""
    with EmbeddedRedis() as server:
        yield server


@pytest.fixture
def redis_config(own_redis, prefix) -> RedisConfig:
    return RedisConfig(url=own_redis.url, prefix=prefix)


@pytest.fixture
def r(own_redis):
    client = connect(own_redis.url)
    yield client
    client.config_set("maxmemory", 0)
    client.close()


def test_a_face_seen_while_redis_refuses_writes_is_announced_when_it_recovers(
    faces_worker, r, keys: Keys, astronaut_jpeg, known_scene
) -> None:
    config = FacesConfig(gate_on_person=False, max_rate_per_camera=0, debounce_s=3600)
    Gallery(r, keys, config).enroll("astronaut", [astronaut_jpeg])
    worker = faces_worker(config)
    r.config_set("maxmemory-policy", "noeviction")
    r.config_set("maxmemory", 1)  # every write refused (OOM) from now on
    try:
        worker.feed_until(known_scene, lambda: worker.stats().faces_recognised >= 2)
        assert stream_records(r, keys, "events") == [], "nothing can be written yet"
        assert worker.runtime.events.pending == 1, "one event waits, debounce armed by it"
    finally:
        r.config_set("maxmemory", 0)
    # No more frames: the runtime's heartbeat flushes the waiting event.
    (event,) = wait_for(lambda: stream_records(r, keys, "events"), 10, what="queued event")
    assert event["type"] == "face_recognized" and event["name"] == "astronaut"
    assert r.execute_command("GET", keys.snapshot(event["snapshot_id"]), NEVER_DECODE=True)
    recognised = worker.stats().faces_recognised
    worker.feed_until(known_scene, lambda: worker.stats().faces_recognised >= recognised + 2)
    assert len(stream_records(r, keys, "events")) == 1, "debounced after the publish"
