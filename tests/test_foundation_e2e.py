"""The spine end to end with real parts: the real edge agent (its own process, demo
cameras) -> the real ingest -> a SUB consumer, with the registry in a real Redis."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict

import msgpack
import pytest
import zmq

from services.ingest.server import IngestServer
from shared.config import IngestConfig
from shared.registry import get_client, send_command
from tests.helpers import wait_for

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCES = ["demo:bus", "demo:zidane", "demo:astronaut"]


class Consumer:
    """A worker-side SUB socket recording (camera, seq, size, arrival) of every frame."""

    def __init__(self, endpoint: str) -> None:
        self.frames: dict[str, list[tuple[int, int, float]]] = defaultdict(list)
        self.stop_ev = threading.Event()
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._loop, args=(endpoint,), daemon=True)
        self.thread.start()

    def _loop(self, endpoint: str) -> None:
        sub = zmq.Context.instance().socket(zmq.SUB)
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        sub.setsockopt(zmq.RECONNECT_IVL, 100)
        sub.connect(endpoint)
        while not self.stop_ev.is_set():
            if sub.poll(100):
                _topic, header, jpeg = sub.recv_multipart()
                h = msgpack.unpackb(header)
                with self.lock:
                    self.frames[h["camera_id"]].append((h["seq"], len(jpeg), time.monotonic()))
        sub.close(0)

    def count(self, cam: str, since: float = 0.0) -> int:
        with self.lock:
            return sum(1 for _s, _n, t in self.frames[cam] if t >= since)

    def recent_sizes(self, cam: str, since: float) -> list[int]:
        with self.lock:
            return [n for _s, n, t in self.frames[cam] if t >= since]

    def close(self) -> None:
        self.stop_ev.set()
        self.thread.join(5)


def _ingest(redis_config, ports: tuple[int, int, int]) -> IngestServer:
    cfg = IngestConfig(frame_port=ports[0], control_port=ports[1], pub_port=ports[2],
                       stale_after_s=3, offline_after_s=8)  # fmt: skip
    server = IngestServer(cfg, redis_config).start()
    assert server.wait_ready(10)
    return server


@pytest.fixture
def stack(redis_config, keys, r, port_factory):
    ports = (port_factory(), port_factory(), port_factory())
    ingest = _ingest(redis_config, ports)
    consumer = Consumer(f"tcp://127.0.0.1:{ports[2]}")
    env = dict(os.environ, PYTHONPATH=ROOT)
    args = [sys.executable, "-m", "edge_agent", "--client-id", "e2e", "--fps", "8",
            "--frame-endpoint", f"tcp://127.0.0.1:{ports[0]}",
            "--control-endpoint", f"tcp://127.0.0.1:{ports[1]}"]  # fmt: skip
    for s in SOURCES:
        args += ["--source", s]
    agent = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    state = {"ingest": ingest}
    yield state, consumer, agent, ports
    agent.send_signal(signal.SIGINT)
    try:
        agent.wait(10)
    except subprocess.TimeoutExpired:
        agent.kill()
        agent.wait()
    consumer.close()
    state["ingest"].stop()


def test_agent_to_ingest_to_subscriber(stack, redis_config, keys, r) -> None:
    state, consumer, agent, ports = stack
    cams = [f"e2e/{name}" for name in ("demo-bus", "demo-zidane", "demo-astronaut")]

    client = wait_for(lambda: get_client(r, keys, "e2e"), 30, what="agent registered")
    wait_for(lambda: all(consumer.count(c) >= 5 for c in cams), 30, what="frames of 3 cameras")

    # Per-camera order, nothing duplicated.
    with consumer.lock:
        for cam in cams:
            seqs = [s for s, _n, _t in consumer.frames[cam]]
            assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs), cam

    # The registry shows the client and its cameras with their properties and health.
    client = get_client(r, keys, "e2e")
    assert client["status"] == "online"
    by_id = {c["camera_id"]: c for c in client["cameras"]}
    assert set(by_id) == set(cams)
    for cam in cams:
        assert (by_id[cam]["width"], by_id[cam]["height"]) == (640, 480)
        assert by_id[cam]["kind"] == "demo"
    wait_for(
        lambda: (get_client(r, keys, "e2e")["cameras"][0].get("fps_in") or 0) > 1,
        10,
        what="ingest stats",
    )

    # stop_streaming stops one camera only; start resumes it.
    send_command(r, keys, "e2e", "stop_streaming", camera="demo-bus")
    time.sleep(1.0)
    t0 = time.monotonic()
    time.sleep(1.5)
    assert consumer.count("e2e/demo-bus", since=t0) == 0
    assert consumer.count("e2e/demo-zidane", since=t0) >= 3
    send_command(r, keys, "e2e", "start_streaming", camera="demo-bus")
    t1 = time.monotonic()
    wait_for(lambda: consumer.count("e2e/demo-bus", since=t1) >= 3, 10, what="demo-bus resumed")

    # Settings: lower quality -> smaller JPEGs; the registry shows the new settings.
    before = consumer.recent_sizes("e2e/demo-zidane", t1)
    send_command(
        r, keys, "e2e", "update_streaming_settings", camera="demo-zidane", quality=20, fps=4
    )
    wait_for(lambda: next(c for c in get_client(r, keys, "e2e")["cameras"]
                          if c["camera_id"] == "e2e/demo-zidane").get("quality") == 20, 10,
             what="quality 20 reported")  # fmt: skip
    t2 = time.monotonic()
    wait_for(
        lambda: consumer.count("e2e/demo-zidane", since=t2) >= 3, 10, what="frames after settings"
    )
    after = consumer.recent_sizes("e2e/demo-zidane", t2)
    assert sum(after) / len(after) < 0.6 * sum(before) / len(before)


def test_agent_reregisters_after_ingest_restart(stack, redis_config, keys, r) -> None:
    state, consumer, agent, ports = stack
    wait_for(lambda: consumer.count("e2e/demo-bus") >= 3, 30, what="streaming")
    state["ingest"].stop()
    time.sleep(1.0)
    state["ingest"] = _ingest(redis_config, ports)
    t0 = time.monotonic()
    wait_for(
        lambda: consumer.count("e2e/demo-bus", since=t0) >= 3, 10, what="frames again within 10 s"
    )
    assert agent.poll() is None
