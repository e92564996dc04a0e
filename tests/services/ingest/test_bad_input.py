"""Bad input on every ingest port is dropped and counted; good agents keep streaming.

One ingest serves the whole module with a registered agent and a subscribed
worker.  Each case sends one kind of bad input, waits until ingest has counted it,
then checks that the good agent's next frame still reaches the worker and that no
good frame was lost along the way.
"""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgpack
import pytest
import zmq
from prometheus_client import REGISTRY

from services.ingest.server import IngestServer
from shared.config import RedisConfig
from shared.protocol import MAX_CONTROL_BYTES, FrameHeader
from shared.redisutil import connect
from tests.helpers import wait_for

from .conftest import ingest_config
from .emulators import Agent, Worker, prime

CLIENT = "good"
CAM = "good/cam1"


@dataclass
class Rig:
    server: IngestServer
    agent: Agent
    worker: Worker
    ctx: zmq.Context
    jpeg: bytes
    w: int
    h: int

    def header(self, **fields: Any) -> bytes:
        d = FrameHeader(
            client_id=CLIENT, camera_id=CAM, seq=10**9, ts=time.time_ns(), w=self.w, h=self.h
        ).to_dict()
        d.update(fields)
        return msgpack.packb({k: v for k, v in d.items() if v is not _DELETE})


_DELETE = object()


@pytest.fixture(scope="module")
def rig(redis_server, photo):
    jpeg, w, h = photo
    redis_cfg = RedisConfig(url=redis_server.url, prefix=f"t{uuid.uuid4().hex[:10]}:")
    ctx = zmq.Context()
    server = IngestServer(ingest_config(max_frame_bytes=1024 * 1024), redis_cfg).start()
    agent = Agent(ctx, CLIENT, control_port=server.control_port, frame_port=server.frame_port)
    agent.register()
    worker = Worker(ctx, server.pub_port, [CAM])
    prime(agent, worker, "cam1", jpeg, w, h)
    yield Rig(server, agent, worker, ctx, jpeg, w, h)
    agent.close()
    worker.close()
    server.stop()
    ctx.destroy(linger=0)


def invalid_metric(reason: str) -> float:
    value = REGISTRY.get_sample_value(
        "sentri_invalid_input_total", {"service": "ingest", "reason": reason}
    )
    return value or 0.0


def push_parts(rig: Rig, parts: list[bytes]) -> None:
    sock = rig.ctx.socket(zmq.PUSH)
    sock.setsockopt(zmq.LINGER, 2000)
    sock.connect(f"tcp://127.0.0.1:{rig.server.frame_port}")
    sock.send_multipart(parts)
    sock.close()  # linger: the message is delivered before the socket goes


def dealer_parts(rig: Rig, parts: list[bytes]) -> None:
    sock = rig.ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 2000)
    sock.connect(f"tcp://127.0.0.1:{rig.server.control_port}")
    sock.send_multipart(parts)
    sock.close()


def raw_tcp(port: int, data: bytes) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        try:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
            while s.recv(65536):  # until ingest drops the connection
                pass
        except OSError:  # ingest may cut us off mid-send: that is the point
            pass


def ctl(**fields: Any) -> bytes:
    return msgpack.packb({"v": 1, "client_id": "mallory", **fields})


HTTP = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n" + b"A" * 200

# (test id, message parts to send, invalid-input reason ingest must count)
FRAME_CASES: list[tuple[str, Callable[[Rig], list[bytes]], str]] = [
    ("garbage_single_part", lambda g: [b"\x00\xffgarbage"], "bad_multipart"),
    ("header_only_truncated_multipart", lambda g: [g.header()], "bad_multipart"),
    ("three_parts", lambda g: [g.header(), g.jpeg, b"extra"], "bad_multipart"),
    ("garbage_header", lambda g: [b"\xc1\xc1\xc1not msgpack", g.jpeg], "header_undecodable"),
    ("header_not_a_map", lambda g: [msgpack.packb([1, 2, 3]), g.jpeg], "header_not_map"),
    ("seq_is_a_string", lambda g: [g.header(seq="12"), g.jpeg], "header_bad_type"),
    ("ts_is_a_bool", lambda g: [g.header(ts=True), g.jpeg], "header_bad_type"),
    ("w_is_a_float", lambda g: [g.header(w=512.0), g.jpeg], "header_bad_type"),
    ("camera_id_missing", lambda g: [g.header(camera_id=_DELETE), g.jpeg], "header_missing_field"),
    ("unknown_version", lambda g: [g.header(v=99), g.jpeg], "bad_version"),
    ("camera_of_other_client", lambda g: [g.header(camera_id="x/cam1"), g.jpeg], "bad_camera_id"),
    # client "good" naming "goodx/cam1": a prefix of the client id is not its namespace
    (
        "camera_of_prefixed_client",
        lambda g: [g.header(camera_id="goodx/cam1"), g.jpeg],
        "bad_camera_id",
    ),
    ("camera_without_slash", lambda g: [g.header(camera_id="goodcam1"), g.jpeg], "bad_camera_id"),
    ("oversize_header", lambda g: [g.header(pad="p" * 5000), g.jpeg], "header_too_large"),
    ("random_bytes_as_jpeg", lambda g: [g.header(), bytes(range(256)) * 40], "bad_jpeg"),
    ("truncated_jpeg", lambda g: [g.header(), g.jpeg[: len(g.jpeg) // 2]], "bad_jpeg"),
    ("jpeg_size_mismatch", lambda g: [g.header(w=g.w + 1), g.jpeg], "bad_jpeg"),
    ("empty_jpeg", lambda g: [g.header(), b""], "bad_jpeg"),
]

CONTROL_CASES: list[tuple[str, Callable[[Rig], list[bytes]], str]] = [
    ("garbage", lambda g: [b"\xc1\x00garbage"], "control_undecodable"),
    ("not_a_map", lambda g: [msgpack.packb(["register"])], "control_not_map"),
    ("unknown_type", lambda g: [ctl(type="format_disk")], "control_unknown_type"),
    ("ingest_only_type", lambda g: [ctl(type="start_streaming")], "control_unknown_type"),
    ("client_id_wrong_type", lambda g: [ctl(type="register", client_id=5)], "control_bad_type"),
    ("cameras_wrong_type", lambda g: [ctl(type="register", cameras="all")], "control_bad_type"),
    ("camera_bad_value", lambda g: [ctl(type="camera_info", camera={"name": "a b"})], "control_bad_value"),
    ("heartbeat_stats_wrong_type", lambda g: [ctl(type="heartbeat", stats={"c": {"fps": "x"}})], "control_bad_type"),
    ("unknown_version", lambda g: [msgpack.packb({"v": 7, "type": "register"})], "bad_version"),
    ("multipart", lambda g: [ctl(type="heartbeat"), b"x", b"y"], "bad_multipart"),
]  # fmt: skip


def assert_still_streaming(rig: Rig) -> None:
    """The good agent's next frame reaches the worker, and none was lost before it."""
    seq = rig.agent.frame("cam1", rig.jpeg, rig.w, rig.h)
    wait_for(
        lambda: rig.worker.poll() is not None and seq in rig.worker.seqs(CAM),
        what=f"good frame {seq}",
    )
    got = rig.worker.seqs(CAM)
    assert got == list(range(got[0], seq + 1)), "good frames lost or reordered"
    assert rig.server.counters["internal_error"] == 0  # handled as input, not as a crash


@pytest.mark.parametrize(
    ("make", "reason"), [c[1:] for c in FRAME_CASES], ids=[c[0] for c in FRAME_CASES]
)
def test_bad_frame_is_dropped_and_counted(rig: Rig, make, reason) -> None:
    before, metric_before = rig.server.invalid_count(reason, "frame"), invalid_metric(reason)
    rig.agent.frame("cam1", rig.jpeg, rig.w, rig.h)
    push_parts(rig, make(rig))
    wait_for(lambda: rig.server.invalid_count(reason, "frame") == before + 1, what=reason)
    assert invalid_metric(reason) == metric_before + 1
    assert_still_streaming(rig)


@pytest.mark.parametrize(
    ("make", "reason"), [c[1:] for c in CONTROL_CASES], ids=[c[0] for c in CONTROL_CASES]
)
def test_bad_control_is_dropped_and_counted(rig: Rig, make, reason) -> None:
    before = rig.server.invalid_count(reason, "control")
    dealer_parts(rig, make(rig))
    wait_for(lambda: rig.server.invalid_count(reason, "control") == before + 1, what=reason)
    assert rig.agent.heartbeat()["type"] == "ack"  # the good agent's session is intact
    assert_still_streaming(rig)


@pytest.mark.parametrize(
    "make",
    [lambda g: [g.header(), g.jpeg[: len(g.jpeg) // 2]], lambda g: [g.header(w=g.w + 1), g.jpeg]],
    ids=["truncated_jpeg", "size_mismatch"],
)
def test_invalid_frames_are_counted_per_camera(rig: Rig, make) -> None:
    """An invalid frame of a registered camera shows in that camera's drop count."""
    stats = rig.server.stats.get(CAM)
    before = stats.dropped if stats else 0
    push_parts(rig, make(rig))
    wait_for(lambda: rig.server.stats.get(CAM).dropped == before + 1, what="per-camera drop")
    r = connect(rig.server.redis_cfg.url)
    try:
        wait_for(
            lambda: int(r.hget(rig.server.keys.camera(CAM), "dropped") or 0) == before + 1,
            what="drop count in the registry",
        )
    finally:
        r.close()
    assert_still_streaming(rig)


def test_unauthorised_frames_are_refused_before_the_jpeg_is_examined(rig: Rig) -> None:
    """A frame of a camera with no session is dropped on its header: its (broken) JPEG
    is never walked, so it counts as unregistered, not as bad_jpeg."""
    before_unreg = rig.server.counters["unregistered"]
    before_jpeg = rig.server.invalid_count("bad_jpeg")
    header = msgpack.packb(
        FrameHeader(client_id="stranger", camera_id="stranger/cam1", seq=1,
                    ts=time.time_ns(), w=rig.w, h=rig.h).to_dict()
    )  # fmt: skip
    junk = b"\xff\xd8" + b"\xff\x01" * 40_000 + b"\xff\xd9"  # marker soup, no SOF
    push_parts(rig, [header, junk])
    wait_for(lambda: rig.server.counters["unregistered"] == before_unreg + 1, what="dropped")
    assert rig.server.invalid_count("bad_jpeg") == before_jpeg
    assert_still_streaming(rig)


def test_frames_of_unregistered_camera_are_dropped(rig: Rig) -> None:
    before = rig.server.counters["unregistered"]
    intruder = Agent(rig.ctx, "intruder", control_port=rig.server.control_port,
                     frame_port=rig.server.frame_port)  # fmt: skip
    spy = Worker(rig.ctx, rig.server.pub_port, ["intruder/cam1"])
    try:
        for _ in range(3):
            intruder.frame("cam1", rig.jpeg, rig.w, rig.h)
        wait_for(lambda: rig.server.counters["unregistered"] == before + 3, what="unregistered")
        assert_still_streaming(rig)
        assert spy.poll(0.1) == 0
    finally:
        intruder.close()
        spy.close()


def test_50mb_frame_is_refused_without_buffering(rig: Rig) -> None:
    before = rig.server.counters["frame_disconnects"]
    sock = rig.ctx.socket(zmq.PUSH)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(f"tcp://127.0.0.1:{rig.server.frame_port}")
    try:
        sock.send_multipart([rig.header(), b"\xff" * (50 * 1024 * 1024)])
        # MAXMSGSIZE: ZeroMQ reads the size prefix and cuts the peer off.
        wait_for(lambda: rig.server.counters["frame_disconnects"] > before, what="disconnect")
        assert_still_streaming(rig)
    finally:
        sock.close(0)
    assert rig.server.counters["frames_in"] >= 1


def test_oversize_control_message_is_refused(rig: Rig) -> None:
    before = rig.server.counters["control_disconnects"]
    sock = rig.ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(f"tcp://127.0.0.1:{rig.server.control_port}")
    try:
        sock.send(ctl(type="register", hostname="h" * (MAX_CONTROL_BYTES + 10)))
        wait_for(lambda: rig.server.counters["control_disconnects"] > before, what="disconnect")
        assert rig.agent.heartbeat()["type"] == "ack"
        assert_still_streaming(rig)
    finally:
        sock.close(0)


@pytest.mark.parametrize("port_name", ["frame", "control", "pub"])
def test_http_garbage_fails_the_handshake(rig: Rig, port_name: str) -> None:
    port = getattr(rig.server, f"{port_name}_port")
    before = rig.server.invalid_count("handshake_failed", port_name)
    raw_tcp(port, HTTP)
    wait_for(
        lambda: rig.server.invalid_count("handshake_failed", port_name) == before + 1,
        what="handshake_failed",
    )
    assert_still_streaming(rig)


@pytest.mark.parametrize("port_name", ["frame", "control", "pub"])
def test_binary_garbage_is_disconnected(rig: Rig, port_name: str) -> None:
    port = getattr(rig.server, f"{port_name}_port")
    before = rig.server.counters[f"{port_name}_disconnects"]
    raw_tcp(port, bytes(range(256)) * 64)
    wait_for(lambda: rig.server.counters[f"{port_name}_disconnects"] > before, what="disconnect")
    assert_still_streaming(rig)


def test_garbage_sent_to_pub_port_by_zmq_peers(rig: Rig) -> None:
    before = rig.server.counters["pub_disconnects"]
    # A PUSH socket is not a valid peer of PUB: ZMTP refuses the handshake.
    push = rig.ctx.socket(zmq.PUSH)
    push.setsockopt(zmq.LINGER, 0)
    push.connect(f"tcp://127.0.0.1:{rig.server.pub_port}")
    push.send(b"garbage", zmq.NOBLOCK)
    # A subscriber sending a 100 kB subscription exceeds the PUB's MAXMSGSIZE.
    sub = rig.ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.connect(f"tcp://127.0.0.1:{rig.server.pub_port}")
    sub.setsockopt(zmq.SUBSCRIBE, b"x" * 100_000)
    try:
        wait_for(lambda: rig.server.counters["pub_disconnects"] >= before + 2, what="disconnects")
        assert_still_streaming(rig)
    finally:
        push.close(0)
        sub.close(0)


@pytest.mark.parametrize(("sent", "forwarded"), [(3.0, 1.0), (-2, 0.0), (1e300, 1.0)])
def test_motion_outside_unit_range_is_clamped_and_counted(rig: Rig, sent, forwarded) -> None:
    """A broken agent's motion score does not cost its frames: ingest forwards them
    with the score clamped to 0..1 and counts the repair."""
    before = rig.server.counters["motion_clamped"]
    before_metric = REGISTRY.get_sample_value("sentri_ingest_motion_clamped_total") or 0.0
    seq = rig.agent.seq["cam1"] + 1
    rig.agent.seq["cam1"] = seq
    push_parts(rig, [rig.header(seq=seq, motion=sent), rig.jpeg])
    wait_for(
        lambda: rig.worker.poll() is not None and seq in rig.worker.seqs(CAM),
        what="the clamped frame at the worker",
    )
    header = next(h for h, _, _ in rig.worker.received if h.camera_id == CAM and h.seq == seq)
    assert header.motion == forwarded
    assert rig.server.counters["motion_clamped"] == before + 1
    assert REGISTRY.get_sample_value("sentri_ingest_motion_clamped_total") == before_metric + 1
    assert_still_streaming(rig)
