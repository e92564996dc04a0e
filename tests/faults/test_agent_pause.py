"""Fault 4: the agent's network is cut for ~8 s (SIGSTOP: no frames, no heartbeats,
no replies read, the TCP connections stay half-alive), then it continues (SIGCONT).

Ingest marks the client ``stale`` while it is silent (stale_after_s=2) and, past
offline_after_s=6, ``offline`` with its session expired, so the agent *must*
register again: its control channel sees no reply for longer than its reply timeout,
recreates the socket and registers.  Frames flow again within 10 s.
"""

from __future__ import annotations

import signal
import time

import pytest

from shared.registry import get_client
from tests.faults.procs import FrameSink, agent_args, approve_agent, ingest_args, service_env
from tests.helpers import wait_for

pytestmark = pytest.mark.faults

CAMS = ("paused/demo-bus", "paused/demo-astronaut")
CUT_S = 8.0
RECOVERY_S = 10.0


def test_agent_recovers_after_network_cut(
    procs, redis_url, prefix, keys, r, tmp_path, port_factory, record_recovery
):
    ports = (port_factory(), port_factory(), port_factory())
    state = tmp_path / "state"
    curve = approve_agent(redis_url, prefix, state, "paused")
    env = service_env(
        redis_url,
        prefix,
        state,
        SENTRI_INGEST__STALE_AFTER_S="2",
        SENTRI_INGEST__OFFLINE_AFTER_S="6",
    )
    ingest = procs("ingest", ingest_args(ports), env)
    ingest.wait_log("ingest ready", 30)
    sink = FrameSink(f"tcp://127.0.0.1:{ports[2]}")
    try:
        agent = procs(
            "agent",
            agent_args("paused", ports, curve=curve, sources=["demo:bus", "demo:astronaut"]),
            env,
        )
        wait_for(lambda: all(sink.count(c) >= 3 for c in CAMS), 40, what="frames of both cameras")
        wait_for(lambda: r.hget(keys.client("paused"), "status") == "online", 10, what="online")

        agent.signal(signal.SIGSTOP)
        stopped, stopped_wall = time.monotonic(), time.time()
        statuses = []

        def status_is(want: str) -> bool:
            s = r.hget(keys.client("paused"), "status")
            if not statuses or statuses[-1] != s:
                statuses.append(s)
            return s == want

        wait_for(lambda: status_is("stale"), CUT_S - 1, what="ingest shows the client stale")
        stale_after = time.monotonic() - stopped
        # The cut is real: nothing of this agent reaches subscribers while it is stopped.
        assert sum(sink.count(c, since=stopped + 0.5) for c in CAMS) == 0
        remaining = CUT_S - (time.monotonic() - stopped)
        if remaining > 0:
            time.sleep(remaining)  # the fault's duration, not a wait for an event
        status_is("?")
        assert sum(sink.count(c, since=stopped + 0.5) for c in CAMS) == 0

        agent.signal(signal.SIGCONT)
        resumed = time.monotonic()
        wait_for(
            lambda: all(sink.count(c, since=resumed) >= 3 for c in CAMS),
            RECOVERY_S,
            what="frames of both cameras within 10 s of the network coming back",
        )
        recovered = max(sink.first_after(c, resumed) or 0 for c in CAMS) - resumed
        client = wait_for(
            lambda: (
                (c := get_client(r, keys, "paused")) and c["registered_at"] > stopped_wall and c
            ),
            RECOVERY_S,
            what="agent registered again",
        )
        wait_for(lambda: status_is("online"), RECOVERY_S, what="client online again")
        assert "stale" in statuses and "offline" in statuses, statuses
        assert len(client["cameras"]) == 2
        assert agent.alive()
        assert "session expired" in ingest.log_text()
        record_recovery("agent_cut_stale_shown_after", stale_after)
        record_recovery("agent_cut_8s_frames_after_resume", recovered)
    finally:
        sink.close()
