"""Gateway fixtures: settings on the test's Redis prefix, an in-process app, a real uvicorn."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn
import zmq
from fastapi.testclient import TestClient

from services.gateway.app import create_app
from services.gateway.config import GatewayConfig, GatewaySettings
from shared.config import GeneralConfig, IngestConfig, RedisConfig
from shared.registry import register_client
from tests.helpers import FramePublisher, wait_for

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]

BASE = "http://testserver"
SAME_ORIGIN = {"Origin": BASE}  # what a browser sends with the dashboard's writes
ADMIN = "admin"
PASSWORD = "correct-horse-battery"


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium (system binary), one per test module."""
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"{CHROMIUM} is not installed (apt install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture
def pub_port(port_factory) -> int:
    return port_factory()


@pytest.fixture
def make_settings(redis_config: RedisConfig, tmp_path: Path, pub_port: int):
    def make(**gateway: object) -> GatewaySettings:
        gateway.setdefault("admin_password", PASSWORD)
        # Cheap argon2 parameters: the defaults cost ~0.8 s per hash on the shared CI box.
        gateway.setdefault("password_hash_time_cost", 1)
        gateway.setdefault("password_hash_memory_kib", 1024)
        gateway.setdefault("ingest_pub", f"tcp://127.0.0.1:{pub_port}")
        # TestClient's host name next to the defaults (bind address, localhost, 127.0.0.1).
        gateway.setdefault("allowed_hosts", ["testserver", "127.0.0.1", "localhost"])
        return GatewaySettings(
            gateway=GatewayConfig(**gateway),
            redis=redis_config,
            general=GeneralConfig(state_dir=str(tmp_path / "state")),
            ingest=IngestConfig(),
        )

    return make


@pytest.fixture
def settings(make_settings) -> GatewaySettings:
    return make_settings()


@pytest.fixture
def anon(settings: GatewaySettings) -> Iterator[TestClient]:
    """The app in-process (lifespan running), no credentials."""
    with TestClient(create_app(settings), base_url=BASE, headers=SAME_ORIGIN) as c:
        yield c


@pytest.fixture
def client(anon: TestClient) -> TestClient:
    """The same app, logged in as admin (session cookie)."""
    resp = anon.post("/api/auth/login", json={"username": ADMIN, "password": PASSWORD})
    assert resp.status_code == 200, resp.text
    return anon


@pytest.fixture
def zctx() -> Iterator[zmq.Context]:
    ctx = zmq.Context()
    yield ctx
    ctx.term()


@pytest.fixture
def publisher(zctx: zmq.Context, pub_port: int) -> Iterator[FramePublisher]:
    """Plays ingest's fan-out PUB socket."""
    pub = FramePublisher(zctx, pub_port)
    yield pub
    pub.close()


def add_client(r, keys, client_id: str = "lab", cameras: tuple[str, ...] = ("front",)) -> list[str]:
    info = {"client_id": client_id, "hostname": f"{client_id}-host", "platform": "linux"}
    cams = [
        {"name": n, "kind": "demo", "width": 810, "height": 1080, "streaming": True}
        for n in cameras
    ]
    return register_client(r, keys, info, cams)


class GatewayServer:
    """A real uvicorn serving the app on a free loopback port, in a thread."""

    def __init__(self, settings: GatewaySettings, port: int) -> None:
        self.app = create_app(settings)
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        config = uvicorn.Config(
            self.app,
            host="127.0.0.1",
            port=port,
            log_config=None,
            access_log=False,
            ws_max_size=settings.gateway.ws_max_message_bytes,
            lifespan="on",
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self) -> GatewayServer:
        self.thread.start()
        wait_for(lambda: self.server.started, 15, what="uvicorn started")
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)

    def login(self) -> httpx.Client:
        c = httpx.Client(base_url=self.url, timeout=10, headers={"Origin": self.url})
        resp = c.post("/api/auth/login", json={"username": ADMIN, "password": PASSWORD})
        assert resp.status_code == 200, resp.text
        return c


@pytest.fixture
def make_server(make_settings, port_factory):
    servers: list[GatewayServer] = []

    def make(**gateway: object) -> GatewayServer:
        srv = GatewayServer(make_settings(**gateway), port_factory()).start()
        servers.append(srv)
        return srv

    yield make
    for s in servers:
        s.stop()
