"""The runtime's one event publisher: ordered, bounded retry against a real Redis
that refuses writes (``maxmemory`` reached with ``noeviction``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from shared.keys import STREAM_ANALYSIS, STREAM_EVENTS, Keys
from shared.publishing import EventPublisher, SnapshotSink
from shared.redisutil import EmbeddedRedis, connect, parse_entry, publish_record


@pytest.fixture(scope="module")
def own_redis() -> Iterator[EmbeddedRedis]:
    """A Redis of this module's own: its memory limit is changed."""
    with EmbeddedRedis() as server:
        yield server


@pytest.fixture
def rr(own_redis):
    r = connect(own_redis.url, decode=False)
    r.flushall()
    yield r
    r.config_set("maxmemory", 0)
    r.close()


def full(r) -> None:
    r.config_set("maxmemory-policy", "noeviction")
    r.config_set("maxmemory", 1)  # every write is refused with OOM from now on


def publisher(r, keys: Keys, **kw) -> EventPublisher:
    def publish(stream, record, latest=True):
        return publish_record(r, keys, stream, record, maxlen=1000, latest=latest)

    return EventPublisher("testsvc", publish, SnapshotSink(r, keys, ttl_s=120), **kw)


def events(r, keys: Keys, stream: str = STREAM_EVENTS) -> list[dict]:
    return [parse_entry(i, f) for i, f in r.xrange(keys.stream(stream))]


def test_refused_events_wait_and_are_published_in_order_with_their_snapshots(rr):
    keys = Keys("pub1:")
    pub = publisher(rr, keys)
    assert pub.publish_event({"type": "a", "camera_id": "c/x", "n": 0}) is True
    full(rr)
    jpeg = b"\xff\xd8" + b"j" * 1000 + b"\xff\xd9"
    ev1 = {"type": "a", "camera_id": "c/x", "n": 1}
    assert pub.publish_event(ev1, snapshot=jpeg) is False
    assert ev1["snapshot_id"], "the id is known at once (later events can point at it)"
    assert pub.publish_event({"type": "a", "camera_id": "c/x", "n": 2}) is False
    assert pub.pending == 2 and pub.flush() is False
    assert [e["n"] for e in events(rr, keys)] == [0]

    rr.config_set("maxmemory", 0)
    assert pub.flush() is True and pub.pending == 0
    got = events(rr, keys)
    assert [e["n"] for e in got] == [0, 1, 2], "in order, nothing lost"
    assert rr.get(keys.snapshot(ev1["snapshot_id"])) == jpeg
    assert 0 < rr.ttl(keys.snapshot(ev1["snapshot_id"])) <= 120
    # A later event naming the snapshot keeps it for another ttl.
    rr.expire(keys.snapshot(ev1["snapshot_id"]), 5)
    pub.publish_event({"type": "b", "camera_id": "c/x", "snapshot_id": ev1["snapshot_id"]})
    assert rr.ttl(keys.snapshot(ev1["snapshot_id"])) > 5


def test_the_queue_is_bounded_and_losses_are_counted(rr):
    keys = Keys("pub2:")
    pub = publisher(rr, keys, max_events=10)
    full(rr)
    for n in range(25):
        pub.publish_event({"type": "a", "camera_id": "c/x", "n": n})
    assert pub.pending == 10 and pub.dropped == 15
    rr.config_set("maxmemory", 0)
    assert pub.flush()
    assert [e["n"] for e in events(rr, keys)] == list(range(15, 25)), "the newest are kept"


def test_the_queue_is_bounded_in_bytes(rr):
    keys = Keys("pub3:")
    pub = publisher(rr, keys, max_bytes=100_000)
    full(rr)
    for n in range(10):
        pub.publish_event({"type": "a", "camera_id": "c/x", "n": n}, snapshot=b"x" * 30_000)
    assert pub.pending <= 3 and pub.dropped >= 7


def test_a_result_record_is_written_once_before_its_event(rr):
    keys = Keys("pub4:")
    pub = publisher(rr, keys)
    full(rr)
    ev = {"type": "analysis", "camera_id": "c/x", "analysis_id": None}
    rec = {"type": "analysis", "camera_id": "c/x", "summary": "paid for"}
    assert not pub.publish_event(ev, result=(STREAM_ANALYSIS, rec), result_id_field="analysis_id")
    rr.config_set("maxmemory", 0)
    assert pub.flush()
    (analysis,) = events(rr, keys, STREAM_ANALYSIS)
    (event,) = events(rr, keys)
    assert analysis["summary"] == "paid for" and event["analysis_id"] == analysis["id"]


def test_an_unwritable_record_does_not_block_later_events(rr):
    keys = Keys("pub5:")
    pub = publisher(rr, keys)
    pub.publish_event({"type": "a", "camera_id": "c/x", "bad": object()})
    assert pub.publish_event({"type": "a", "camera_id": "c/x", "n": 1}) is True
    assert [e["n"] for e in events(rr, keys)] == [1] and pub.dropped == 1
