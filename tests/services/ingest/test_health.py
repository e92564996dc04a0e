"""Client health (online -> stale -> offline), notifications, cleanup (service and CLI)."""

from __future__ import annotations

import json
import logging
import time

import pytest

from services.ingest.__main__ import main
from shared import registry
from tests.helpers import wait_for


@pytest.fixture
def notifications(r, keys):
    """Collects the JSON messages ingest publishes on the notify channel."""
    sub = r.pubsub(ignore_subscribe_messages=True)
    sub.subscribe(keys.notify)
    wait_for(lambda: sub.get_message(timeout=0.01) is None and sub.subscribed)
    seen: list[dict] = []

    def collect() -> list[dict]:
        while (msg := sub.get_message(timeout=0.01)) is not None:
            seen.append(json.loads(msg["data"]))
        return seen

    yield collect
    sub.close()


def statuses(messages: list[dict], client_id: str) -> list[str]:
    return [
        m["status"]
        for m in messages
        if m["type"] == "client_status" and m["client_id"] == client_id
    ]


def test_online_stale_offline_with_notifications(make_server, make_agent, notifications, r, keys):
    # Margins for a loaded box: a pause under 2 s between heartbeats must not read as
    # stale (the notification sequence below would never match again).
    server = make_server(stale_after_s=2.0, offline_after_s=3.0, health_interval_s=0.05)
    agent = make_agent(server, "edge1")
    agent.register()

    wait_for(lambda: statuses(notifications(), "edge1") == ["online"], what="online")
    # Heartbeats keep it online...
    for _ in range(4):
        assert agent.heartbeat()["type"] == "ack"
        time.sleep(0.1)  # the agent's heartbeat period, not a wait for ingest
    assert statuses(notifications(), "edge1") == ["online"]
    # ...silence makes it stale, then offline: one notification per change.
    wait_for(
        lambda: statuses(notifications(), "edge1") == ["online", "stale", "offline"],
        what="stale then offline",
    )
    assert r.hget(keys.client("edge1"), "status") == "offline"
    client = registry.get_client(r, keys, "edge1", stale_after=2.0, offline_after=3.0)
    assert client["status"] == "offline"
    assert server.client_status["edge1"] == "offline"
    # The session expired with it: the agent is told to register again, then is online.
    wait_for(lambda: len(server.sessions) == 0, what="session expired")
    assert agent.heartbeat()["type"] == "reregister"
    agent.register()
    wait_for(lambda: statuses(notifications(), "edge1")[-1:] == ["online"], what="online again")


def test_cleanup_removes_offline_client_keeps_live_one(
    make_server, make_agent, notifications, r, keys
):
    # offline_after_s also expires sessions: "live" heartbeats every ~0.1 s, with room
    # for a loaded box's pauses.
    server = make_server(
        stale_after_s=0.5, offline_after_s=1.5, cleanup_after_s=2.5,
        health_interval_s=0.05, cleanup_interval_s=0.1,
    )  # fmt: skip
    gone = make_agent(server, "gone", cameras=("cam1",))
    live = make_agent(server, "live", cameras=("cam1",))
    gone.register()
    live.register()
    wait_for(lambda: registry.get_client(r, keys, "gone") and registry.get_client(r, keys, "live"))

    def removed() -> bool:
        assert live.heartbeat()["type"] == "ack"  # keeps "live" fresh meanwhile
        return registry.get_client(r, keys, "gone") is None

    wait_for(removed, timeout=20, interval=0.1, what="offline client removed")
    assert not r.sismember(keys.cameras, "gone/cam1")
    assert registry.get_camera(r, keys, "gone/cam1") is None
    assert registry.get_client(r, keys, "live")["status"] == "online"
    assert [c["client_id"] for c in registry.list_clients(r, keys)] == ["live"]
    assert any(m["type"] == "client_removed" and m["client_id"] == "gone" for m in notifications())
    wait_for(lambda: server.counters["clients_removed"] == 1, what="removal counted")


@pytest.fixture
def restore_logging():
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_cli_cleanup_prints_what_it_removed(r, keys, prefix, redis_url, monkeypatch, capsys,
                                           tmp_path, restore_logging):  # fmt: skip
    now = time.time()
    for cid, age in (("old", 7200.0), ("fresh", 5.0)):
        registry.register_client(r, keys, {"client_id": cid}, [{"name": "cam1"}])
        registry.touch_client(r, keys, cid, now=now - age)
    # The prefix goes through a YAML file: SENTRI_REDIS__PREFIX=x: parses as a mapping.
    cfg = tmp_path / "sentri.yaml"
    cfg.write_text(f'redis:\n  prefix: "{prefix}"\n')
    monkeypatch.delenv("SENTRI_CONFIG", raising=False)

    argv = ["--config", str(cfg), "--redis-url", redis_url, "cleanup", "--older-than", "3600"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "removed old" in out and "1 client(s) removed" in out
    assert "fresh" not in out
    assert registry.get_client(r, keys, "old") is None
    assert registry.get_client(r, keys, "fresh") is not None


def test_cli_rejects_missing_redis_url_and_bad_config(monkeypatch, capsys, tmp_path):
    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.delenv("SENTRI_REDIS__URL", raising=False)
    monkeypatch.delenv("SENTRI_CONFIG", raising=False)
    assert main(["cleanup"]) == 2
    assert "redis.url is not set" in capsys.readouterr().err

    cfg = tmp_path / "sentri.yaml"
    cfg.write_text("ingest:\n  pub_hwm: 0\n")
    assert main(["--config", str(cfg), "--redis-url", "redis://127.0.0.1:1/0"]) == 2
    assert "ingest.pub_hwm" in capsys.readouterr().err
