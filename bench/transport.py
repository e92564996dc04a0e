"""Transport benchmark: edge protocol -> ingest -> subscriber vs the seed's Socket.IO.

Both paths carry the same 640x480 quality-80 JPEG of a real photo, from a producer
process (one agent connection, N cameras) through a server process to a viewer in
this process.  Two measurements per path:

* **max sustained frames/s**: the producer sends as fast as the path accepts
  (blocking sends, so the offered load follows capacity); frames/s at the viewer.
* **latency at nominal load**: N cameras x 15 fps; p50/p99 capture->viewer latency.
"""

from __future__ import annotations

import multiprocessing as mp
import threading
import time
from pathlib import Path

import msgpack
import zmq

from bench.common import child_env, jpeg, percentile, photo, spawn, stop, wait_until
from shared.keys import Keys
from shared.protocol import (
    INGEST_TO_AGENT,
    FrameHeader,
    decode_control,
    encode_control,
    encode_frame,
)
from shared.redisutil import EmbeddedRedis, connect, free_port
from shared.security import AgentKeyStore, client_socket_options, generate_keypair

OUT = Path(__file__).resolve().parent / "out"


# ------------------------------------------------------------------ producers


def _sentri_producer(
    frame_ep: str,
    control_ep: str,
    cams: int,
    fps: float,
    seconds: float,
    data: bytes,
    curve: tuple[str, str, str] | None = None,
) -> None:
    ctx = zmq.Context()

    def secure(sock: zmq.Socket) -> None:
        if curve:  # (agent public, agent secret, ingest public): Sentri's default
            client_socket_options(sock, *curve)

    dealer = ctx.socket(zmq.DEALER)
    secure(dealer)
    dealer.setsockopt(zmq.ROUTING_ID, b"bench")
    dealer.setsockopt(zmq.LINGER, 0)
    dealer.connect(control_ep)
    names = [f"cam{i}" for i in range(cams)]
    dealer.send(encode_control("register", client_id="bench",
                               cameras=[{"name": n, "width": 640, "height": 480} for n in names]))  # fmt: skip
    if not dealer.poll(10_000):
        raise SystemExit("ingest did not answer register")
    decode_control(dealer.recv(), expect=INGEST_TO_AGENT)
    push = ctx.socket(zmq.PUSH)
    secure(push)
    push.setsockopt(zmq.SNDHWM, 64)
    push.setsockopt(zmq.LINGER, 0)
    push.connect(frame_ep)
    seq = 0
    end = time.monotonic() + seconds
    period = 1.0 / fps if fps else 0.0
    next_t = time.monotonic()
    while time.monotonic() < end:
        seq += 1
        for n in names:
            h = FrameHeader("bench", f"bench/{n}", seq, time.time_ns(), 640, 480)
            push.send_multipart(encode_frame(h, data), copy=False)  # as the agent's sender
        if period:
            next_t += period
            delay = next_t - time.monotonic()
            if delay > 0:
                time.sleep(delay)
    ctx.destroy(0)


def _socketio_producer(url: str, cams: int, fps: float, seconds: float, data: bytes) -> None:
    from bench.socketio_baseline import agent, send_frame

    client = agent(url)
    names = [f"bench/cam{i}" for i in range(cams)]
    end = time.monotonic() + seconds
    period = 1.0 / fps if fps else 0.0
    next_t = time.monotonic()
    while time.monotonic() < end:
        for n in names:
            send_frame(client, n, data)
        if period:
            next_t += period
            delay = next_t - time.monotonic()
            if delay > 0:
                time.sleep(delay)
    client.disconnect()


# -------------------------------------------------------------------- viewers


class Tally:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.window: tuple[float, float] = (float("inf"), float("inf"))
        self.count = 0
        self.latencies: list[float] = []

    def add(self, ts_ns: int) -> None:
        now = time.monotonic()
        if self.window[0] <= now <= self.window[1]:
            with self.lock:
                self.count += 1
                self.latencies.append((time.time_ns() - ts_ns) / 1e6)


def _zmq_viewer(
    pub_ep: str, tally: Tally, stop_ev: threading.Event, ready: threading.Event
) -> None:
    ctx = zmq.Context.instance()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.RCVHWM, 1000)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(pub_ep)
    ready.set()
    while not stop_ev.is_set():
        if not sub.poll(100):
            continue
        for _ in range(1000):  # drain what is waiting, as shared.fanout's subscriber does
            try:
                parts = sub.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                break
            tally.add(msgpack.unpackb(parts[1].buffer)["ts"])
    sub.close(0)


def _run(
    path: str, producer, viewer_start, cams: int, fps: float, seconds: float, data: bytes
) -> dict:
    tally = Tally()
    stop_ev = threading.Event()
    viewer_start(tally, stop_ev)
    time.sleep(0.5)  # let subscriptions settle
    proc = mp.get_context("spawn").Process(target=producer, args=(cams, fps, seconds, data))
    warm = 1.0
    proc.start()
    t0 = time.monotonic()
    tally.window = (t0 + warm, t0 + seconds - 0.2)
    proc.join(seconds + 30)
    time.sleep(0.3)
    stop_ev.set()
    span = seconds - 0.2 - warm
    return {
        "path": path,
        "cameras": cams,
        "offered_fps": cams * fps if fps else "max",
        "fps": round(tally.count / span, 1),
        "p50_ms": round(percentile(tally.latencies, 50), 2),
        "p99_ms": round(percentile(tally.latencies, 99), 2),
    }


def run(seconds: float = 8, cameras: int = 4, secure: bool = True) -> dict:
    data = jpeg(photo("bus.jpg"))
    results: dict = {"frame_bytes": len(data), "cameras": cameras, "seconds": seconds}
    OUT.mkdir(exist_ok=True)

    # --- Sentri: real ingest process with its real Redis, CURVE on (the default).
    import tempfile

    with EmbeddedRedis() as redis, tempfile.TemporaryDirectory(prefix="sentri-bench-") as state:
        fp, cp, pp = free_port(), free_port(), free_port()
        env = child_env(REDIS_URL=redis.url, SENTRI_INGEST__FRAME_PORT=fp, SENTRI_INGEST__CONTROL_PORT=cp,
                        SENTRI_INGEST__PUB_PORT=pp, SENTRI_INGEST__PUB_HWM=1000,
                        SENTRI_GENERAL__STATE_DIR=state, SENTRI_GENERAL__LOG_LEVEL="WARNING")  # fmt: skip
        args = ["-m", "services.ingest"] + ([] if secure else ["--insecure"])
        ingest = spawn(args, env, OUT / "transport-ingest.log")
        try:
            ready = threading.Event()

            def sentri_viewer(tally: Tally, stop_ev: threading.Event) -> None:
                threading.Thread(
                    target=_zmq_viewer,
                    args=(f"tcp://127.0.0.1:{pp}", tally, stop_ev, ready),
                    daemon=True,
                ).start()
                ready.wait(5)

            wait_until(lambda: _port_open(cp), 30, "ingest control port")
            curve = None
            if secure:
                server_pub = (Path(state) / "keys" / "ingest.public").read_text().strip()
                agent_pub, agent_sec = generate_keypair()
                r = connect(redis.url)
                AgentKeyStore(r, Keys("sentri:")).approve(agent_pub, client_id="bench")
                r.close()
                curve = (agent_pub, agent_sec, server_pub)
            producer = _bind(_sentri_producer, fp, cp, curve)
            results["sentri_max"] = _run(
                "sentri", producer, sentri_viewer, cameras, 0, seconds, data
            )
            ready.clear()
            results["sentri_nominal"] = _run(
                "sentri", producer, sentri_viewer, cameras, 15, seconds, data
            )
        finally:
            stop(ingest)

    # --- Baseline: python-socketio server process, base64 JPEG in JSON.
    sp = free_port()
    server = spawn(["-c", f"import time; from bench.socketio_baseline import SocketIOServer; SocketIOServer({sp}).start(); time.sleep(3600)"],
                   child_env(), OUT / "transport-socketio.log")  # fmt: skip
    try:
        wait_until(lambda: _port_open(sp), 30, "socket.io server")
        url = f"http://127.0.0.1:{sp}"

        def sio_viewer(tally: Tally, stop_ev: threading.Event) -> None:
            from bench.socketio_baseline import viewer

            client = viewer(url, lambda _cam, ts, _jpeg: tally.add(ts))

            def closer() -> None:
                stop_ev.wait()
                client.disconnect()

            threading.Thread(target=closer, daemon=True).start()

        results["socketio_max"] = _run(
            "socketio", _bind_sio(url), sio_viewer, cameras, 0, seconds, data
        )
        results["socketio_nominal"] = _run(
            "socketio", _bind_sio(url), sio_viewer, cameras, 15, seconds, data
        )
    finally:
        stop(server)

    base = max(results["socketio_max"]["fps"], 0.1)
    results["throughput_ratio"] = round(results["sentri_max"]["fps"] / base, 1)
    return results


# ------------------------------------------------------------- fan-out CURVE


def _fanout_viewer(
    r, keys: Keys, pub_ep: str, cams: int, tally: Tally, stop_ev: threading.Event
) -> threading.Event:
    """The real receiver (FanoutKeys + FanoutSubscriber, as workers use them), on a thread."""
    from shared.fanout import FanoutKeys, FanoutSubscriber

    ready = threading.Event()

    def loop() -> None:
        fk = FanoutKeys(r, keys, name="bench").start()
        ctx = zmq.Context()
        sub = FanoutSubscriber(ctx, pub_ep, rcv_hwm=1000, keys=fk)
        sub.follow(f"bench/cam{i}" for i in range(cams))
        ready.set()
        try:
            while not stop_ev.is_set():
                if sub.poll(100):
                    for header, _jpeg in sub.drain(1000):
                        tally.add(header.ts)
        finally:
            sub.close()
            fk.stop()
            ctx.destroy(0)

    threading.Thread(target=loop, daemon=True).start()
    return ready


def fanout_run(seconds: float = 6, cameras: int = 4, rounds: int = 2) -> dict:
    """Max frames/s through ingest to one subscriber, fan-out CURVE on vs plaintext.

    Agents are plaintext (``--insecure``) so the fan-out is the only difference;
    ingest runs ``rounds`` times per mode, alternating (off, on, off, on, ...), in
    one run on one box, and each mode's figure is the mean of its rounds.
    """
    import tempfile

    from shared.ingest_info import read_ingest_info

    data = jpeg(photo("bus.jpg"))
    OUT.mkdir(exist_ok=True)
    keys = Keys("sentri:")
    per_mode: dict[str, list[float]] = {"off": [], "on": []}
    with EmbeddedRedis() as redis, tempfile.TemporaryDirectory(prefix="sentri-bench-") as state:
        r = connect(redis.url)
        try:
            for mode in ["off", "on"] * rounds:
                fp, cp, pp = free_port(), free_port(), free_port()
                env = child_env(REDIS_URL=redis.url, SENTRI_INGEST__FRAME_PORT=fp,
                                SENTRI_INGEST__CONTROL_PORT=cp, SENTRI_INGEST__PUB_PORT=pp,
                                SENTRI_INGEST__PUB_HWM=1000, SENTRI_INGEST__FANOUT_CURVE=mode,
                                SENTRI_GENERAL__STATE_DIR=state,
                                SENTRI_GENERAL__LOG_LEVEL="WARNING")  # fmt: skip
                r.delete(keys.ingest_info)
                ingest = spawn(["-m", "services.ingest", "--insecure"], env,
                               OUT / f"transport-fanout-{mode}.log")  # fmt: skip
                try:
                    wait_until(lambda cp=cp: _port_open(cp), 30, "ingest control port")
                    wait_until(lambda: read_ingest_info(r, keys) is not None, 30, "ingest info")
                    info = read_ingest_info(r, keys)
                    assert info is not None and (info.fanout_key is not None) == (mode == "on")

                    def viewer(tally: Tally, stop_ev: threading.Event, pp: int = pp) -> None:
                        _fanout_viewer(r, keys, f"tcp://127.0.0.1:{pp}", cameras, tally,
                                       stop_ev).wait(10)  # fmt: skip

                    res = _run(f"fanout-{mode}", _bind(_sentri_producer, fp, cp, None), viewer,
                               cameras, 0, seconds, data)  # fmt: skip
                    per_mode[mode].append(res["fps"])
                finally:
                    stop(ingest)
        finally:
            r.close()
    plain = sum(per_mode["off"]) / len(per_mode["off"])
    curve = sum(per_mode["on"]) / len(per_mode["on"])
    return {
        "cameras": cameras,
        "seconds": seconds,
        "frame_bytes": len(data),
        "fanout_plain_fps": round(plain, 1),
        "fanout_curve_fps": round(curve, 1),
        "fanout_curve_ratio": round(curve / max(plain, 0.1), 2),
        "rounds": {"plain": per_mode["off"], "curve": per_mode["on"]},
    }


class _bind:
    """Picklable partial for the spawn-started producer."""

    def __init__(self, fn, fp: int, cp: int, curve: tuple[str, str, str] | None) -> None:
        self.fn, self.fp, self.cp, self.curve = fn, fp, cp, curve

    def __call__(self, cams, fps, seconds, data) -> None:
        self.fn(f"tcp://127.0.0.1:{self.fp}", f"tcp://127.0.0.1:{self.cp}", cams, fps, seconds,
                data, self.curve)  # fmt: skip


class _bind_sio:
    def __init__(self, url: str) -> None:
        self.url = url

    def __call__(self, cams, fps, seconds, data) -> None:
        _socketio_producer(self.url, cams, fps, seconds, data)


def _port_open(port: int) -> bool:
    import socket

    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


if __name__ == "__main__":
    import json

    print(json.dumps(run(), indent=2))
