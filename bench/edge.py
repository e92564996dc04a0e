"""Edge agent cost: CPU % of one core and Mbit/s per 640x480@15 stream, with and
without motion gating, on a busy (moving) and a static scene.

The agent runs as its own process (`python -m edge_agent`) against a real PULL
socket and a ROUTER that answers like ingest; CPU comes from the process's own
CPU times over the window, bandwidth from the bytes that arrived.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import psutil
import zmq

from bench.common import child_env, spawn, stop
from shared.protocol import AGENT_TO_INGEST, decode_control, encode_control
from shared.redisutil import free_port

OUT = Path(__file__).resolve().parent / "out"


class FakeIngest:
    """PULL that counts bytes and a ROUTER that acks register/heartbeat."""

    def __init__(self) -> None:
        self.ctx = zmq.Context()
        self.fp, self.cp = free_port(), free_port()
        self.bytes = 0
        self.frames = 0
        self.counting = False
        self.stop_ev = threading.Event()
        self.registered = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        pull = self.ctx.socket(zmq.PULL)
        pull.bind(f"tcp://127.0.0.1:{self.fp}")
        router = self.ctx.socket(zmq.ROUTER)
        router.bind(f"tcp://127.0.0.1:{self.cp}")
        poller = zmq.Poller()
        poller.register(pull, zmq.POLLIN)
        poller.register(router, zmq.POLLIN)
        while not self.stop_ev.is_set():
            for sock, _ in poller.poll(100):
                if sock is pull:
                    parts = pull.recv_multipart()
                    if self.counting:
                        self.bytes += sum(len(p) for p in parts)
                        self.frames += 1
                else:
                    ident, data = router.recv_multipart()
                    msg = decode_control(data, expect=AGENT_TO_INGEST)
                    if msg["type"] == "register":
                        self.registered.set()
                    router.send_multipart([ident, encode_control("ack")])
        pull.close(0)
        router.close(0)

    def close(self) -> None:
        self.stop_ev.set()
        self.thread.join(5)
        self.ctx.term()


def measure(source: str, gate: bool, seconds: float) -> dict:
    ingest = FakeIngest()
    args = ["-m", "edge_agent", "--client-id", "bench", "--source", source, "--fps", "15",
            "--frame-endpoint", f"tcp://127.0.0.1:{ingest.fp}",
            "--control-endpoint", f"tcp://127.0.0.1:{ingest.cp}", "--log-level", "WARNING"]  # fmt: skip
    if gate:
        args.append("--motion-gate")
    proc = spawn(args, child_env(), OUT / f"edge-{source.replace(':', '_')}-{gate}.log")
    try:
        if not ingest.registered.wait(60):
            raise TimeoutError("edge agent did not register")
        time.sleep(2.0)  # warm-up: first frames, gate settles
        p = psutil.Process(proc.pid)
        c0 = sum(p.cpu_times()[:2])
        t0 = time.monotonic()
        ingest.counting = True
        time.sleep(seconds)
        ingest.counting = False
        span = time.monotonic() - t0
        cpu = (sum(p.cpu_times()[:2]) - c0) / span * 100
    finally:
        stop(proc)
        ingest.close()
    return {
        "source": source,
        "gate": gate,
        "cpu_pct": round(cpu, 1),
        "mbit_s": round(ingest.bytes * 8 / span / 1e6, 2),
        "fps": round(ingest.frames / span, 1),
    }


def run(seconds: float = 12) -> dict:
    rows = []
    combos = [("demo:bus", False, "busy scene"), ("demo:bus", True, "busy scene, motion gate"),
              ("demo:static", False, "static scene"), ("demo:static", True, "static scene, motion gate")]  # fmt: skip
    res = {}
    for source, gate, label in combos:
        m = measure(source, gate, seconds)
        m["label"] = f"{label} ({m['fps']} fps sent)"
        res[(source, gate)] = m
        rows.append(m)
    static, gated = res[("demo:static", False)], res[("demo:static", True)]
    ratio = round(static["mbit_s"] / max(gated["mbit_s"], 1e-6), 1)
    gated["baseline"] = f"{static['mbit_s']} Mbit/s ungated"
    gated["ratio"] = f"**{ratio}×** less bandwidth (target ≥ 5×)"
    for m in rows:
        m.setdefault("ratio", "target ≤ 10 % CPU" if not m["gate"] else "")
    return {"rows": rows, "static_gate_ratio": ratio}


if __name__ == "__main__":
    import json

    print(json.dumps(run(6), indent=2))
