"""At-least-once consumption of the events stream with consumer groups."""

from __future__ import annotations

from shared.events import EventConsumer
from shared.redisutil import publish_record


def _publish(r, keys, n: int) -> list[str]:
    return [publish_record(r, keys, "events", {"type": "object_entered", "camera_id": "c/cam", "n": i},
                           maxlen=1000) for i in range(n)]  # fmt: skip


def test_a_consumer_that_dies_before_ack_loses_nothing(r, keys) -> None:
    ids = _publish(r, keys, 5)
    a = EventConsumer(r, keys, "integration", "a")
    got = a.read(count=10, block_ms=100)
    assert [e["id"] for e in got] == ids and got[0]["n"] == 0
    a.ack(*ids[:2])  # handled two, then "dies"

    b = EventConsumer(r, keys, "integration", "b")
    assert b.read(block_ms=50) == []  # nothing new...
    claimed = b.claim_stale(min_idle_ms=0)
    assert [e["id"] for e in claimed] == ids[2:]  # ...but a's unacknowledged ones are claimed
    b.ack(*[e["id"] for e in claimed])
    assert b.pending_count() == 0


def test_restarted_consumer_gets_its_unacked_entries_again(r, keys) -> None:
    ids = _publish(r, keys, 3)
    EventConsumer(r, keys, "g", "worker-1").read(block_ms=50)  # read, never acked
    again = EventConsumer(r, keys, "g", "worker-1")  # same name after a restart
    assert [e["id"] for e in again.read(block_ms=50)] == ids
    again.ack(*ids)
    more = _publish(r, keys, 1)
    assert [e["id"] for e in again.read(block_ms=50)] == more


def test_group_from_now_skips_history(r, keys) -> None:
    _publish(r, keys, 2)
    c = EventConsumer(r, keys, "live", "x", start="$")
    assert c.read(block_ms=50) == []
    new = _publish(r, keys, 1)
    assert [e["id"] for e in c.read(block_ms=50)] == new
