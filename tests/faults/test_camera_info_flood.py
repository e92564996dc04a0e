"""Fault: an approved agent sends 1,000 ``camera_info`` messages, each naming a new
camera.  The session and the registry hold at most the per-client camera cap, every
message is answered, and ingest stays responsive: another agent's frames keep
reaching the subscriber and its heartbeats are answered throughout."""

from __future__ import annotations

import time

import pytest
import zmq

from shared.keys import Keys
from shared.protocol import MAX_CAMERAS_PER_CLIENT
from shared.redisutil import connect
from shared.security import AgentKeyStore, generate_keypair, load_or_create_keypair
from tests.faults.procs import FrameSink, ingest_args, service_env
from tests.helpers import encode_jpeg, wait_for
from tests.services.ingest.emulators import Agent

pytestmark = pytest.mark.faults

FLOOD = 1000


def test_camera_info_flood_is_capped_and_ingest_stays_responsive(
    redis_url, procs, prefix, tmp_path, port_factory, record_recovery
):
    import numpy as np

    ports = (port_factory(), port_factory(), port_factory())
    state = tmp_path / "state"
    server_public, _ = load_or_create_keypair(state / "keys", "ingest")
    keys = Keys(prefix)
    r = connect(redis_url)
    store = AgentKeyStore(r, keys)
    flooder_key, honest_key = generate_keypair(), generate_keypair()
    store.approve(flooder_key[0])
    store.approve(honest_key[0])
    procs("ingest", ingest_args(ports), service_env(redis_url, prefix, state)).wait_log(
        "ingest ready", 30
    )
    ctx = zmq.Context()
    img = np.zeros((240, 320, 3), np.uint8)
    img[::8] = 255
    jpeg = encode_jpeg(img)
    sink = FrameSink(f"tcp://127.0.0.1:{ports[2]}")
    flooder = Agent(ctx, "flood", control_port=ports[1], frame_port=ports[0],
                    curve=(*flooder_key, server_public))  # fmt: skip
    honest = Agent(ctx, "honest", control_port=ports[1], frame_port=ports[0],
                   curve=(*honest_key, server_public))  # fmt: skip
    try:
        flooder.register()
        honest.register()
        wait_for(lambda: _frame(honest, jpeg) and sink.count("honest/cam1") > 0, 10,
                 what="honest frames")  # fmt: skip
        started = time.monotonic()
        worst_heartbeat = 0.0
        answered = 0
        for i in range(FLOOD):
            flooder.send("camera_info", camera={"name": f"new{i}", "quality": 50})
            if i % 50 == 49:  # read the replies in batches (ingest's send HWM is 100)
                for _ in range(50):
                    assert flooder.recv(10)["type"] == "ack"
                    answered += 1
                _frame(honest, jpeg)
                t = time.monotonic()
                assert honest.heartbeat()["type"] == "ack"
                worst_heartbeat = max(worst_heartbeat, time.monotonic() - t)
        assert answered == FLOOD
        flood_s = time.monotonic() - started
        wait_for(lambda: r.hget(keys.client("flood"), "camera_count") == str(
            MAX_CAMERAS_PER_CLIENT), 10, what="camera count at the cap")  # fmt: skip
        cams = r.smembers(keys.client_cameras("flood"))
        assert len(cams) == MAX_CAMERAS_PER_CLIENT
        assert len(r.smembers(keys.cameras)) == MAX_CAMERAS_PER_CLIENT + 1
        before = sink.count("honest/cam1")
        _frame(honest, jpeg)
        wait_for(lambda: sink.count("honest/cam1") > before, 5, what="frames after the flood")
        print(
            f"[faults] camera_info flood: {FLOOD} messages answered in {flood_s:.2f}s, "
            f"{len(cams)} cameras kept (cap {MAX_CAMERAS_PER_CLIENT}), slowest heartbeat "
            f"reply of the other agent {worst_heartbeat * 1000:.0f} ms"
        )
        record_recovery("camera_info_flood_slowest_heartbeat_reply", worst_heartbeat)
    finally:
        flooder.close()
        honest.close()
        sink.close()
        ctx.destroy(linger=0)
        r.close()


def _frame(agent: Agent, jpeg: bytes) -> bool:
    agent.frame("cam1", jpeg, 320, 240)
    return True
