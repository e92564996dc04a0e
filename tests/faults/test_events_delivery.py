"""Fault 7: at-least-once delivery of ``events`` to an integration.

A consumer (its own process) reads entries in a consumer group, acknowledges only
some, and is killed -9 before the rest are acknowledged.  A second consumer takes the
pending entries over with XAUTOCLAIM once they are idle long enough: every event is
handled, what was acknowledged is not redelivered, and nothing stays pending.
"""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from shared.events import EventConsumer
from shared.keys import STREAM_EVENTS
from shared.redisutil import connect, publish_record
from tests.faults.procs import ROOT, service_env
from tests.helpers import wait_for

pytestmark = pytest.mark.faults

MIN_IDLE_MS = 500


def test_events_survive_a_consumer_killed_before_ack(
    redis_url, prefix, keys, r, state_dir, tmp_path, record_recovery
):
    stream = keys.stream(STREAM_EVENTS)
    written = [
        publish_record(
            r,
            keys,
            STREAM_EVENTS,
            {"type": "object_entered", "camera_id": "int/cam", "event_id": f"e{i}"},
            maxlen=100_000,
            latest=False,
        )
        for i in range(50)
    ]
    env = service_env(redis_url, prefix, state_dir)
    out = tmp_path / "consumer-a.out"
    with open(out, "w") as fh:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.faults.events_consumer",
                "--url",
                redis_url,
                "--prefix",
                prefix,
                "--group",
                "integration",
                "--name",
                "a",
                "--read",
                "20",
                "--ack-first",
                "5",
            ],
            env=env,
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=fh,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for(
            lambda: "READ-DONE" in out.read_text() or proc.poll() is not None,
            30,
            what="consumer A read its batch",
        )
        assert proc.poll() is None, out.read_text()
        read_by_a = out.read_text().split()[:-1]
        assert read_by_a == written[:20]
        proc.kill()  # dies between reading and acknowledging
        proc.wait(10)
        killed = time.monotonic()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)

    # Read, not acknowledged, owner gone: exactly the 15 entries A did not ack.
    rows = r.xpending_range(stream, "integration", "-", "+", 100)
    assert [row["message_id"] for row in rows] == written[5:20]
    assert {row["consumer"] for row in rows} == {"a"}

    b = EventConsumer(connect(redis_url), keys, "integration", "b")
    handled: list[str] = []
    # Too fresh to be claimed: the owner might still be working on them.
    assert b.claim_stale(min_idle_ms=10_000) == []
    claimed_at = None

    def drain() -> bool:
        nonlocal claimed_at
        batch = b.claim_stale(min_idle_ms=MIN_IDLE_MS) + b.read(block_ms=None)
        for rec in batch:
            handled.append(rec["id"])  # the integration's work, then the ack
            b.ack(rec["id"])
        if claimed_at is None and set(written[5:20]) <= set(handled):
            claimed_at = time.monotonic()
        return set(handled) >= set(written[5:]) and not batch

    wait_for(drain, 10, interval=0.1, what="consumer B handled every unacknowledged event")
    assert sorted(handled) == sorted(written[5:])  # the 5 acknowledged are not redelivered
    assert len(handled) == len(set(handled))
    assert b.pending_count() == 0
    info = {g["name"]: g for g in r.xinfo_groups(stream)}["integration"]
    assert info["pending"] == 0 and info["last-delivered-id"] == written[-1]
    record_recovery("events_consumer_kill9_claimed_after", (claimed_at or killed) - killed)
