"""Tests a mutation audit found missing (issue 12): each fails on a one-line bug."""

from __future__ import annotations

from fastapi.testclient import TestClient

from shared.security import AgentKeyStore, fingerprint, generate_keypair
from tests.services.gateway.conftest import SAME_ORIGIN, add_client

VIEWER_PW = "viewer-password-long"


def _second_user(client: TestClient, role: str) -> TestClient:
    gw = client.app.state.gw
    gw.auth.set_password("someone", VIEWER_PW, role=role)
    other = TestClient(client.app, headers=SAME_ORIGIN)
    resp = other.post("/api/auth/login", json={"username": "someone", "password": VIEWER_PW})
    assert resp.status_code == 200
    return other


def test_preapprove_and_reject_are_admin_only(client, r, keys):
    store = AgentKeyStore(r, keys)
    pending, _ = generate_keypair()
    store.note_pending(pending)
    fp = fingerprint(pending)
    fresh, _ = generate_keypair()
    for role in ("viewer", "operator"):
        other = _second_user(client, role)
        assert other.post("/api/agents/keys", json={"key": fresh}).status_code == 403
        assert other.post(f"/api/agents/keys/{fp}/reject").status_code == 403
        assert other.post(f"/api/agents/keys/{fp}/approve").status_code == 403
    assert store.get(fresh) is None  # nothing was approved in advance
    assert store.status(pending) == "pending"  # nor rejected
    assert client.post(f"/api/agents/keys/{fp}/reject").status_code == 200


def test_deleted_accounts_api_token_is_refused(client):
    gw = client.app.state.gw
    gw.auth.set_password("bot-owner", VIEWER_PW, role="admin")
    owner = TestClient(client.app, headers=SAME_ORIGIN)
    owner.post("/api/auth/login", json={"username": "bot-owner", "password": VIEWER_PW})
    token = owner.post("/api/auth/tokens", json={"name": "ci"}).json()["token"]
    bearer = {"Authorization": f"Bearer {token}"}
    anon = TestClient(client.app, headers=SAME_ORIGIN)
    assert anon.get("/api/cameras", headers=bearer).status_code == 200
    gw.r.hdel(gw.keys.users, "bot-owner")
    assert anon.get("/api/cameras", headers=bearer).status_code == 401
    assert anon.get("/api/auth/me", headers=bearer).status_code == 401


def test_origin_matching_is_exact_not_by_prefix(client, r, keys):
    add_client(r, keys)
    body = {"camera_id": "lab/front"}
    for origin in (
        "http://testserver.evil.example",
        "http://testserver:80.evil.example",
        "https://testserver",  # another scheme
        "http://testserver:8080",  # another port
        "null",
    ):
        resp = client.post(
            "/api/distributed/stop_processing", json=body, headers={"Origin": origin}
        )
        assert resp.status_code == 403, origin
    resp = client.post(
        "/api/distributed/stop_processing", json=body, headers={"Origin": "http://testserver"}
    )
    assert resp.status_code == 200
