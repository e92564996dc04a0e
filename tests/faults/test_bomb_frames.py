"""Fault: decompression bombs reach every worker (detector, faces, analyst).

A real 7000x7000 JPEG (~100 KB on the wire, 147 MB once decoded: 49 Mpx, above the
runtime's default cap of 7680x4320 = 33 Mpx) and a 480x640 JPEG whose SOF claims
8000x8000 are sent to each worker process over the real fan-out protocol.  Each is
counted as ``frame_too_large`` (``sentri_invalid_input_total``), never decoded: the
process's peak resident memory (VmHWM) grows by less than 100 MB over 20 bombs,
and the worker keeps serving.
"""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from shared.protocol import FrameHeader, encode_fanout, pack_header
from shared.redisutil import publish_record
from tests.faults.procs import DETECTOR_ENV, bus_jpeg, parse_metrics, scrape, service_env
from tests.helpers import FramePublisher, wait_for

pytestmark = pytest.mark.faults

BOUND_MB = 100
BOMBS = 20


def claim_size(jpeg: bytes, w: int, h: int) -> bytes:
    out = bytearray(jpeg)
    i = out.index(b"\xff\xc0")
    out[i + 5 : i + 9] = bytes([h >> 8, h & 255, w >> 8, w & 255])
    return bytes(out)


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


WORKERS = {
    "detector": (["-m", "services.detector", "run"], DETECTOR_ENV, "detector ready"),
    "faces": (["-m", "services.faces", "run"], {"SENTRI_FACES__GATE_ON_PERSON": "false"},
              "faces worker ready"),
    "analyst": (["-m", "services.analyst"], {"SENTRI_ANALYST__PROVIDER__TYPE": "offline",
                "SENTRI_ANALYST__EVENT_COOLDOWN_S": "0"}, "analyst ready"),
}  # fmt: skip


@pytest.mark.parametrize("service", sorted(WORKERS))
def test_bomb_frames_are_counted_and_never_decoded(
    service, procs, redis_url, prefix, keys, r, state_dir, port_factory, record_property
):
    args, extra, ready = WORKERS[service]
    pub = FramePublisher(__import__("zmq").Context.instance(), port_factory())
    metrics_port = port_factory()
    cam = f"bomb/{service}"
    r.sadd(keys.cameras, cam)
    env = service_env(
        redis_url, prefix, state_dir, SENTRI_WORKER__INGEST_PUB=pub.endpoint,
        SENTRI_GENERAL__METRICS_PORT=str(metrics_port), **extra,
    )  # fmt: skip
    real = cv2.imencode(".jpg", np.zeros((7000, 7000, 3), np.uint8))[1].tobytes()
    bombs = [(real, 7000, 7000), (claim_size(bus_jpeg(), 8000, 8000), 8000, 8000)]
    seq = 0

    def send(jpeg: bytes, w: int, h: int) -> None:
        nonlocal seq
        seq += 1
        header = FrameHeader(client_id="bomb", camera_id=cam, seq=seq, ts=time.time_ns(), w=w, h=h)
        pub.sock.send_multipart(encode_fanout(cam, pack_header(header), jpeg))
        if service == "analyst":  # the analyst looks at a frame when an event asks
            publish_record(r, keys, "events", {"type": "object_entered", "camera_id": cam,
                           "class": "person", "event_id": f"e{seq}"}, maxlen=1000)  # fmt: skip

    def refused() -> float:
        return parse_metrics(
            scrape(metrics_port), "sentri_invalid_input_total", service=service,
            reason="frame_too_large",
        )  # fmt: skip

    try:
        p = procs(service, args, env)
        p.wait_log(ready, 120)
        wait_for(lambda: (send(*bombs[0]), refused())[1] >= 1, 60, 0.5, what="first bomb counted")
        base = peak_rss_mb(p.pid)
        for i in range(BOMBS):
            send(*bombs[i % 2])
            time.sleep(0.3)  # one frame per round: the latest-frame buffer would merge them
        wait_for(lambda: refused() >= BOMBS // 2, 30, 0.5, what="bombs counted")
        grew = peak_rss_mb(p.pid) - base
        assert p.alive(), p.log_text()[-2000:]
        assert grew < BOUND_MB, f"{service}: peak memory grew {grew:.0f} MB: a bomb was decoded"
        record_property(f"bomb_peak_rss_growth_mb_{service}", round(grew, 1))
        print(
            f"[faults] {service}: {BOMBS} bombs sent, {refused():.0f} refused, peak RSS grew {grew:.1f} MB"
        )
    finally:
        pub.close()
