"""Real processes for the fault-injection suite: start, wait for readiness, kill -9.

Every service runs as its own ``python -m ...`` child with output in a log file
(a pipe nobody reads could fill and block the child), env built from scratch so the
developer's ``SENTRI_*`` settings never leak in.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

import msgpack
import zmq

from tests.helpers import wait_for

ROOT = Path(__file__).resolve().parents[2]


def service_env(redis_url: str, prefix: str, state_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SENTRI_")}
    env.pop("REDIS_URL", None)
    env.update(
        PYTHONPATH=str(ROOT),
        REDIS_URL=redis_url,
        SENTRI_REDIS__PREFIX=prefix,
        SENTRI_STATE_DIR=str(state_dir),
        SENTRI_GENERAL__LOG_LEVEL="INFO",
        YOLO_OFFLINE="1",
        YOLO_CONFIG_DIR=str(state_dir / "ultralytics"),
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


class Proc:
    """One child process, its log file, and the faults we inject into it."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        self.args = args
        self.env = env
        self.log_path = log_dir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0

    def start(self) -> Proc:
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.started_at = time.monotonic()
        self.proc = subprocess.Popen(
            [sys.executable, *self.args],
            env=self.env,
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_log(self, needle: str, timeout: float, *, after: int = 0) -> int:
        """Wait until ``needle`` appears in the log past offset ``after``; fail if the
        process dies first.  Returns the offset just past the match."""

        def found() -> int:
            text = self.log_text()
            pos = text.find(needle, after)
            if pos >= 0:
                return pos + len(needle)
            if not self.alive():
                raise AssertionError(
                    f"{self.name} exited ({self.proc and self.proc.returncode}) before "
                    f"{needle!r}:\n{text[-3000:]}"
                )
            return 0

        return wait_for(found, timeout, interval=0.1, what=f"{self.name}: {needle!r}")

    def kill9(self) -> None:
        """SIGKILL: no cleanup, no goodbye (the crash we inject)."""
        if self.alive():
            assert self.proc is not None
            self.proc.kill()
            self.proc.wait(10)

    def signal(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL if it does not exit in time (a stopped process gets
        SIGCONT first so it can handle the SIGTERM)."""
        if self.alive():
            assert self.proc is not None
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if getattr(self, "_log", None):
            self._log.close()


def ingest_args(ports: tuple[int, int, int]) -> list[str]:
    frame, control, pub = ports
    return [
        "-m",
        "services.ingest",
        "--frame-port",
        str(frame),
        "--control-port",
        str(control),
        "--pub-port",
        str(pub),
    ]


def approve_agent(redis_url: str, prefix: str, state: Path, client_id: str) -> list[str]:
    """Wire CURVE the way ``sentri up`` does (ingest's default is secure): ingest's key
    pair in ``<state>/keys`` (ingest's ``general.state_dir``), the agent's key pair
    beside it, approved for ``client_id``.  Returns the agent's extra flags."""
    from shared.keys import Keys
    from shared.redisutil import connect
    from shared.security import AgentKeyStore, load_or_create_keypair

    keys_dir = state / "keys"
    load_or_create_keypair(keys_dir, "ingest")
    agent_public, _ = load_or_create_keypair(keys_dir, "edge")
    r = connect(redis_url)
    try:
        AgentKeyStore(r, Keys(prefix)).approve(agent_public, client_id=client_id)
    finally:
        r.close()
    return ["--server-key", str(keys_dir / "ingest.public"), "--key-dir", str(keys_dir)]


def agent_args(
    client_id: str,
    ports: tuple[int, int, int],
    sources: list[str],
    *,
    fps: int = 6,
    curve: list[str] | None = None,
) -> list[str]:
    """Edge agent flags; ``curve`` = the flags :func:`approve_agent` returned."""
    args = ["-m", "edge_agent", "--client-id", client_id, "--fps", str(fps), *(curve or [])]
    args += ["--frame-endpoint", f"tcp://127.0.0.1:{ports[0]}"]
    args += ["--control-endpoint", f"tcp://127.0.0.1:{ports[1]}"]
    for s in sources:
        args += ["--source", s]
    return args


class FrameSink:
    """A worker-side SUB socket on ingest's fan-out recording (camera, seq, arrival)."""

    def __init__(self, endpoint: str) -> None:
        self.frames: dict[str, list[tuple[int, float]]] = defaultdict(list)
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, args=(endpoint,), daemon=True)
        self._thread.start()

    def _loop(self, endpoint: str) -> None:
        sub = zmq.Context.instance().socket(zmq.SUB)
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        sub.setsockopt(zmq.RECONNECT_IVL, 100)
        sub.setsockopt(zmq.RECONNECT_IVL_MAX, 500)
        sub.setsockopt(zmq.LINGER, 0)
        sub.connect(endpoint)
        try:
            while not self._stop.is_set():
                if sub.poll(100):
                    _topic, header, _jpeg = sub.recv_multipart()
                    h = msgpack.unpackb(header)
                    with self.lock:
                        self.frames[h["camera_id"]].append((h["seq"], time.monotonic()))
        finally:
            sub.close(0)

    def count(self, cam: str, since: float = 0.0) -> int:
        with self.lock:
            return sum(1 for _s, t in self.frames[cam] if t >= since)

    def first_after(self, cam: str, since: float) -> float | None:
        with self.lock:
            return next((t for _s, t in self.frames[cam] if t >= since), None)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)


def parse_metrics(text: str, name: str, **labels: str) -> float:
    """Sum of a Prometheus sample ``name{labels...}`` in an exposition text."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        head, _, value = line.rpartition(" ")
        if all(f'{k}="{v}"' in head for k, v in labels.items()):
            total += float(value)
    return total


def scrape(port: int) -> str:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        return resp.read().decode()


def detector_args(ingest_pub: str, replica: str, metrics_port: int | None = None) -> list[str]:
    args = ["-m", "services.detector", "run", "--ingest-pub", ingest_pub, "--replica-id", replica]
    if metrics_port:
        args += ["--metrics-port", str(metrics_port)]
    return args


#: The fastest offline detector settings on a small shared CPU: the bundled person
#: model through torch (no ONNX export to wait for), 320 px, one thread per replica.
DETECTOR_ENV = {
    # The drills feed a still photo: with motion-aware scheduling the detector would run
    # only on idle keyframes, and the drills measure processing, not scheduling.
    "SENTRI_DETECTOR__MOTION_AWARE": "false",
    "SENTRI_DETECTOR__BACKEND__TYPE": "torch",
    "SENTRI_DETECTOR__IMGSZ": "320",
    "SENTRI_DETECTOR__THREADS": "1",
}


class CameraFeeder(threading.Thread):
    """Publishes a real photo for each camera at ``fps`` on ingest's fan-out protocol
    (stands in for ingest where the worker is what the fault hits)."""

    def __init__(self, port: int, jpeg: bytes, fps: float = 3.0) -> None:
        super().__init__(daemon=True)
        from tests.helpers import FramePublisher

        self.pub = FramePublisher(zmq.Context.instance(), port)
        self.jpeg = jpeg
        self.interval = 1.0 / fps
        self.cameras: list[str] = []
        self.lock = threading.Lock()
        self.stop_ev = threading.Event()

    def feed(self, *cameras: str) -> None:
        with self.lock:
            self.cameras += [c for c in cameras if c not in self.cameras]

    def run(self) -> None:
        while not self.stop_ev.wait(self.interval):
            with self.lock:
                cams = list(self.cameras)
            for cam in cams:
                self.pub.publish(cam, jpeg=self.jpeg)

    def close(self) -> None:
        self.stop_ev.set()
        self.join(5)
        self.pub.close()


def bus_jpeg() -> bytes:
    """ultralytics' bus.jpg (4 people) at 480x640."""
    import importlib.util

    import cv2

    from tests.helpers import encode_jpeg

    spec = importlib.util.find_spec("ultralytics")  # locate without importing it
    assert spec and spec.submodule_search_locations
    img = cv2.imread(str(Path(spec.submodule_search_locations[0]) / "assets" / "bus.jpg"))
    return encode_jpeg(cv2.resize(img, (480, 640), interpolation=cv2.INTER_AREA))
