"""A worker replica whose wall clock is off by ``--offset`` seconds (fault drill).

Runs the real :class:`shared.worker.WorkerRuntime` with a processor that does
nothing but report its cameras: on every ownership change it writes the owned set
to ``<prefix>drill:owned:<replica>`` so the drill can compare replicas.
"""

from __future__ import annotations

import argparse
import json
import signal
import time

from shared.config import RedisConfig, WorkerConfig
from shared.worker import Frame, Processor, WorkerRuntime


class ReportingProcessor(Processor):
    service = "skewdrill"

    def setup(self, runtime: WorkerRuntime) -> None:
        self.runtime = runtime

    def process_batch(self, frames: list[Frame]) -> None:
        pass

    def on_cameras_changed(self, owned: frozenset[str]) -> None:
        rt = self.runtime
        rt.redis.set(rt.keys.k("drill", "owned", rt.replica_id), json.dumps(sorted(owned)))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--prefix", required=True)
    ap.add_argument("--replica", required=True)
    ap.add_argument("--offset", type=float, default=0.0)
    ap.add_argument("--ingest-pub", required=True)
    args = ap.parse_args()
    real = time.time
    time.time = lambda: real() + args.offset  # this host's clock is wrong
    runtime = WorkerRuntime(
        ReportingProcessor(),
        redis_config=RedisConfig(url=args.url, prefix=args.prefix),
        worker_config=WorkerConfig(
            ingest_pub=args.ingest_pub, replica_id=args.replica, heartbeat_s=0.2, member_ttl_s=1.5
        ),
    )
    signal.signal(signal.SIGTERM, lambda *_: runtime.stop_event.set())
    runtime.start()
    print("replica ready", flush=True)
    while not runtime.stop_event.wait(0.5):
        pass
    runtime.stop()


if __name__ == "__main__":
    main()
