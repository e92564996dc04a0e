"""The agent approval flow end to end: a real ingest in CURVE mode, a real gateway
(uvicorn), real ZeroMQ agents, one Redis.  An unknown agent is refused and shows up as
pending (pushed to a websocket); an administrator approves it through the HTTP API and
the agent's next connection is accepted; a rejected key is refused again."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import zmq
from websockets.sync.client import connect as ws_connect

from services.gateway.config import GatewayConfig, GatewaySettings
from services.ingest.server import IngestServer
from shared import registry
from shared.config import GeneralConfig, IngestConfig, RedisConfig
from shared.security import fingerprint, generate_keypair
from tests.helpers import wait_for
from tests.services.gateway.conftest import PASSWORD, GatewayServer
from tests.services.ingest.emulators import Agent


@pytest.fixture
def ctx() -> Iterator[zmq.Context]:
    context = zmq.Context()
    yield context
    context.destroy(linger=0)


@pytest.fixture
def ingest(redis_config: RedisConfig, tmp_path: Path) -> Iterator[IngestServer]:
    cfg = IngestConfig(frame_port=0, control_port=0, pub_port=0, stats_interval_s=0.2,
                       insecure=False)  # fmt: skip
    server = IngestServer(cfg, redis_config, keys_dir=tmp_path / "keys").start()
    assert server.wait_ready(10)
    yield server
    server.stop()


@pytest.fixture
def gateway(redis_config: RedisConfig, tmp_path: Path, port_factory) -> Iterator[GatewayServer]:
    settings = GatewaySettings(
        gateway=GatewayConfig(
            admin_password=PASSWORD, password_hash_time_cost=1, password_hash_memory_kib=1024,
            ingest_pub=f"tcp://127.0.0.1:{port_factory()}",
        ),
        redis=redis_config,
        general=GeneralConfig(state_dir=str(tmp_path / "gw")),
        ingest=IngestConfig(),
    )  # fmt: skip
    srv = GatewayServer(settings, port_factory()).start()
    yield srv
    srv.stop()


def _recv(ws, kind: str, timeout: float = 10.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        msg = ws.recv(timeout=max(0.01, deadline - time.monotonic()))
        if isinstance(msg, str) and json.loads(msg)["type"] == kind:
            return json.loads(msg)["data"]
    raise AssertionError(f"no {kind} within {timeout}s")


def test_unknown_agent_waits_until_an_admin_approves_it(ctx, ingest, gateway, r, keys):
    admin = gateway.login()
    token = admin.post("/api/auth/tokens", json={"name": "ops"}).json()["token"]
    api = httpx.Client(
        base_url=gateway.url, headers={"Authorization": f"Bearer {token}"}, timeout=10
    )
    apub, asec = generate_keypair()
    curve = (apub, asec, ingest.server_public)

    def agent() -> Agent:
        return Agent(ctx, "edge1", control_port=ingest.control_port,
                     frame_port=ingest.frame_port, curve=curve)  # fmt: skip

    ws_url = gateway.url.replace("http", "ws") + "/ws"
    with ws_connect(ws_url, additional_headers={"Authorization": f"Bearer {token}"}) as ws:
        _recv(ws, "hello")
        wait_for(lambda: gateway.app.state.gw.hub.connections, 5, what="ws registered")
        # The agent knocks: ingest refuses the handshake and records the key as pending.
        first = agent()
        first.send("heartbeat", stats={})
        assert _recv(ws, "agent_key_pending")["fingerprint"] == fingerprint(apub)
        assert first.no_message(0.3)
        first.close()

    pending = api.get("/api/agents/keys", params={"status": "pending"}).json()
    assert [k["fingerprint"] for k in pending] == [fingerprint(apub)]
    assert registry.get_client(r, keys, "edge1") is None  # nothing got through

    # Approved through the API: the agent's next connection registers and is answered.
    resp = api.post(f"/api/agents/keys/{fingerprint(apub)}/approve")
    assert resp.status_code == 200 and resp.json()["status"] == "approved"
    second = agent()
    second.register()
    assert second.heartbeat()["type"] == "ack"
    wait_for(lambda: registry.get_client(r, keys, "edge1"), what="edge1 registered")
    keys_now = api.get("/api/agents/keys").json()
    assert keys_now[0]["client_ids"] == ["edge1"]  # bound to the key that registered it
    second.close()

    # Rejected: the binding is gone and a new connection is refused again.
    assert api.post(f"/api/agents/keys/{fingerprint(apub)}/reject").json()["status"] == "rejected"

    # (ingest's ZAP handler caches an approval for up to 1 s, so allow a retry or two)
    def refused() -> bool:
        third = agent()
        try:
            third.send("heartbeat", stats={})
            return third.no_message(0.5)
        finally:
            third.close()

    wait_for(refused, 10, 0.3, "rejected key refused")
    assert api.get("/api/agents/keys").json()[0]["client_ids"] == []
