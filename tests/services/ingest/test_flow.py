"""Ingest end to end over real sockets: registry, fan-out, commands, restart."""

from __future__ import annotations

import dataclasses
import json
import time

import zmq

from shared import registry
from shared.protocol import parse_header
from tests.helpers import wait_for

from .emulators import prime


def test_register_fills_registry_with_client_and_cameras(make_server, make_agent, r, keys):
    server = make_server()
    agent = make_agent(server, "edge1", cameras=("front", "back"))
    reply = agent.register(quality=70)
    assert reply["type"] == "ack"

    client = wait_for(lambda: registry.get_client(r, keys, "edge1"), what="client in registry")
    assert client["hostname"] == "edge-1"
    assert client["platform"] == "linux"
    assert client["camera_count"] == 2
    assert client["status"] == "online"
    cams = {c["camera_id"]: c for c in client["cameras"]}
    assert set(cams) == {"edge1/front", "edge1/back"}
    front = cams["edge1/front"]
    assert (front["width"], front["height"], front["quality"]) == (512, 512, 70)
    assert front["target_fps"] == 10.0 and front["streaming"] is True
    assert [c["client_id"] for c in registry.list_clients(r, keys)] == ["edge1"]
    assert server.counters["control_register"] == 1


def test_frames_of_three_cameras_arrive_in_order_untouched(
    make_server, make_agent, make_worker, photo
):
    jpeg, w, h = photo
    server = make_server()
    agent = make_agent(server, "edge1", cameras=("cam1", "cam2", "cam3"))
    agent.register()
    cams = [agent.camera_id(n) for n in agent.cameras]
    worker = make_worker(server, cams)
    for name in agent.cameras:
        prime(agent, worker, name, jpeg, w, h)

    first = {name: agent.seq[name] + 1 for name in agent.cameras}
    for _ in range(20):
        for name in agent.cameras:
            agent.frame(name, jpeg, w, h)
    last = {name: agent.seq[name] for name in agent.cameras}

    def all_arrived() -> bool:
        worker.poll()
        return all(last[n] in worker.seqs(c) for n, c in zip(agent.cameras, cams, strict=True))

    wait_for(all_arrived, what="the last frame of every camera")
    for name, cam in zip(agent.cameras, cams, strict=True):
        got = [s for s in worker.seqs(cam) if s >= first[name]]  # ignore priming frames
        assert got == list(range(first[name], last[name] + 1)), f"{cam} out of order or lost"
        assert worker.seqs(cam) == sorted(set(worker.seqs(cam)))  # priming frames too
    # The JPEG forwarded byte for byte; the header is the agent's plus ingest's
    # receive time ``rx`` (unix ns), stamped after the capture time.
    before_rx = time.time_ns()
    for header, _raw, body in worker.received:
        assert body == jpeg
        sent = parse_header(agent.sent_headers[(header.camera_id, header.seq)])
        assert sent.rx is None and header.rx is not None
        assert dataclasses.replace(header, rx=None) == sent
        assert sent.ts <= header.rx <= before_rx
    stats = server.stats.get("edge1/cam1")
    assert stats is not None and stats.frames_in >= 21 and stats.bytes_in >= 21 * len(jpeg)


def test_topic_filter_cam1_never_yields_cam10(make_server, make_agent, make_worker, photo):
    jpeg, w, h = photo
    server = make_server()
    agent = make_agent(server, "edge1", cameras=("cam1", "cam10"))
    agent.register()
    only1 = make_worker(server, ["edge1/cam1"])
    only10 = make_worker(server, ["edge1/cam10"])
    prime(agent, only1, "cam1", jpeg, w, h)
    prime(agent, only10, "cam10", jpeg, w, h)
    for _ in range(10):
        agent.frame("cam10", jpeg, w, h)
        agent.frame("cam1", jpeg, w, h)
    marker = agent.frame("cam1", jpeg, w, h)
    wait_for(lambda: only1.poll() is not None and marker in only1.seqs("edge1/cam1"))
    wait_for(lambda: only10.poll() is not None and len(only10.seqs("edge1/cam10")) >= 11)
    assert {hd.camera_id for hd, _, _ in only1.received} == {"edge1/cam1"}
    assert {hd.camera_id for hd, _, _ in only10.received} == {"edge1/cam10"}


def test_commands_from_stream_reach_the_agent(make_server, make_agent, r, keys):
    server = make_server()
    agent = make_agent(server, "edge1", cameras=("cam1", "cam2"))
    agent.register()

    registry.send_command(r, keys, "edge1", "stop_streaming", camera="cam2")
    msg = agent.recv()
    assert msg == {"type": "stop_streaming", "camera": "cam2"}

    registry.send_command(r, keys, "edge1", "update_streaming_settings", quality=55, fps=2.5)
    msg = agent.recv()
    assert msg == {
        "type": "update_streaming_settings", "camera": None, "quality": 55, "fps": 2.5,
    }  # fmt: skip

    registry.send_command(r, keys, "edge1", "start_streaming")
    assert agent.recv() == {"type": "start_streaming", "camera": None}

    # Unknown client, unknown camera: counted, nothing sent, service keeps going.
    registry.send_command(r, keys, "nobody", "start_streaming")
    registry.send_command(r, keys, "edge1", "start_streaming", camera="nope")
    wait_for(lambda: server.counters["commands_undeliverable"] == 2, what="undeliverable")
    assert agent.no_message(0.2)
    registry.send_command(r, keys, "edge1", "stop_streaming", camera="cam1")
    assert agent.recv() == {"type": "stop_streaming", "camera": "cam1"}
    wait_for(lambda: server.counters["commands_sent"] == 4, what="4 commands counted")


def test_heartbeat_without_session_gets_reregister(make_server, make_agent):
    server = make_server()
    agent = make_agent(server, "edge1")
    reply = agent.heartbeat()
    assert reply["type"] == "reregister"
    agent.send("camera_info", camera={"name": "cam1", "quality": 50})
    assert agent.recv()["type"] == "reregister"
    agent.register()
    assert agent.heartbeat()["type"] == "ack"
    assert server.counters["reregister_sent"] == 2


def test_heartbeat_stores_agent_stats_and_camera_info_updates(make_server, make_agent, r, keys):
    server = make_server()
    agent = make_agent(server, "edge1", cameras=("cam1",))
    agent.register()
    before = wait_for(lambda: registry.get_client(r, keys, "edge1"))["last_seen"]
    reply = agent.heartbeat({"cam1": {"fps": 9.5, "dropped": 3}, "ghost": {"fps": 1.0}})
    assert reply["type"] == "ack"

    def agent_stats():
        cam = registry.get_camera(r, keys, "edge1/cam1")
        return cam if cam and "agent_fps" in cam else None

    cam = wait_for(agent_stats, what="agent stats on the camera hash")
    assert cam["agent_fps"] == 9.5 and cam["agent_dropped"] == 3
    assert registry.get_camera(r, keys, "edge1/ghost") is None
    assert registry.get_client(r, keys, "edge1")["last_seen"] >= before

    agent.send("camera_info", camera={"name": "cam1", "streaming": False, "quality": 40})
    assert agent.recv()["type"] == "ack"
    wait_for(lambda: registry.get_camera(r, keys, "edge1/cam1")["quality"] == 40)
    assert registry.get_camera(r, keys, "edge1/cam1")["streaming"] is False

    # A camera that appears later (hot-plugged) joins the registry.
    agent.send("camera_info", camera={"name": "usb2", "kind": "usb", "width": 640})
    assert agent.recv()["type"] == "ack"
    cam = wait_for(lambda: registry.get_camera(r, keys, "edge1/usb2"))
    assert cam["width"] == 640
    assert {c["camera_id"] for c in registry.list_cameras(r, keys, "edge1")} == {
        "edge1/cam1",
        "edge1/usb2",
    }


def test_ingest_stats_are_flushed_to_camera_hash(
    make_server, make_agent, make_worker, r, keys, photo
):
    jpeg, w, h = photo
    server = make_server(stats_interval_s=0.1)
    agent = make_agent(server, "edge1")
    agent.register()
    worker = make_worker(server, ["edge1/cam1"])
    prime(agent, worker, "cam1", jpeg, w, h)
    for _ in range(10):
        agent.frame("cam1", jpeg, w, h)
    sent = agent.seq["cam1"]

    def flushed():
        cam = registry.get_camera(r, keys, "edge1/cam1")
        return cam if cam and cam.get("frames_in") == sent else None

    cam = wait_for(flushed, what="frames_in flushed")
    assert cam["bytes_in"] == sent * len(jpeg)
    assert cam["fps_in"] > 0 and cam["kbps_in"] > 0
    assert cam["last_frame_ts"] > 0


def test_restart_on_same_ports_then_reregister_resumes_frames(
    make_server, make_agent, make_worker, photo
):
    jpeg, w, h = photo
    first = make_server()
    ports = dict(
        frame_port=first.frame_port, control_port=first.control_port, pub_port=first.pub_port
    )
    agent = make_agent(first, "edge1")
    agent.register()
    worker = make_worker(first, ["edge1/cam1"])
    prime(agent, worker, "cam1", jpeg, w, h)
    first.stop()

    second = make_server(**ports)
    assert (second.frame_port, second.control_port, second.pub_port) == tuple(ports.values())
    # The DEALER reconnects by itself; the new process has no session for it.
    assert agent.heartbeat()["type"] == "reregister"
    for _ in range(5):
        agent.frame("cam1", jpeg, w, h)
    wait_for(lambda: second.counters["unregistered"] >= 5, what="frames dropped as unregistered")

    agent.register()
    worker.received.clear()
    prime(agent, worker, "cam1", jpeg, w, h)
    seq = agent.frame("cam1", jpeg, w, h)
    wait_for(lambda: worker.poll() is not None and seq in worker.seqs("edge1/cam1"))
    assert agent.heartbeat()["type"] == "ack"


def test_new_routing_id_replaces_old_session(make_server, make_agent, r, keys):
    server = make_server(health_interval_s=0.1)
    old = make_agent(server, "edge1")
    old.register()
    new = make_agent(server, "edge1")  # agent restarted: new DEALER, same client id
    new.register()
    assert new.heartbeat()["type"] == "ack"
    assert old.heartbeat()["type"] == "reregister"
    assert len(server.sessions) == 1

    sub = r.pubsub(ignore_subscribe_messages=True)
    sub.subscribe(keys.notify)
    new.send("bye")
    assert new.no_message(0.2)  # bye is not answered

    def offline():
        msg = sub.get_message(timeout=0.1)
        return msg and json.loads(msg["data"]).get("status") == "offline"

    wait_for(offline, what="client_status offline after bye")
    sub.close()
    assert len(server.sessions) == 0


def test_slow_subscriber_loses_frames_instead_of_stalling_ingest(
    make_server, make_agent, make_worker, ctx, photo
):
    jpeg, w, h = photo
    server = make_server(pub_hwm=2)
    agent = make_agent(server, "edge1")
    agent.register()
    stalled = make_worker(server, ["edge1/cam1"])
    stalled.sub.setsockopt(zmq.RCVHWM, 2)
    prime(agent, stalled, "cam1", jpeg, w, h)
    sent_before = server.counters["frames_out"]
    total = 600  # ~25 MB: more than the kernel's loopback buffers hold
    for _ in range(total):
        agent.frame("cam1", jpeg, w, h)
    # Ingest published every frame even though nobody read them...
    wait_for(lambda: server.counters["frames_out"] >= sent_before + total, what="all published")
    # ...and the subscriber that did not read gets only what the bounded queues held.
    stalled.received.clear()
    while stalled.poll(0.2):
        pass
    assert 0 < len(stalled.received) < total


def test_ingest_runs_its_sockets_on_the_configured_io_threads(
    make_server, make_agent, make_worker, photo
):
    jpeg, w, h = photo
    server = make_server(io_threads=2)
    assert server.ctx.get(zmq.IO_THREADS) == 2
    agent = make_agent(server, "edge1", cameras=("front",))
    assert agent.register()["type"] == "ack"
    worker = make_worker(server, [agent.camera_id("front")])
    prime(agent, worker, "front", jpeg, w, h)  # frames flow end to end
