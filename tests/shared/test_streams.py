"""The one Redis stream follower (sync and asyncio) against a real Redis."""

from __future__ import annotations

import asyncio
import threading

import redis.asyncio as aredis

from shared.redisutil import EmbeddedRedis, connect, publish_record
from shared.streams import AsyncStreamFollower, StreamFollower
from tests.helpers import wait_for


def add(r, keys, stream: str, n: int) -> str:
    return publish_record(r, keys, stream, {"type": "t", "camera_id": "c/x", "n": n}, maxlen=1000)


def test_follows_from_now_in_order_across_streams_and_resumes_after_its_position(r, keys):
    add(r, keys, "events", -1)  # before the follower: not handed out
    f = StreamFollower(r, {"events": keys.stream("events"), "faces": keys.stream("faces")})
    assert f.read(block_ms=0) == [] and f.ready.is_set()
    add(r, keys, "events", 0)  # between start and the first blocking read: not lost
    add(r, keys, "faces", 1)
    add(r, keys, "events", 2)
    got = f.read(block_ms=100)
    assert sorted((e.name, e.record()["n"]) for e in got) == [
        ("events", 0), ("events", 2), ("faces", 1)
    ]  # fmt: skip
    assert [e.record()["n"] for e in got if e.name == "events"] == [0, 2]
    assert got[0].fields["camera_id"] == "c/x", "flat fields without parsing the JSON"
    assert f.read(block_ms=0) == [], "nothing handed out twice"
    # A new follower resuming from a saved position sees only what came after it.
    g = StreamFollower(r, [keys.stream("events")], start=dict(f.positions))
    add(r, keys, "events", 3)
    assert [e.record()["n"] for e in g.read(block_ms=100)] == [3]


def test_run_survives_a_failing_handler_and_a_redis_outage(keys):
    with EmbeddedRedis() as server:
        r = connect(server.url)
        seen: list[int] = []

        def handle(entry):
            n = entry.record()["n"]
            if n == 1:
                raise RuntimeError("handler bug")
            seen.append(n)

        stop = threading.Event()
        f = StreamFollower(r, {"events": keys.stream("events")}, block_ms=100)
        t = threading.Thread(target=f.run, args=(handle, stop), daemon=True)
        t.start()
        wait_for(f.ready.is_set, 5, what="follower ready")
        for n in range(3):
            add(r, keys, "events", n)
        wait_for(lambda: seen == [0, 2], 5, what="entries after the failing one")
        port = server.port
        server.stop()  # Redis gone: run() retries with backoff instead of dying
        wait_for(lambda: f._backoff > 0.1, 5, what="a failed read")
        assert t.is_alive()
        server.port = port
        server.start()
        r2 = connect(server.url)
        add(r2, keys, "events", 7)
        wait_for(lambda: seen[-1:] == [7], 15, what="reading again after Redis came back")
        stop.set()
        t.join(5)
        assert not t.is_alive()


def test_async_follower(redis_url, keys, r):
    async def main() -> list[int]:
        ar = aredis.Redis.from_url(redis_url, decode_responses=True)
        seen: list[int] = []
        done = asyncio.Event()
        f = AsyncStreamFollower(ar, {"analysis": keys.stream("analysis")}, block_ms=100)

        async def handle(entry):
            seen.append(entry.record()["n"])
            if len(seen) == 2:
                done.set()

        task = asyncio.create_task(f.run(handle, stopping=done.is_set))
        while not f.ready.is_set():
            await asyncio.sleep(0.01)
        add(r, keys, "analysis", 5)
        add(r, keys, "analysis", 6)
        await asyncio.wait_for(done.wait(), 5)
        await asyncio.wait_for(task, 5)
        await ar.aclose()
        return seen

    assert asyncio.run(main()) == [5, 6]
