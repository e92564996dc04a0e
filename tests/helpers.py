"""Test helpers: waiting with timeouts, publishing real frames over ZeroMQ."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import cv2
import numpy as np
import zmq

from shared.protocol import FrameHeader, encode_fanout, pack_header

T = TypeVar("T")


def wait_for(
    pred: Callable[[], T], timeout: float = 10.0, interval: float = 0.05, what: str = ""
) -> T:
    """Poll ``pred`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = pred()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what or pred}: last={last!r}")


def encode_jpeg(img: np.ndarray, quality: int = 80) -> bytes:
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return buf.tobytes()


def make_header(camera_id: str, seq: int, img: np.ndarray, ts: int | None = None) -> FrameHeader:
    client_id = camera_id.split("/", 1)[0]
    h, w = img.shape[:2]
    return FrameHeader(
        client_id=client_id, camera_id=camera_id, seq=seq, ts=ts or time.time_ns(), w=w, h=h
    )


class FramePublisher:
    """A real PUB socket speaking ingest's fan-out protocol, for worker tests."""

    def __init__(self, ctx: zmq.Context, port: int) -> None:
        self.sock = ctx.socket(zmq.PUB)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.bind(f"tcp://127.0.0.1:{port}")
        self.endpoint = f"tcp://127.0.0.1:{port}"
        self.seq: dict[str, int] = {}

    def publish(
        self, camera_id: str, img: np.ndarray | None = None, jpeg: bytes | None = None
    ) -> int:
        if jpeg is None:
            assert img is not None
            jpeg = encode_jpeg(img)
        if img is None:
            img = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
        seq = self.seq.get(camera_id, 0) + 1
        self.seq[camera_id] = seq
        header = make_header(camera_id, seq, img)
        self.sock.send_multipart(encode_fanout(camera_id, pack_header(header), jpeg))
        return seq

    def close(self) -> None:
        self.sock.close(0)
