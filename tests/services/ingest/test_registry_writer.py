"""The registry writer keeps one pending write per key, also across a failed write."""

from __future__ import annotations

import threading

import redis

from services.ingest.registry_writer import RegistryWriter
from tests.helpers import wait_for


def test_a_write_queued_while_its_key_fails_replaces_it_instead_of_queueing_twice():
    applied: list[str] = []
    in_flight, release = threading.Event(), threading.Event()
    attempts = [0]

    def first() -> None:  # the first heartbeat: Redis fails once, while a newer one queues
        attempts[0] += 1
        if attempts[0] == 1:
            in_flight.set()
            release.wait(5)
            raise redis.ConnectionError("down")
        applied.append("old")

    writer = RegistryWriter(retry_min_s=0.05, retry_max_s=0.05)
    writer.submit("heartbeat c", first, key="heartbeat:c")
    writer.start()
    try:
        assert in_flight.wait(5)
        writer.submit("camera_info c/1", lambda: applied.append("camera"))
        writer.submit("heartbeat c", lambda: applied.append("new"), key="heartbeat:c")
        release.set()
        wait_for(lambda: writer.errors == 1, what="the failed write")
        assert writer.queued().count("heartbeat c") <= 1  # one waiting (or in flight)
        assert writer.wait_idle(5)
        # newest heartbeat data, in the first heartbeat's place, applied once
        assert applied == ["new", "camera"]
    finally:
        writer.stop()
