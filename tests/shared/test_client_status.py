"""One rule for a client's status (shared.registry.client_status), and every reader
uses it: ingest's health check, the registry's client listing and the gateway's
camera tiles all say "offline" once an agent said bye."""

from __future__ import annotations

import time

from shared import registry
from tests.services.gateway.conftest import (
    add_client,
    anon,
    client,
    make_settings,
    pub_port,
    settings,
)

__all__ = ["anon", "client", "make_settings", "pub_port", "settings"]  # fixtures


def test_the_rule() -> None:
    now = 1000.0
    status = registry.client_status
    assert status({"last_seen": "995"}, now, 10, 30) == "online"
    assert status({"last_seen": 985.0}, now, 10, 30) == "stale"
    assert status({"last_seen": 960}, now, 10, 30) == "offline"
    assert status({}, now, 10, 30) == "offline"
    # Said bye (offline_at at or after the last heartbeat): offline at once.
    assert status({"last_seen": "999", "offline_at": "999.5"}, now, 10, 30) == "offline"
    assert status({"last_seen": 999.0, "offline_at": 999.0}, now, 10, 30) == "offline"
    # A heartbeat after an old bye: back online.
    assert status({"last_seen": "999", "offline_at": "900"}, now, 10, 30) == "online"
    assert status({"last_seen": b"999", "offline_at": b"bad"}, now, 10, 30) == "online"


def test_camera_tile_says_offline_after_bye(client, r, keys) -> None:
    add_client(r, keys, "lab", ("front",))
    [cam] = client.get("/api/cameras").json()
    assert cam["client_status"] == "online"
    r.hset(keys.client("lab"), "offline_at", str(time.time()))  # what ingest writes on bye
    [cam] = client.get("/api/cameras").json()
    assert cam["client_status"] == "offline"
    assert client.get(f"/api/cameras/{cam['camera_id']}").json()["client_status"] == "offline"
    assert registry.get_client(r, keys, "lab")["status"] == "offline"
