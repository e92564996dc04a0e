"""DELETE /api/agents/keys/{fingerprint}: administrators forget a key; others get 403."""

from __future__ import annotations

from fastapi.testclient import TestClient

from shared.security import AgentKeyStore, fingerprint, generate_keypair
from tests.services.gateway.conftest import anon, client, make_settings, pub_port, settings

__all__ = ["anon", "client", "make_settings", "pub_port", "settings"]  # fixtures


def test_admin_deletes_a_key_and_its_client_ids_are_freed(client, r, keys):
    store = AgentKeyStore(r, keys)
    key = generate_keypair()[0]
    store.approve(key)
    assert store.bind_client("lab", key)
    fp = fingerprint(key)
    resp = client.delete(f"/api/agents/keys/{fp}")
    assert resp.status_code == 200, resp.text
    assert resp.json()["fingerprint"] == fp and resp.json()["client_ids"] == []
    assert store.get(key) is None and store.key_for_client("lab") is None
    assert client.get("/api/agents/keys").json() == []
    assert client.delete(f"/api/agents/keys/{fp}").status_code == 404


def test_only_admins_may_delete_keys(client, r, keys):
    store = AgentKeyStore(r, keys)
    key = generate_keypair()[0]
    store.note_pending(key, announce=False)
    gw = client.app.state.gw
    gw.auth.set_password("op", "operator-password", role="operator")
    operator = TestClient(client.app)
    login = operator.post(
        "/api/auth/login", json={"username": "op", "password": "operator-password"}
    )
    assert login.status_code == 200
    assert operator.delete(f"/api/agents/keys/{fingerprint(key)}").status_code == 403
    assert store.status(key) == "pending"
