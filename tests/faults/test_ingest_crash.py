"""Fault 1: ingest dies (kill -9) mid-stream and is restarted on the same ports.

The agent notices (its heartbeat gets ``reregister`` from the new ingest, or its
reply timeout recreates the socket), registers again, and frames reach a
subscriber within 10 s of the new ingest being ready, with no manual step.
"""

from __future__ import annotations

import time

import pytest

from shared.registry import get_client
from tests.faults.procs import FrameSink, agent_args, approve_agent, ingest_args, service_env
from tests.helpers import wait_for

pytestmark = pytest.mark.faults

CAMS = ("crash/demo-bus", "crash/demo-zidane")
RECOVERY_S = 10.0


def test_agent_recovers_after_ingest_kill9(
    procs, redis_url, prefix, keys, r, tmp_path, port_factory, record_recovery
):
    ports = (port_factory(), port_factory(), port_factory())
    state = tmp_path / "state"
    curve = approve_agent(redis_url, prefix, state, "crash")
    env = service_env(redis_url, prefix, state)
    ingest = procs("ingest", ingest_args(ports), env)
    ingest.wait_log("ingest ready", 30)
    assert "security=curve" in ingest.log_text()  # the default: CURVE, approved agent key
    sink = FrameSink(f"tcp://127.0.0.1:{ports[2]}")
    try:
        agent = procs(
            "agent",
            agent_args("crash", ports, curve=curve, sources=["demo:bus", "demo:zidane"]),
            env,
        )
        wait_for(lambda: all(sink.count(c) >= 3 for c in CAMS), 40, what="frames of both cameras")
        first_registration = get_client(r, keys, "crash")["registered_at"]

        ingest.kill9()
        killed = time.monotonic()
        killed_wall = time.time()
        restarted = procs("ingest-restarted", ingest_args(ports), env)
        restarted.wait_log("ingest ready", 30)
        ready = time.monotonic()
        # The kill really cut the stream: nothing arrived between the kill and the restart.
        with sink.lock:
            assert not [
                t
                for c in CAMS
                for _s, t in sink.frames[c]
                if killed + 0.2 < t < restarted.started_at
            ]
        wait_for(
            lambda: all(sink.count(c, since=ready) >= 3 for c in CAMS),
            RECOVERY_S,
            what="frames of both cameras again within 10 s of the new ingest",
        )
        recovered = max(sink.first_after(c, ready) or 0 for c in CAMS)
        # The agent registered again with the new ingest (its session was lost).
        client = wait_for(
            lambda: (c := get_client(r, keys, "crash")) and c["registered_at"] > killed_wall and c,
            RECOVERY_S,
            what="agent re-registered",
        )
        assert client["registered_at"] > first_registration
        assert "client registered" in restarted.log_text()
        assert agent.alive(), agent.log_text()[-2000:]
        # Per-camera order survives the restart (the agent's seq keeps counting).
        with sink.lock:
            for cam in CAMS:
                seqs = [s for s, _t in sink.frames[cam]]
                assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs), cam
        record_recovery("ingest_kill9_frames_after_restart", recovered - ready)
        record_recovery("ingest_kill9_outage_total", recovered - killed)
    finally:
        sink.close()
