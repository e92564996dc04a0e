"""Real ZeroMQ peers for ingest tests: an agent (DEALER + PUSH) and a worker (SUB)."""

from __future__ import annotations

import time
from typing import Any

import zmq

from shared.protocol import (
    INGEST_TO_AGENT,
    FrameHeader,
    decode_control,
    decode_fanout,
    encode_control,
    encode_frame,
    topic_for,
)
from shared.security import client_socket_options


class Agent:
    """Speaks the agent side of the protocol over real sockets."""

    def __init__(
        self,
        ctx: zmq.Context,
        client_id: str,
        *,
        control_port: int,
        frame_port: int,
        cameras: tuple[str, ...] = ("cam1",),
        curve: tuple[str, str, str] | None = None,  # (public, secret, server public)
    ) -> None:
        self.client_id = client_id
        self.cameras = cameras
        self.dealer = ctx.socket(zmq.DEALER)
        self.push = ctx.socket(zmq.PUSH)
        if curve is not None:
            for sock in (self.dealer, self.push):
                client_socket_options(sock, *curve)
        self.dealer.setsockopt(zmq.LINGER, 0)
        self.dealer.setsockopt(zmq.RECONNECT_IVL, 50)
        self.dealer.connect(f"tcp://127.0.0.1:{control_port}")
        self.push.setsockopt(zmq.LINGER, 0)
        self.push.setsockopt(zmq.RECONNECT_IVL, 50)
        self.push.connect(f"tcp://127.0.0.1:{frame_port}")
        self.seq: dict[str, int] = {}
        #: Added to the capture time of every frame: an agent whose clock is off.
        self.clock_offset_ns = 0
        self.sent_headers: dict[tuple[str, int], bytes] = {}  # exact header bytes sent

    def camera_id(self, name: str) -> str:
        return f"{self.client_id}/{name}"

    def send(self, msg_type: str, **fields: Any) -> None:
        self.dealer.send(encode_control(msg_type, client_id=self.client_id, **fields))

    def recv(self, timeout: float = 5.0) -> dict[str, Any]:
        if not self.dealer.poll(int(timeout * 1000)):
            raise AssertionError(f"{self.client_id}: no control message within {timeout}s")
        return decode_control(self.dealer.recv(), expect=INGEST_TO_AGENT)

    def no_message(self, timeout: float = 0.3) -> bool:
        return not self.dealer.poll(int(timeout * 1000))

    def register(self, **camera_props: Any) -> dict[str, Any]:
        cams = [
            {"name": n, "kind": "demo", "width": 512, "height": 512, "fps": 15.0,
             "target_fps": 10.0, "quality": 80, "streaming": True, **camera_props}
            for n in self.cameras
        ]  # fmt: skip
        self.send("register", hostname="edge-1", platform="linux", version="0.1.0", cameras=cams)
        reply = self.recv()
        assert reply["type"] == "ack", reply
        return reply

    def heartbeat(self, stats: dict[str, dict[str, float]] | None = None) -> dict[str, Any]:
        self.send("heartbeat", stats=stats or {})
        return self.recv()

    def frame(self, name: str, jpeg: bytes, w: int, h: int) -> int:
        seq = self.seq.get(name, 0) + 1
        self.seq[name] = seq
        header = FrameHeader(
            client_id=self.client_id, camera_id=self.camera_id(name), seq=seq,
            ts=time.time_ns() + self.clock_offset_ns, w=w, h=h,
        )  # fmt: skip
        parts = encode_frame(header, jpeg)
        self.sent_headers[(header.camera_id, seq)] = parts[0]
        self.push.send_multipart(parts)
        return seq

    def close(self) -> None:
        self.dealer.close(0)
        self.push.close(0)


class Worker:
    """A SUB socket on ingest's fan-out, as a worker would use it."""

    def __init__(
        self,
        ctx: zmq.Context,
        pub_port: int,
        camera_ids: list[str],
        curve: tuple[str, str, str] | None = None,
    ) -> None:
        """``curve`` = (public, secret, ingest's public key) for a CURVE fan-out."""
        self.sub = ctx.socket(zmq.SUB)
        if curve is not None:
            client_socket_options(self.sub, *curve)
        self.sub.setsockopt(zmq.LINGER, 0)
        self.sub.setsockopt(zmq.RCVHWM, 10_000)
        self.sub.setsockopt(zmq.RECONNECT_IVL, 50)
        for cam in camera_ids:
            self.sub.setsockopt(zmq.SUBSCRIBE, topic_for(cam))
        self.sub.connect(f"tcp://127.0.0.1:{pub_port}")
        self.received: list[tuple[FrameHeader, bytes, bytes]] = []  # header, raw header, jpeg

    def poll(self, timeout: float = 0.05) -> int:
        """Receive everything that arrives within ``timeout``; returns how many."""
        n = 0
        while self.sub.poll(int(timeout * 1000) if n == 0 else 0):
            parts = self.sub.recv_multipart()
            header, jpeg = decode_fanout(parts)
            self.received.append((header, parts[1], jpeg))
            n += 1
        return n

    def seqs(self, camera_id: str) -> list[int]:
        return [h.seq for h, _, _ in self.received if h.camera_id == camera_id]

    def close(self) -> None:
        self.sub.close(0)


def prime(agent: Agent, worker: Worker, name: str, jpeg: bytes, w: int, h: int) -> None:
    """Stream until the worker sees a frame: subscriptions propagate asynchronously."""
    cam = agent.camera_id(name)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        agent.frame(name, jpeg, w, h)
        worker.poll(0.05)
        if worker.seqs(cam):
            return
    raise AssertionError(f"no frame of {cam} reached the subscriber within 10s")
