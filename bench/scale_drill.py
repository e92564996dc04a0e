"""Scale drill: 64 cameras at 5 fps over 3 worker replicas; kill -9 one of them.

Measures the worker runtime's sharding, not inference: each replica is a real
``WorkerRuntime`` process (real ZeroMQ SUB, real Redis membership, default
``worker`` settings: heartbeat 0.5 s, member TTL 4 s) running a stub processor that
only records which replica processed which frame (camera, seq).  Running YOLO for
64 cameras × 5 fps would take far more than this box's 2 cores and would measure
the model, not the sharding.

Reported:

* ``rebalance_s``: from the kill to the last of the dead replica's cameras being
  processed by a survivor (target < 5 s);
* ``owners_max``: the most replicas that processed one camera within any 1 s window
  (must be 1), and ``duplicates``: frames processed by two replicas (must be 0);
* ``order_violations``: frames processed after a later frame of the same camera;
* the cameras per replica before and after the kill (load spread).

``python -m bench.scale_drill [--cameras 64] [--fps 5] [--replicas 3]``
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict

import cv2
import numpy as np
import zmq

from bench.common import ROOT, child_env
from shared.config import RedisConfig, WorkerConfig
from shared.keys import Keys
from shared.protocol import FrameHeader, encode_fanout, pack_header
from shared.redisutil import EmbeddedRedis, connect, free_port
from shared.registry import register_client
from shared.worker import Frame, Processor, WorkerRuntime


class RecordingProcessor(Processor):
    """Stub: records ``camera|seq|replica|unix time`` for every frame, does nothing else."""

    service = "drill"
    max_batch = 8

    def setup(self, runtime: WorkerRuntime) -> None:
        self.runtime = runtime
        self.key = runtime.keys.prefix + "drill:processed"

    def process_batch(self, frames: list[Frame]) -> None:
        now = time.time()
        rid = self.runtime.replica_id
        self.runtime.redis.rpush(
            self.key, *[f"{f.camera_id}|{f.header.seq}|{rid}|{now:.4f}" for f in frames]
        )


def child(redis_url: str, prefix: str, pub: str, replica: str) -> int:
    runtime = WorkerRuntime(
        RecordingProcessor(),
        redis_config=RedisConfig(url=redis_url, prefix=prefix),
        worker_config=WorkerConfig(ingest_pub=pub, replica_id=replica),
    )
    signal.signal(signal.SIGTERM, lambda *_: runtime.stop_event.set())
    runtime.run()
    return 0


class Feeder(threading.Thread):
    def __init__(self, port: int, cams: list[str], fps: float) -> None:
        super().__init__(daemon=True)
        self.sock = zmq.Context.instance().socket(zmq.PUB)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.SNDHWM, 100_000)
        self.sock.bind(f"tcp://127.0.0.1:{port}")
        self.cams, self.fps = cams, fps
        img = np.full((48, 64, 3), 128, np.uint8)
        self.jpeg = cv2.imencode(".jpg", img)[1].tobytes()
        self.stop_event = threading.Event()
        self.seq = 0

    def run(self) -> None:
        period = 1.0 / self.fps
        nxt = time.monotonic()
        while not self.stop_event.is_set():
            self.seq += 1
            ts = time.time_ns()
            for cam in self.cams:
                header = FrameHeader("drill", cam, self.seq, ts, 64, 48)
                self.sock.send_multipart(encode_fanout(cam, pack_header(header), self.jpeg))
            nxt += period
            self.stop_event.wait(max(0.0, nxt - time.monotonic()))
        self.sock.close(0)


def run(cameras: int = 64, fps: float = 5.0, replicas: int = 3, steady_s: float = 6.0) -> dict:
    prefix = f"drill{os.urandom(3).hex()}:"
    keys = Keys(prefix)
    with EmbeddedRedis() as server:
        r = connect(server.url)
        cams = register_client(
            r, keys, {"client_id": "drill"}, [{"name": f"c{i:02d}"} for i in range(cameras)]
        )
        port = free_port()
        pub = f"tcp://127.0.0.1:{port}"
        feeder = Feeder(port, cams, fps)
        feeder.start()
        ids = [f"drill-{i}" for i in range(replicas)]
        procs = {
            rid: subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "bench.scale_drill",
                    "--child",
                    server.url,
                    prefix,
                    pub,
                    rid,
                ],
                env=child_env(),
                cwd=ROOT,
            )
            for rid in ids
        }
        key = prefix + "drill:processed"
        try:
            deadline = time.monotonic() + 60
            while True:
                tail = [e.split("|") for e in r.lrange(key, -2000, -1)]
                if {e[0] for e in tail} >= set(cams) and {e[2] for e in tail} >= set(ids):
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError("not every camera was processed within 60 s")
                time.sleep(0.2)
            # Joins (replicas starting one by one) moved cameras; judge from here on.
            time.sleep(2.0)
            t_start = time.time()
            time.sleep(steady_s)
            victim = ids[0]
            procs[victim].send_signal(signal.SIGKILL)
            killed_at = time.time()
            procs[victim].wait(10)
            time.sleep(max(10.0, steady_s))
        finally:
            feeder.stop_event.set()
            for p in procs.values():
                if p.poll() is None:
                    p.terminate()
            for p in procs.values():
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
        rows = [e.split("|") for e in r.lrange(key, 0, -1)]
        r.close()
    recs = [(c, int(s), rid, float(t)) for c, s, rid, t in rows if float(t) >= t_start]
    return analyse(recs, cams, ids, victim, killed_at, cameras, fps)


def analyse(recs, cams, ids, victim, killed_at, cameras, fps) -> dict:  # noqa: ANN001
    by_cam: dict[str, list[tuple[float, int, str]]] = defaultdict(list)
    for cam, seq, rid, t in recs:
        by_cam[cam].append((t, seq, rid))
    owners_max = 0
    duplicates = 0
    order_violations = 0
    for rows in by_cam.values():
        rows.sort()
        seen: dict[int, str] = {}
        last_seq = -1
        for _t, seq, rid in rows:
            if seq in seen and seen[seq] != rid:
                duplicates += 1
            seen[seq] = rid
            if seq <= last_seq:
                order_violations += 1
            last_seq = max(last_seq, seq)
        buckets: dict[int, set[str]] = defaultdict(set)
        for t, _, rid in rows:
            buckets[int(t)].add(rid)
        owners_max = max(owners_max, max(len(v) for v in buckets.values()))
    before = {rid: set() for rid in ids}
    after = {rid: set() for rid in ids}
    for cam, rows in by_cam.items():
        for t, _, rid in rows:
            if killed_at - 3 <= t < killed_at:
                before[rid].add(cam)
            elif t >= killed_at + 8:
                after[rid].add(cam)
    moved = before[victim]
    takeover = []
    for cam in moved:
        firsts = [t for t, _, rid in by_cam[cam] if rid != victim and t >= killed_at]
        takeover.append(min(firsts) - killed_at if firsts else float("inf"))
    return {
        "cameras": cameras,
        "fps": fps,
        "replicas": len(ids),
        "processor": "stub (records camera, seq, replica); sharding only, no inference",
        "worker_settings": "defaults: heartbeat_s 0.5, member_ttl_s 4",
        "rebalance_s": round(max(takeover), 2) if takeover else None,
        "cameras_moved": len(moved),
        "owners_max": owners_max,
        "duplicates": duplicates,
        "order_violations": order_violations,
        "spread_before": {rid: len(v) for rid, v in before.items()},
        "spread_after": {rid: len(v) for rid, v in after.items()},
        "frames_processed": len(recs),
    }


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--child":
        return child(*argv[1:5])
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cameras", type=int, default=64)
    p.add_argument("--fps", type=float, default=5.0)
    p.add_argument("--replicas", type=int, default=3)
    args = p.parse_args(argv)
    print(json.dumps(run(args.cameras, args.fps, args.replicas), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
