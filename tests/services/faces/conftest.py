"""Fixtures for the faces tests: real photos (scikit-image, ultralytics assets), real
dlib models, a real worker runtime fed by a real ZeroMQ PUB socket."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator

import numpy as np
import pytest
import zmq

from services.faces.config import FacesConfig
from services.faces.engine import FaceEngine, get_engine
from services.faces.processor import FacesProcessor
from shared.config import WorkerConfig
from shared.registry import register_client
from shared.worker import WorkerRuntime
from tests.helpers import FramePublisher, encode_jpeg, wait_for
from tests.services.faces.support import astronaut_bgr, astronaut_face_bgr, compose, other_face_bgr


@pytest.fixture(scope="session")
def engine() -> FaceEngine:
    return get_engine()


@pytest.fixture(scope="session")
def astronaut_jpeg() -> bytes:
    return encode_jpeg(astronaut_bgr(), 92)


@pytest.fixture(scope="session")
def known_scene() -> np.ndarray:
    """640x480: the astronaut rescaled (face ~113 px) and shifted to the left half."""
    return compose([(astronaut_face_bgr(), 1.3, 40, 120)])


@pytest.fixture(scope="session")
def two_people_scene() -> np.ndarray:
    """640x480: the astronaut on the left (face ~113 px), the other man on the right."""
    return compose([(astronaut_face_bgr(), 1.3, 40, 120), (other_face_bgr(), 0.75, 380, 150)])


class CounterView:
    """The runtime's live counters of a camera, read as attributes (0 when absent)."""

    def __init__(self, runtime: WorkerRuntime, camera_id: str) -> None:
        self.runtime, self.camera_id = runtime, camera_id

    @property
    def faces_rejected(self) -> Counter:
        pre = "faces_rejected:"
        counters = self.runtime.counters(self.camera_id)
        return Counter({k[len(pre) :]: v for k, v in counters.items() if k.startswith(pre)})

    def __getattr__(self, name: str) -> float:
        return self.runtime.counters(self.camera_id).get(name, 0)


class FacesWorker:
    """A real WorkerRuntime + FacesProcessor on one registered camera, fed over ZeroMQ."""

    def __init__(self, runtime: WorkerRuntime, processor: FacesProcessor, pub: FramePublisher):
        self.runtime, self.processor, self.pub = runtime, processor, pub
        self.camera_id = "lobby/door"

    def stats(self) -> CounterView:
        return CounterView(self.runtime, self.camera_id)

    def feed_until(
        self,
        img: np.ndarray | None,
        pred: Callable[[], object],
        *,
        jpeg: bytes | None = None,
        timeout: float = 20.0,
        what: str = "",
    ) -> object:
        """Publish the frame repeatedly (PUB/SUB joins late) until ``pred()`` holds."""

        def step() -> object:
            self.pub.publish(self.camera_id, img=img, jpeg=jpeg)
            return pred()

        return wait_for(step, timeout=timeout, interval=0.1, what=what)


@pytest.fixture
def faces_worker(
    r, keys, redis_config, port_factory, engine
) -> Iterator[Callable[..., FacesWorker]]:
    ctx = zmq.Context()
    started: list[tuple[WorkerRuntime, FramePublisher]] = []

    def start(config: FacesConfig) -> FacesWorker:
        pub = FramePublisher(ctx, port_factory())
        register_client(r, keys, {"client_id": "lobby"}, [{"name": "door"}])
        processor = FacesProcessor(config, engine=engine)
        runtime = WorkerRuntime(
            processor,
            redis_config=redis_config,
            worker_config=WorkerConfig(
                ingest_pub=pub.endpoint, heartbeat_s=0.1, member_ttl_s=2.0, max_frame_age_s=10.0
            ),
            default_enabled=config.process_by_default,
            zmq_context=ctx,
        )
        started.append((runtime, pub))
        runtime.start()
        worker = FacesWorker(runtime, processor, pub)
        wait_for(lambda: worker.camera_id in runtime.owned, timeout=10, what="camera owned")
        return worker

    yield start
    for runtime, pub in started:
        runtime.stop()
        pub.close()
    ctx.destroy(linger=0)
