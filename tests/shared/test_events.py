"""At-least-once consumption of the events stream with consumer groups."""

from __future__ import annotations

import time

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


def test_claim_stale_honours_min_idle_time(r, keys) -> None:
    ids = _publish(r, keys, 2)
    EventConsumer(r, keys, "idle", "a").read(block_ms=50)  # a holds them, alive and busy
    b = EventConsumer(r, keys, "idle", "b")
    assert b.claim_stale(min_idle_ms=60_000) == [], "entries of a live consumer were stolen"
    time.sleep(0.15)  # let them become idle for longer than 100 ms
    assert [e["id"] for e in b.claim_stale(min_idle_ms=100)] == ids


def _trim(r, keys, keep: int) -> None:
    r.xtrim(keys.stream("events"), maxlen=keep, approximate=False)


def test_entries_trimmed_while_pending_are_never_handed_out_but_counted(r, keys) -> None:
    ids = _publish(r, keys, 5)
    EventConsumer(r, keys, "slow", "a").read(block_ms=50)  # read, never acked
    _trim(r, keys, 2)  # MAXLEN trims 3 of the 5 pending entries
    again = EventConsumer(r, keys, "slow", "a")  # restart with the same name
    got = again.read(block_ms=50)
    assert [e["id"] for e in got] == ids[3:], "no phantom {id} records"
    assert all(e.get("type") == "object_entered" for e in got)
    assert again.lost == 3 and again.pending_count() == 2


def test_claim_stale_drops_trimmed_entries_of_a_dead_consumer(r, keys) -> None:
    ids = _publish(r, keys, 4)
    EventConsumer(r, keys, "dead", "a").read(block_ms=50)  # a dies holding 4
    _trim(r, keys, 1)
    b = EventConsumer(r, keys, "dead", "b")
    claimed = b.claim_stale(min_idle_ms=0)
    assert [e["id"] for e in claimed] == ids[3:]
    assert b.lost == 3 and b.pending_count() == 1
