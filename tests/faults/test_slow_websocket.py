"""Fault 5: a browser stops reading its websocket (frozen tab, dead Wi-Fi).

Full chain of real processes: agent -> ingest -> gateway, two websocket clients
watching the same two cameras.  One never reads a byte after subscribing; its
bounded buffer drops frames (counted) and, once a send blocks longer than
gateway.ws_send_timeout_s, the gateway closes it (counted).  The other client keeps
receiving live frames the whole time and the gateway stays up.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import socket
import struct
import threading
import time

import httpx
import pytest
from websockets.sync.client import connect as ws_connect

from tests.faults.procs import (
    FrameSink,
    agent_args,
    approve_agent,
    ingest_args,
    parse_metrics,
    scrape,
    service_env,
)
from tests.helpers import wait_for

pytestmark = pytest.mark.faults

CAMS = ["slow/demo-bus", "slow/demo-zidane"]
PASSWORD = "fault-suite-" + os.urandom(4).hex()
SEND_TIMEOUT_S = 3


def never_reading_ws(port: int, token: str) -> socket.socket:
    """A real websocket client that subscribes and then never reads again."""
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall(
        f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
        f"Authorization: Bearer {token}\r\n\r\n".encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += s.recv(1)
    assert head.startswith(b"HTTP/1.1 101"), head
    payload = json.dumps({"type": "subscribe", "cameras": CAMS}).encode()
    mask = os.urandom(4)
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    s.sendall(struct.pack("!BB", 0x81, 0x80 | len(payload)) + mask + body)
    return s


class LiveViewer(threading.Thread):
    """A browser that keeps reading: records the arrival time of every live frame."""

    def __init__(self, url: str, token: str) -> None:
        super().__init__(daemon=True)
        self.url, self.token = url, token
        self.frames: list[float] = []
        self.stop_ev = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with ws_connect(
                self.url,
                additional_headers={"Authorization": f"Bearer {self.token}"},
                max_size=None,
                open_timeout=10,
            ) as ws:
                ws.send(json.dumps({"type": "subscribe", "cameras": CAMS}))
                while not self.stop_ev.is_set():
                    try:
                        msg = ws.recv(timeout=0.5)
                    except TimeoutError:
                        continue
                    if isinstance(msg, bytes):
                        self.frames.append(time.monotonic())
        except BaseException as exc:  # reported by the test
            self.error = exc

    def count(self, since: float) -> int:
        return sum(1 for t in list(self.frames) if t >= since)


def test_frozen_browser_does_not_stall_the_others(
    procs, redis_url, prefix, keys, r, tmp_path, port_factory, record_recovery
):
    ports = (port_factory(), port_factory(), port_factory())
    state = tmp_path / "state"
    curve = approve_agent(redis_url, prefix, state, "slow")
    http_port = port_factory()
    env = service_env(
        redis_url,
        prefix,
        state,
        SENTRI_GATEWAY__ADMIN_PASSWORD=PASSWORD,
        SENTRI_GATEWAY__WS_QUEUE_MESSAGES="8",
        SENTRI_GATEWAY__WS_SEND_TIMEOUT_S=str(SEND_TIMEOUT_S),
    )
    procs("ingest", ingest_args(ports), env).wait_log("ingest ready", 30)
    sink = FrameSink(f"tcp://127.0.0.1:{ports[2]}")
    procs(
        "agent",
        agent_args("slow", ports, curve=curve, sources=["demo:bus", "demo:zidane"], fps=10),
        env,
    )
    gateway = procs(
        "gateway",
        [
            "-m",
            "services.gateway",
            "--port",
            str(http_port),
            "--ingest-pub",
            f"tcp://127.0.0.1:{ports[2]}",
        ],
        env,
    )
    slow = None
    viewer = None
    try:
        gateway.wait_log("gateway ready", 60)
        wait_for(lambda: all(sink.count(c) >= 3 for c in CAMS), 40, what="agent streaming")
        base = f"http://127.0.0.1:{http_port}"
        http = httpx.Client(base_url=base, timeout=10, headers={"Origin": base})
        resp = http.post("/api/auth/login", json={"username": "admin", "password": PASSWORD})
        assert resp.status_code == 200, resp.text
        token = http.post("/api/auth/tokens", json={"name": "faults"}).json()["token"]

        slow = never_reading_ws(http_port, token)
        viewer = LiveViewer(f"ws://127.0.0.1:{http_port}/ws", token)
        viewer.start()
        wait_for(lambda: viewer.count(0) >= 5 or viewer.error, 20, what="live frames")
        assert viewer.error is None, viewer.error

        def metric(name: str) -> float:
            return parse_metrics(scrape(http_port), name)

        stalled = time.monotonic()
        wait_for(
            lambda: metric("sentri_gateway_ws_closed_slow_total") >= 1,
            SEND_TIMEOUT_S + 20,
            what="frozen websocket closed",
        )
        closed_after = time.monotonic() - stalled
        assert metric("sentri_gateway_ws_messages_dropped_total") > 0
        # The live viewer never stopped: frames kept arriving while the other one was
        # stuck, and still do.
        assert viewer.count(stalled) >= 5
        after = time.monotonic()
        wait_for(lambda: viewer.count(after) >= 5, 10, what="live frames after the close")
        gaps = [b - a for a, b in itertools.pairwise(viewer.frames) if a >= stalled]
        assert viewer.error is None and gateway.alive()
        print(
            f"[faults] live viewer: {viewer.count(stalled)} frames during the stall, "
            f"longest gap {max(gaps):.2f} s"
        )
        record_recovery("ws_frozen_client_closed_after", closed_after)
        record_recovery("ws_live_viewer_longest_gap", max(gaps))
    finally:
        if viewer is not None:
            viewer.stop_ev.set()
            viewer.join(5)
        if slow is not None:
            slow.close()
        sink.close()
