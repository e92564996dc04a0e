"""CURVE by default, with the real edge agent (in-process, demo camera) against the real
ingest: what reaches a worker's SUB socket is decided by the agent key store.

test_curve.py covers the handshake rules with protocol emulators; these tests add
the agent's own behaviour (it recreates its sockets when ingest stays silent) and
``ingest.authorized_keys``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from edge_agent.agent import EdgeAgent
from edge_agent.config import EdgeConfig
from services.ingest.server import IngestServer
from shared import registry
from shared.security import AgentKeyStore, fingerprint, write_keypair
from tests.helpers import wait_for

from .emulators import Worker

CAM = "garage/demo-coffee"


@pytest.fixture
def run_agent(tmp_path) -> Iterator[Callable[..., EdgeAgent]]:
    """A real EdgeAgent with CURVE on (default reply timeout: the real recovery path)."""
    agents: list[EdgeAgent] = []

    def start(server: IngestServer, key_dir: str, **overrides: Any) -> EdgeAgent:
        fields: dict[str, Any] = {
            "client_id": "garage",
            "frame_endpoint": f"tcp://127.0.0.1:{server.frame_port}",
            "control_endpoint": f"tcp://127.0.0.1:{server.control_port}",
            "sources": ["demo:coffee"],
            "fps": 8,
            "heartbeat_interval_s": 0.5,
            "server_key": server.server_public,
            "key_dir": key_dir,
            **overrides,
        }
        agent = EdgeAgent(EdgeConfig(**fields))
        agents.append(agent)
        agent.start()
        return agent

    yield start
    for agent in agents:
        agent.stop()


def _frames(worker: Worker, since: int = 0) -> list[Any]:
    worker.poll(0.05)
    return [h for h, _raw, _jpeg in worker.received[since:] if h.camera_id == CAM]


def test_unapproved_agent_reaches_no_subscriber_until_approved_then_streams_without_restart(
    make_server, make_worker, run_agent, r, keys, tmp_path
):
    server = make_server(insecure=False, keys_dir=tmp_path / "ingest")
    worker = make_worker(server, [CAM])
    store = AgentKeyStore(r, keys)
    agent = run_agent(server, str(tmp_path / "agent"))
    key = agent.public_key
    assert key is not None

    # Pending: recorded for the dashboard, refused at the handshake.
    wait_for(lambda: store.status(key) == "pending", what="agent key pending")
    wait_for(lambda: server.invalid_count("handshake_failed", "frame") >= 1,
             what="frame socket refused")  # fmt: skip
    wait_for(lambda: agent.stats()["demo-coffee"]["captured"] >= 10, what="agent capturing")
    assert _frames(worker) == []
    assert registry.get_client(r, keys, "garage") is None
    assert server.counters["control_register"] == 0

    # Approved in the dashboard: the agent gets in on its own (new sockets).
    store.approve(fingerprint(key))
    approved_at = time.monotonic()
    wait_for(lambda: len(_frames(worker)) >= 3, timeout=12, what="frames after approval")
    took = time.monotonic() - approved_at
    print(f"\nfirst frames reached the subscriber {took:.1f}s after approval")
    # Frames flow once the session exists; the registry is written off that path.
    wait_for(
        lambda: (registry.get_client(r, keys, "garage") or {}).get("status") == "online",
        what="the client online in the registry",
    )
    assert store.key_for_client("garage") == key
    assert agent.control.reconnects >= 1  # the agent recovered by itself, no restart


def test_authorized_keys_directory_approves_at_start_and_on_rescan(
    make_server, make_worker, run_agent, r, keys, tmp_path
):
    authorized = tmp_path / "authorized"
    authorized.mkdir()
    first_pub, _ = write_keypair(tmp_path / "first", "edge")
    (authorized / "first.public").write_text(first_pub + "\n")
    (authorized / "notes.txt").write_text("not a key, not read\n")
    server = make_server(
        insecure=False, keys_dir=tmp_path / "ingest", authorized_keys=[str(authorized)],
        authorized_keys_rescan_s=0.2,
    )  # fmt: skip
    store = AgentKeyStore(r, keys)
    rec = store.get(first_pub)
    assert rec["status"] == "approved" and rec["decided_by"] == "authorized_keys"
    assert rec["source"] == str(authorized / "first.public")

    # The agent streams at once, with no approval click; its key binds to its client id.
    worker = make_worker(server, [CAM])
    run_agent(server, str(tmp_path / "first"))
    wait_for(lambda: len(_frames(worker)) >= 3, timeout=10, what="provisioned agent streaming")
    assert store.key_for_client("garage") == first_pub

    # A key file dropped in later is approved by the rescan, without a restart.
    later_pub, _ = write_keypair(tmp_path / "later", "edge")
    (authorized / "later.public").write_text(later_pub)
    wait_for(lambda: store.status(later_pub) == "approved", timeout=5, what="rescan approval")

    # A key the administrator rejected stays rejected, whatever the files say.
    store.reject(later_pub)
    (authorized / "again.public").write_text(later_pub + "\n")
    count = server.counters["authorized_keys_approved"]
    scans = server.counters["authorized_keys_scans"]
    wait_for(lambda: server.counters["authorized_keys_scans"] >= scans + 3, what="3 rescans")
    assert store.status(later_pub) == "rejected"
    assert server.counters["authorized_keys_approved"] == count


def test_second_agent_claiming_an_approved_client_id_with_another_key_is_refused(
    make_server, make_worker, run_agent, r, keys, tmp_path
):
    legit_pub, _ = write_keypair(tmp_path / "legit", "edge")
    server = make_server(insecure=False, keys_dir=tmp_path / "ingest", authorized_keys=[legit_pub])
    worker = make_worker(server, [CAM])
    store = AgentKeyStore(r, keys)
    run_agent(server, str(tmp_path / "legit"))
    wait_for(lambda: len(_frames(worker)) >= 3, timeout=10, what="legit agent streaming")
    assert store.key_for_client("garage") == legit_pub

    # Another machine, its key approved too, claims the same client id; its frames
    # are 320x240, so none of them may ever reach the subscriber.
    mallory_pub, _ = write_keypair(tmp_path / "mallory", "edge")
    store.approve(mallory_pub)
    mallory = run_agent(server, str(tmp_path / "mallory"), width=320, height=240)
    assert mallory.public_key == mallory_pub
    wait_for(lambda: server.invalid_count("client_key_mismatch") >= 1, timeout=10,
             what="takeover refused")  # fmt: skip
    seen = len(worker.received)
    wait_for(lambda: len(_frames(worker, seen)) >= 5, timeout=10, what="legit frames go on")
    assert {(h.w, h.h) for h in _frames(worker)} == {(640, 480)}
    assert store.key_for_client("garage") == legit_pub
    assert [k["client_ids"] for k in store.list() if k["key"] == mallory_pub] == [[]]
    # Its heartbeats for that client id are refused too, and the session is still the
    # legit agent's (a bye from mallory would end it).
    wait_for(lambda: server.invalid_count("key_mismatch", "control") >= 1,
             what="heartbeat with the wrong key refused")  # fmt: skip
    assert server.sessions.by_client("garage").key == legit_pub
    assert registry.get_client(r, keys, "garage")["status"] == "online"
