"""The agent against ingest's side of the protocol on real ZeroMQ sockets."""

from __future__ import annotations

import threading
import time

import cv2
import numpy as np
import pytest
from prometheus_client import generate_latest

from shared.metrics import INVALID_INPUT
from tests.edge_agent.fake_ingest import FakeIngest, Received
from tests.helpers import wait_for

CLIENT = "test-edge"


def cam_id(name: str) -> str:
    return f"{CLIENT}/{name}"


def rate_from_capture_ts(frames: list[Received]) -> float:
    """Frames per second measured on the agent's own capture timestamps: the median
    interval, so that one pause of a loaded box does not read as a wrong rate."""
    assert len(frames) >= 5
    gaps = np.diff([f.header.ts for f in frames]) / 1e9
    return float(1 / np.median(gaps))


def camera_info_for(ing: FakeIngest, name: str, since: float, **expect) -> dict:
    def match():
        for m in ing.of_type("camera_info", since):
            cam = m["camera"]
            if cam["name"] == name and all(cam.get(k) == v for k, v in expect.items()):
                return cam
        return None

    return wait_for(match, timeout=5, what=f"camera_info {name} {expect}")


def test_three_demo_cameras_stream_valid_frames_at_requested_rate(ingest, agent_factory):
    names = ["demo-bus", "demo-zidane", "demo-astronaut"]
    agent_factory(ingest, ["demo:bus", "demo:zidane", "demo:astronaut"], fps=8)

    wait_for(
        lambda: all(len(ingest.frames_of(cam_id(n))) >= 14 for n in names),
        timeout=15,
        what="14 frames from each camera",
    )
    assert ingest.invalid == []  # every frame passed decode_frame (header dims == JPEG dims)
    assert ingest.camera_ids() == {cam_id(n) for n in names}
    for n in names:
        frames = ingest.frames_of(cam_id(n))
        seqs = [f.header.seq for f in frames]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs), seqs
        assert all((f.header.w, f.header.h) == (640, 480) for f in frames)
        assert all(f.header.client_id == CLIENT for f in frames)
        assert all(f.header.motion is not None and 0 <= f.header.motion <= 1 for f in frames)
        # Skip the first frames: the rate settles once the pipeline runs.
        assert 8 * 0.6 <= rate_from_capture_ts(frames[3:]) <= 8 * 1.25
        img = cv2.imdecode(np.frombuffer(ingest.last_jpeg[cam_id(n)], np.uint8), cv2.IMREAD_COLOR)
        assert img is not None and img.shape == (480, 640, 3)
        # A real photo, not a blank frame.
        assert float(img.std()) > 20


def test_register_carries_client_and_camera_properties(ingest, agent_factory):
    agent_factory(ingest, ["demo:bus", "lobby=demo:coffee?fps=12"], fps=5, quality=70)
    reg = wait_for(lambda: ingest.of_type("register"), timeout=5, what="register")[0]
    assert reg["client_id"] == CLIENT
    assert reg["agent"] == "sentri-edge"
    assert reg["hostname"] and reg["platform"] and reg["version"]
    cams = {c["name"]: c for c in reg["cameras"]}
    assert set(cams) == {"demo-bus", "lobby"}
    bus = cams["demo-bus"]
    assert bus["source"] == "demo:bus"
    assert (bus["kind"], bus["backend"]) == ("demo", "demo")
    assert (bus["width"], bus["height"]) == (640, 480)
    assert bus["fps"] == 30.0  # the demo "camera" runs at 30 fps
    assert bus["target_fps"] == 5.0 and bus["quality"] == 70
    assert bus["streaming"] is True and bus["motion_gate"] is False
    assert cams["lobby"]["fps"] == 12.0 and cams["lobby"]["source"] == "demo:coffee?fps=12"


def test_stop_streaming_stops_only_that_camera_and_start_resumes(ingest, agent_factory):
    agent_factory(ingest, ["demo:bus", "demo:zidane"], fps=10)
    bus, zid = cam_id("demo-bus"), cam_id("demo-zidane")
    wait_for(lambda: ingest.frames_of(bus) and ingest.frames_of(zid), what="frames from both")

    t = time.monotonic()
    ingest.send(CLIENT, "stop_streaming", camera="demo-bus")
    camera_info_for(ingest, "demo-bus", t, streaming=False)
    # The reply is sent after the camera stopped: frames already in flight may still
    # arrive, none captured after it (the agent's clock is this host's).
    confirmed_ns = time.time_ns()
    quiet_from = time.monotonic()
    wait_for(lambda: len(ingest.frames_of(zid, quiet_from)) >= 10, what="zidane keeps streaming")
    assert [f for f in ingest.frames_of(bus, quiet_from) if f.header.ts > confirmed_ns] == []
    last_seq = ingest.frames_of(bus)[-1].header.seq

    t = time.monotonic()
    ingest.send(CLIENT, "start_streaming", camera="demo-bus")
    camera_info_for(ingest, "demo-bus", t, streaming=True)
    resumed = wait_for(lambda: ingest.frames_of(bus, t), what="bus resumes")
    assert resumed[0].header.seq > last_seq
    assert ingest.invalid == []


def test_update_streaming_settings_changes_jpeg_size_and_rate(ingest, agent_factory):
    agent_factory(ingest, ["demo:bus"], fps=10, quality=90)
    bus = cam_id("demo-bus")
    before = wait_for(
        lambda: ingest.frames_of(bus)[-8:] if len(ingest.frames_of(bus)) >= 8 else None
    )
    size_before = np.mean([f.size for f in before])

    t = time.monotonic()
    ingest.send(CLIENT, "update_streaming_settings", camera="demo-bus", quality=20)
    camera_info_for(ingest, "demo-bus", t, quality=20)
    start = time.monotonic() + 0.3
    after = wait_for(
        lambda: (
            ingest.frames_of(bus, start)[-8:] if len(ingest.frames_of(bus, start)) >= 8 else None
        )
    )
    size_after = np.mean([f.size for f in after])
    assert size_after < 0.6 * size_before, (size_before, size_after)

    # Without a camera the command addresses every camera of the agent.
    t = time.monotonic()
    ingest.send(CLIENT, "update_streaming_settings", fps=4.0)
    camera_info_for(ingest, "demo-bus", t, target_fps=4.0, quality=20)
    start = time.monotonic() + 0.5
    slow = wait_for(
        lambda: ingest.frames_of(bus, start) if len(ingest.frames_of(bus, start)) >= 7 else None,
        timeout=15,
    )
    assert 4 * 0.6 <= rate_from_capture_ts(slow) <= 4 * 1.25


def test_reregisters_when_ingest_asks(ingest, agent_factory):
    agent = agent_factory(ingest, ["demo:coffee"], fps=2)
    wait_for(lambda: ingest.of_type("register"), what="first register")
    t = time.monotonic()
    ingest.send(CLIENT, "reregister", reason="ingest restarted")
    again = wait_for(lambda: ingest.of_type("register", t), timeout=5, what="second register")
    assert again[0]["cameras"][0]["name"] == "demo-coffee"
    assert agent.control.reconnects == 0  # answered on the same socket


def test_reregisters_after_ingest_control_socket_restarts_on_same_port(ingest, agent_factory):
    agent_factory(ingest, ["demo:coffee"], fps=5)
    wait_for(lambda: ingest.of_type("register"), what="first register")
    wait_for(lambda: ingest.of_type("heartbeat"), what="first heartbeat")
    t = time.monotonic()
    ingest.restart_control(forget=True)
    reg = wait_for(lambda: ingest.of_type("register", t), timeout=10, what="register after restart")
    assert reg[0]["client_id"] == CLIENT
    # Frames flowed on throughout (separate socket).
    wait_for(lambda: ingest.frames_of(cam_id("demo-coffee"), t), what="frames after restart")


def test_mute_ingest_makes_agent_recreate_socket_and_register_again(ingest, agent_factory):
    agent = agent_factory(ingest, ["demo:coffee"], fps=2, reply_timeout_s=1.0)
    wait_for(lambda: agent.control.connected, what="ingest answered")
    ingest.answer = False
    t = time.monotonic()
    wait_for(lambda: agent.control.reconnects >= 1, timeout=10, what="socket recreated")
    wait_for(lambda: ingest.of_type("register", t), timeout=5, what="register on the new socket")
    assert not agent.control.connected
    ingest.answer = True
    wait_for(lambda: agent.control.connected, timeout=10, what="connected again")


def test_without_ingest_capture_runs_frames_drop_and_nothing_queues(ingest_factory, agent_factory):
    ingest = ingest_factory(bind_frames=False)
    agent = agent_factory(ingest, ["demo:bus"], fps=15)
    wait_for(lambda: agent.stats()["demo-bus"]["dropped"] >= 15, timeout=10, what="drops counted")
    st = agent.stats()["demo-bus"]
    assert st["sent"] == 0
    assert st["captured"] >= st["encoded"] > 0
    captured = st["captured"]
    wait_for(lambda: agent.stats()["demo-bus"]["captured"] > captured + 10, what="capture runs on")

    encoded_before = agent.stats()["demo-bus"]["encoded"]
    ingest.bind_frames()
    first = wait_for(lambda: ingest.frames_of(cam_id("demo-bus")), what="frames once ingest is up")[
        0
    ]
    # Only the newest frame can survive an outage: nothing older was queued.
    assert first.header.seq >= encoded_before
    assert time.time_ns() - first.header.ts < 5e9  # not a frame from the outage's start
    assert ingest.invalid == []


def test_motion_gate_sends_keyframes_for_still_scene_full_rate_for_moving(ingest, agent_factory):
    agent = agent_factory(
        ingest, ["demo:static", "demo:bus"], fps=15, motion_gate=True, keyframe_interval_s=1.0
    )
    still, moving = cam_id("demo-static"), cam_id("demo-bus")
    # The first frame of a camera counts as motion (all new); let that hold expire.
    wait_for(lambda: ingest.frames_of(still), what="first still frame")
    start = time.monotonic() + 1.5
    wait_for(lambda: len(ingest.frames_of(moving, start)) >= 30, timeout=15, what="moving frames")
    still_frames = ingest.frames_of(still, start)
    gaps = np.diff([f.header.ts / 1e9 for f in still_frames])
    assert len(still_frames) >= 2
    # Never more often than the interval; about once per interval (a pause of a loaded
    # box may stretch one gap).
    assert min(gaps) >= 0.8 and np.median(gaps) <= 1.5, gaps
    assert all(f.header.motion == 0.0 for f in still_frames)
    assert rate_from_capture_ts(ingest.frames_of(moving, start)) >= 15 * 0.6
    assert all(f.header.motion > 0.005 for f in ingest.frames_of(moving, start))
    st = agent.stats()
    assert st["demo-static"]["gated"] > 10 and st["demo-bus"]["gated"] == 0


def test_heartbeats_carry_per_camera_stats(ingest, agent_factory):
    agent_factory(ingest, ["demo:bus", "demo:zidane"], fps=10)

    def hb_with_sent():
        for m in reversed(ingest.of_type("heartbeat")):
            if all(m["stats"].get(n, {}).get("sent", 0) > 0 for n in ("demo-bus", "demo-zidane")):
                return m
        return None

    hb = wait_for(hb_with_sent, timeout=10, what="heartbeat with sent frames")
    for n in ("demo-bus", "demo-zidane"):
        st = hb["stats"][n]
        for key in (
            "captured",
            "encoded",
            "sent",
            "dropped",
            "bytes",
            "fps",
            "motion",
            "streaming",
        ):
            assert key in st
        assert st["captured"] >= st["encoded"] >= st["sent"] > 0 and st["bytes"] > 0
    metrics_text = generate_latest().decode()
    assert 'sentri_edge_frames_total{camera_id="test-edge/demo-bus",outcome="sent"}' in metrics_text


def test_start_paused_registers_but_streams_only_when_told(ingest, agent_factory):
    agent_factory(ingest, ["demo:bus", "demo:zidane"], fps=10, start_paused=True)
    reg = wait_for(lambda: ingest.of_type("register"), what="register")[0]
    assert [c["streaming"] for c in reg["cameras"]] == [False, False]
    wait_for(lambda: len(ingest.of_type("heartbeat")) >= 3, what="agent alive for a while")
    assert ingest.frames == []
    t = time.monotonic()
    ingest.send(CLIENT, "start_streaming")  # camera omitted: all cameras
    wait_for(
        lambda: {cam_id("demo-bus"), cam_id("demo-zidane")} <= ingest.camera_ids(),
        what="both cameras stream",
    )
    assert len(ingest.of_type("camera_info", t)) == 2


def test_bad_control_input_is_counted_and_ignored(ingest, agent_factory):
    agent = agent_factory(ingest, ["demo:bus"], fps=5)
    wait_for(lambda: agent.control.connected, what="connected")

    def count(reason: str) -> float:
        return INVALID_INPUT.labels("edge", reason)._value.get()

    before = {
        r: count(r)
        for r in (
            "control_undecodable",
            "control_unknown_type",
            "bad_version",
            "bad_multipart",
            "control_bad_value",
        )
    }
    ingest.send_raw(CLIENT, b"\xc1 definitely not msgpack")
    ingest.send_raw(CLIENT, b"\x82\xa1v\x07\xa4type\xa3ack")  # {"v": 7, "type": "ack"}
    ingest.send(CLIENT, "heartbeat", client_id="ingest")  # an agent->ingest type
    ingest.send_raw(CLIENT, b"a", b"b", b"c")
    ingest.send(CLIENT, "update_streaming_settings", camera="demo-bus", quality=500)
    wait_for(lambda: all(count(r) > before[r] for r in before), what="every bad message counted")
    # Still obeys valid commands.
    t = time.monotonic()
    ingest.send(CLIENT, "update_streaming_settings", camera="demo-bus", quality=33)
    camera_info_for(ingest, "demo-bus", t, quality=33)
    # A command for a camera the agent does not have changes nothing.
    ingest.send(CLIENT, "stop_streaming", camera="no-such-cam")
    t = time.monotonic()
    wait_for(lambda: ingest.frames_of(cam_id("demo-bus"), t + 0.5), what="still streaming")


def test_stop_is_prompt_sends_bye_and_joins_threads(ingest, agent_factory):
    agent = agent_factory(ingest, ["demo:bus", "demo:zidane"], fps=15)
    wait_for(lambda: ingest.frames_of(cam_id("demo-bus")), what="frames")
    t0 = time.monotonic()
    agent.stop()
    assert time.monotonic() - t0 < 4.0  # prompt: not the threads' join timeouts
    wait_for(lambda: ingest.of_type("bye"), timeout=5, what="bye")
    names = {t.name for t in threading.enumerate()}
    leftovers = {
        n for n in names if n.startswith(("capture-", "encode-", "frame-sender", "control"))
    }
    assert leftovers == set()


@pytest.fixture
def http_clip(tmp_path):
    """A short MJPEG AVI served over real HTTP on loopback (ignores credentials)."""
    import functools
    import http.server

    from edge_agent.demo import DemoScene

    scene = DemoScene("zidane", 320, 240)
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (320, 240))
    for i in range(30):
        writer.write(scene.render(i / 10))
    writer.release()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    handler.log_message = lambda *a, **k: None  # type: ignore[attr-defined]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"127.0.0.1:{server.server_address[1]}/clip.avi"
    server.shutdown()
    server.server_close()


def test_network_camera_reconnects_and_its_credentials_never_leave_the_agent(
    ingest, agent_factory, http_clip, caplog
):
    caplog.set_level("DEBUG")
    url = f"http://viewer:s3cr3tpw@{http_clip}?token=t0k3n&channel=2"
    agent = agent_factory(ingest, [f"door={url}", "demo:bus"], fps=5)
    reg = wait_for(lambda: ingest.of_type("register"), what="register")[0]
    door = next(c for c in reg["cameras"] if c["name"] == "door")
    assert door["kind"] == "http" and (door["width"], door["height"]) == (320, 240)
    assert door["source"] == f"http://viewer:***@{http_clip}?token=***&channel=2"
    wait_for(lambda: ingest.frames_of(cam_id("door")), what="frames from the http camera")
    # The served clip has 30 frames: the stream ends and the camera is reopened.
    wait_for(
        lambda: agent.stats()["door"]["captured"] > 70,
        timeout=20,
        what="capture continues after the stream ended (reopened twice)",
    )
    assert agent.stats()["door"]["capture_errors"] >= 5
    assert "reopening" in caplog.text
    everything = repr([m for _, m in ingest.messages]) + caplog.text
    assert "s3cr3tpw" not in everything and "t0k3n" not in everything


def test_frames_flow_only_once_ingest_acknowledged_the_register(ingest, agent_factory):
    ingest.answer = False  # ingest up but not (yet) answering control
    agent = agent_factory(ingest, ["demo:bus"], fps=10, reply_timeout_s=1.0)
    wait_for(lambda: agent.stats()["demo-bus"]["dropped"] >= 5, what="frames dropped")
    wait_for(lambda: len(ingest.of_type("register")) >= 2, timeout=10, what="register retried")
    assert ingest.frames == [] and agent.stats()["demo-bus"]["sent"] == 0
    ingest.answer = True
    wait_for(lambda: ingest.frames_of(cam_id("demo-bus")), timeout=10, what="frames after ack")
    assert ingest.invalid == []
