"""Fault: Redis stalls (SIGSTOP for 10 s: connections stay open, nothing answers).

* Frames of the agent already connected keep reaching the subscriber the whole
  time: ingest's frame path never waits on Redis.  The largest gap between two of
  its frames during the stall is measured and bounded.
* A second agent that starts during the stall (its client id needs a Redis round
  trip to bind to its key) cannot register until Redis answers, and then does by
  itself; it never holds up the first agent's frames.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator

import pytest

from shared.keys import Keys
from shared.redisutil import EmbeddedRedis, connect
from shared.security import AgentKeyStore, load_or_create_keypair
from tests.faults.procs import FrameSink, agent_args, approve_agent, ingest_args, service_env
from tests.helpers import wait_for

pytestmark = pytest.mark.faults

STALL_S = 10.0
CAM = "steady/demo-bus"
LATE_CAM = "late/demo-zidane"
#: Largest tolerated gap between two frames of a 6 fps camera during the stall.
MAX_GAP_S = 2.0


@pytest.fixture
def stoppable_redis() -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis().start()
    yield server
    if server.proc is not None:
        os.kill(server.proc.pid, signal.SIGCONT)
    server.close()


def test_sigstopped_redis_does_not_stop_frames(
    stoppable_redis, procs, prefix, tmp_path, port_factory, record_recovery
):
    server = stoppable_redis
    ports = (port_factory(), port_factory(), port_factory())
    state = tmp_path / "state"
    curve = approve_agent(server.url, prefix, state, "steady")
    # The late agent: its own key pair, approved before the stall.
    late_dir = state / "late-keys"
    late_public, _ = load_or_create_keypair(late_dir, "edge")
    r = connect(server.url, timeout=2.0)
    AgentKeyStore(r, Keys(prefix)).approve(late_public)
    late_curve = ["--server-key", str(state / "keys" / "ingest.public"), "--key-dir", str(late_dir)]
    env = service_env(server.url, prefix, state)
    sink = FrameSink(f"tcp://127.0.0.1:{ports[2]}")
    try:
        procs("ingest", ingest_args(ports), env).wait_log("ingest ready", 30)
        procs("agent", agent_args("steady", ports, curve=curve, sources=["demo:bus"]), env)
        wait_for(lambda: sink.count(CAM) >= 5, 40, what="frames before the stall")

        os.kill(server.proc.pid, signal.SIGSTOP)
        stopped = time.monotonic()
        late = procs("late", agent_args("late", ports, curve=late_curve,
                                        sources=["demo:zidane"]), env)  # fmt: skip
        while time.monotonic() - stopped < STALL_S:
            time.sleep(0.2)
        os.kill(server.proc.pid, signal.SIGCONT)
        resumed = time.monotonic()

        with sink.lock:
            times = [t for _s, t in sink.frames[CAM] if stopped <= t <= resumed]
        edges = [stopped, *times, resumed]
        largest_gap = max(b - a for a, b in zip(edges, edges[1:], strict=False))
        assert len(times) >= STALL_S * 2, f"only {len(times)} frames in {STALL_S}s of stall"
        assert largest_gap < MAX_GAP_S, f"frames stopped for {largest_gap:.2f}s"
        with sink.lock:  # its client id could not be bound: nothing of it got through
            assert not [t for _s, t in sink.frames[LATE_CAM] if t < resumed]
        # After the stall the late agent registers by itself and streams.
        wait_for(lambda: sink.count(LATE_CAM, since=resumed) >= 3, 30, what="late agent streams")
        late_after = (sink.first_after(LATE_CAM, resumed) or resumed) - resumed
        assert late.alive()
        print(
            f"[faults] redis SIGSTOP {STALL_S:.0f}s: {len(times)} frames of {CAM} forwarded, "
            f"largest gap {largest_gap:.2f}s; late agent streaming {late_after:.1f}s after SIGCONT"
        )
        record_recovery("redis_sigstop_largest_frame_gap", largest_gap)
        record_recovery("redis_sigstop_late_agent_streams_after_sigcont", late_after)
    finally:
        os.kill(server.proc.pid, signal.SIGCONT)
        sink.close()
        r.close()
