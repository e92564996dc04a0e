"""`--server http://GATEWAY`: the agent asks the real gateway (uvicorn) where ingest is
and for ingest's key, pins the key on first use, waits as pending behind a CURVE
ingest until approved, then streams; a changed key is refused with the fix named;
an unreachable gateway is retried with backoff; a thread that dies stops the agent."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import pytest

from edge_agent.agent import AgentFailure, EdgeAgent
from edge_agent.config import EdgeConfig
from edge_agent.enrol import KeyChangedError, parse_bootstrap, pin_file
from edge_agent.sender import FrameSender
from services.gateway.config import GatewayConfig, GatewaySettings
from shared.config import GeneralConfig, IngestConfig
from shared.security import AgentKeyStore, CurveAuthenticator, fingerprint, generate_keypair
from tests.helpers import wait_for
from tests.services.gateway.conftest import GatewayServer


@pytest.fixture
def curve_ingest(ingest_factory, r, keys):
    server = generate_keypair()
    store = AgentKeyStore(r, keys)
    ing = ingest_factory(curve=server, authenticator=lambda ctx: CurveAuthenticator(ctx, store))
    return ing, server[0], store


@pytest.fixture
def gateway(curve_ingest, redis_config, tmp_path, port_factory):
    """The real gateway, told ingest's ports and public key through its config."""
    ing, server_public, _ = curve_ingest
    frame_port = int(ing.frame_url.rsplit(":", 1)[1])
    control_port = int(ing.control_url.rsplit(":", 1)[1])
    settings = GatewaySettings(
        gateway=GatewayConfig(
            admin_password="correct-horse-battery", password_hash_time_cost=1,
            password_hash_memory_kib=1024, ingest_pub=f"tcp://127.0.0.1:{port_factory()}",
            ingest_public_key=server_public,
        ),
        redis=redis_config,
        general=GeneralConfig(state_dir=str(tmp_path / "gw-state")),
        ingest=IngestConfig(frame_port=frame_port, control_port=control_port),
    )  # fmt: skip
    srv = GatewayServer(settings, port_factory()).start()
    yield srv
    srv.stop()


def _agent(url: str, key_dir: Path, **overrides) -> EdgeAgent:
    fields = {
        "server": url, "client_id": "cam1", "sources": ["demo:coffee"], "fps": 5,
        "key_dir": str(key_dir), "heartbeat_interval_s": 0.3, "reply_timeout_s": 1.0,
        "max_backoff_s": 1.0, "refused_retry_s": 0.5, **overrides,
    }  # fmt: skip
    cfg = EdgeConfig(**fields)
    return EdgeAgent(cfg, GeneralConfig(state_dir=str(key_dir.parent)))


def test_enrols_through_gateway_pins_key_pending_then_streams(
    curve_ingest, gateway, tmp_path, capsys
) -> None:
    ing, server_public, store = curve_ingest
    key_dir = tmp_path / "agent-keys"
    agent = _agent(gateway.url, key_dir)
    agent.start()
    try:
        assert agent.control_url == ing.control_url and agent.frames_url == ing.frame_url
        pinned = pin_file(key_dir, gateway.url)
        assert pinned.read_text().strip() == server_public  # trust on first use
        out = capsys.readouterr().out
        assert fingerprint(agent.public_key) in out and f"{gateway.url}/ (Agents)" in out
        # pending: nothing gets through until approved
        [rec] = wait_for(store.list, what="agent key pending")
        assert (rec["status"], rec["key"]) == ("pending", agent.public_key)
        assert ing.of_type("register") == []
        admin = gateway.login()
        r = admin.post(f"/api/agents/keys/{rec['fingerprint']}/approve")
        admin.close()
        assert r.status_code == 200, r.text
        wait_for(lambda: ing.frames_of("cam1/demo-coffee"), 15, what="frames once approved")
    finally:
        agent.stop()

    # Ingest's key changes (or someone answers in its place): a restarted agent refuses.
    other_public, _ = generate_keypair()
    gateway.app.state.gw.settings.gateway.ingest_public_key = other_public
    again = _agent(gateway.url, key_dir)
    with pytest.raises(KeyChangedError) as err:
        again.start()
    again.stop()
    msg = str(err.value)
    assert fingerprint(other_public) in msg and fingerprint(server_public) in msg
    assert str(pinned) in msg and "--server-key" in msg and "delete" in msg
    assert pinned.read_text().strip() == server_public  # the pin is not overwritten
    # --server-key pins explicitly and wins over the gateway's answer
    explicit = _agent(gateway.url, key_dir, server_key=server_public)
    explicit.start()
    try:
        wait_for(lambda: explicit.control.acks > 0, 15, what="explicitly pinned agent connected")
    finally:
        explicit.stop()


def test_running_agent_stops_when_ingest_key_changes(curve_ingest, gateway, tmp_path) -> None:
    from shared.security import load_or_create_keypair

    ing, _, store = curve_ingest
    key_dir = tmp_path / "agent-keys"
    store.approve(load_or_create_keypair(key_dir, "edge")[0])  # approved in advance
    agent = _agent(gateway.url, key_dir, key_recheck_s=1.0)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            agent.run()
        except BaseException as exc:  # noqa: BLE001 (handed to the test thread)
            errors.append(exc)

    runner = threading.Thread(target=run, daemon=True)
    runner.start()
    wait_for(lambda: agent._control is not None and agent.control.connected, 15,
             what="agent connected")  # fmt: skip
    ing.answer = False  # ingest silent, as when it restarts with another key
    gateway.app.state.gw.settings.gateway.ingest_public_key = generate_keypair()[0]
    runner.join(30)
    assert not runner.is_alive(), "agent kept running with a changed ingest key"
    [err] = errors
    assert isinstance(err, AgentFailure) and err.exit_code == 3
    assert "REFUSING ingest" in str(err) and "--server-key" in str(err)


def test_unreachable_gateway_is_retried_with_backoff_naming_the_url(
    tmp_path, port_factory, caplog
) -> None:
    url = f"http://127.0.0.1:{port_factory()}"
    agent = _agent(url, tmp_path / "keys", max_backoff_s=4.0)
    caplog.set_level(logging.WARNING, logger="edge_agent.enrol")
    runner = threading.Thread(target=agent.run, daemon=True)
    runner.start()

    def retries() -> list[logging.LogRecord]:
        recs = [r for r in caplog.records if "gateway not answering" in r.getMessage()]
        return recs if len(recs) >= 3 else []

    recs = wait_for(retries, 20, what="three enrolment attempts")
    assert [r.retry_s for r in recs[:3]] == [1.0, 2.0, 4.0]  # exponential backoff
    assert all(url + "/api/agents/bootstrap" in r.error for r in recs)
    agent.request_stop()
    runner.join(10)
    assert not runner.is_alive()  # stop works while enrolling; no thread left behind


def test_bootstrap_answer_is_validated() -> None:
    from edge_agent.enrol import GatewayUnavailable

    good = (b'{"version":"1","ingest":{"frame_endpoint":"tcp://h:1","control_endpoint":'
            b'"tcp://h:2","security":"curve","public_key":"' + b"a" * 40 + b'"}}')  # fmt: skip
    assert parse_bootstrap(good).public_key == "a" * 40
    for bad in (b"[]", b"nope", good.replace(b"tcp://h:1", b"ipc:///x"),
                good.replace(b"a" * 40, b"a" * 39), good.replace(b"curve", b"none")):  # fmt: skip
        with pytest.raises(GatewayUnavailable):
            parse_bootstrap(bad)


def test_a_thread_that_dies_stops_the_agent(ingest, monkeypatch, caplog) -> None:
    def broken(self, sock, cam, item):
        raise RuntimeError("planted bug")

    monkeypatch.setattr(FrameSender, "_send", broken)
    agent = EdgeAgent(EdgeConfig(
        client_id="t", frame_endpoint=ing_url(ingest, "frame"),
        control_endpoint=ing_url(ingest, "control"), sources=["demo:coffee"], fps=10,
    ))  # fmt: skip
    errors: list[BaseException] = []

    def run() -> None:
        try:
            agent.run()
        except BaseException as exc:  # noqa: BLE001 (handed to the test thread)
            errors.append(exc)

    runner = threading.Thread(target=run, daemon=True)
    runner.start()
    runner.join(20)
    if runner.is_alive():
        agent.request_stop()
        raise AssertionError("the agent kept running after its frame sender died")
    [err] = errors
    assert isinstance(err, AgentFailure) and err.exit_code == 1
    assert "frame-sender died" in str(err) and "planted bug" in str(err)
    assert any("agent thread died" in r.getMessage() for r in caplog.records)


def ing_url(ing, which: str) -> str:
    return ing.frame_url if which == "frame" else ing.control_url


def test_gateway_with_enrolment_off_is_a_clear_error(redis_config, tmp_path, port_factory):
    from edge_agent.enrol import EnrolError

    settings = GatewaySettings(
        gateway=GatewayConfig(admin_password="correct-horse-battery", password_hash_time_cost=1,
                              password_hash_memory_kib=1024, bootstrap_enabled=False),
        redis=redis_config, general=GeneralConfig(state_dir=str(tmp_path / "gw")),
        ingest=IngestConfig(),
    )  # fmt: skip
    srv = GatewayServer(settings, port_factory()).start()
    try:
        agent = _agent(srv.url, tmp_path / "keys")
        with pytest.raises(EnrolError, match="does not offer enrolment.*--server-key"):
            agent.run()
    finally:
        srv.stop()


def test_pending_agent_repeats_how_to_approve_it(curve_ingest, gateway, tmp_path, monkeypatch,
                                                 caplog) -> None:  # fmt: skip
    import edge_agent.agent as agent_module

    monkeypatch.setattr(agent_module, "PENDING_HINT_S", 0.0)
    agent = _agent(gateway.url, tmp_path / "keys", key_recheck_s=1.0)
    agent.start()
    try:

        def hint() -> list[logging.LogRecord]:
            return [
                r for r in caplog.records if "still waiting for an administrator" in r.getMessage()
            ]

        [rec, *_] = wait_for(hint, 15, what="the pending hint")
        assert rec.fingerprint == fingerprint(agent.public_key)
        assert rec.approve_in == f"{gateway.url}/ (Agents)"
    finally:
        agent.stop()


def test_insecure_ingest_via_gateway_streams_in_plaintext_with_a_warning(
    ingest, redis_config, tmp_path, port_factory, caplog
) -> None:
    frame_port = int(ingest.frame_url.rsplit(":", 1)[1])
    control_port = int(ingest.control_url.rsplit(":", 1)[1])
    settings = GatewaySettings(
        gateway=GatewayConfig(admin_password="correct-horse-battery", password_hash_time_cost=1,
                              password_hash_memory_kib=1024),
        redis=redis_config, general=GeneralConfig(state_dir=str(tmp_path / "gw")),
        ingest=IngestConfig(frame_port=frame_port, control_port=control_port, insecure=True),
    )  # fmt: skip
    srv = GatewayServer(settings, port_factory()).start()
    agent = _agent(srv.url, tmp_path / "keys")
    try:
        agent.start()
        wait_for(lambda: ingest.frames_of("cam1/demo-coffee"), 15, what="plaintext frames")
        assert agent.public_key is None and not list((tmp_path / "keys").glob("pinned-*"))
        assert any("INSECURE" in r.getMessage() for r in caplog.records)
    finally:
        agent.stop()
        srv.stop()
