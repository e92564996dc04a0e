"""/api/agents/keys: the agent key allow-list as administrators see and decide it."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from services.gateway.app import create_app
from shared.metrics import INVALID_INPUT
from shared.security import AgentKeyStore, _KeyCallback, fingerprint, generate_keypair
from tests.helpers import wait_for
from tests.services.gateway.conftest import SAME_ORIGIN

UNKNOWN_FP = "0123:4567:89ab:cdef:0123:4567:89ab:cdef"


@pytest.fixture
def store(r, keys) -> AgentKeyStore:
    return AgentKeyStore(r, keys)


def _pending(store: AgentKeyStore) -> str:
    """An agent key as ingest records it on a refused CURVE handshake."""
    public, _ = generate_keypair()
    store.note_pending(public)
    return public


def test_pending_key_is_listed_and_approval_lets_the_agent_in(client, store):
    assert client.get("/api/agents/keys").json() == []
    key = _pending(store)
    zap = _KeyCallback(store, cache_s=0)  # ingest's ZAP decision for this key
    assert zap.callback("sentri", key.encode()) is False

    listed = client.get("/api/agents/keys").json()
    assert len(listed) == 1
    k = listed[0]
    assert k["fingerprint"] == fingerprint(key) and k["key"] == key
    assert k["status"] == "pending" and k["first_seen"] <= k["last_seen"]
    assert k["client_ids"] == [] and k["decided_at"] is None
    assert client.get("/api/agents/keys", params={"status": "approved"}).json() == []

    resp = client.post(f"/api/agents/keys/{k['fingerprint']}/approve")
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["status"] == "approved" and body["decided_by"] == "admin"
    assert store.status(key) == "approved"
    assert zap.callback("sentri", key.encode()) is True  # the next handshake succeeds
    assert [x["fingerprint"] for x in client.get("/api/agents/keys?status=approved").json()] == [
        k["fingerprint"]
    ]


def test_reject_refuses_the_key_and_unbinds_its_clients(client, store):
    key = _pending(store)
    store.approve(key)
    assert store.bind_client("lab", key)
    assert client.get("/api/agents/keys").json()[0]["client_ids"] == ["lab"]
    resp = client.post(f"/api/agents/keys/{fingerprint(key)}/reject")
    assert resp.status_code == 200
    assert resp.json()["status"] == "rejected" and resp.json()["client_ids"] == []
    assert store.key_for_client("lab") is None
    assert _KeyCallback(store, cache_s=0).callback("sentri", key.encode()) is False
    # A rejected key can be approved again (an admin changing their mind).
    assert (
        client.post(f"/api/agents/keys/{fingerprint(key)}/approve").json()["status"] == "approved"
    )


def test_pending_keys_are_listed_first(client, store):
    old = _pending(store)
    store.approve(old)
    new = _pending(store)
    order = [k["key"] for k in client.get("/api/agents/keys").json()]
    assert order == [new, old]


def test_unknown_or_malformed_fingerprint(client, store):
    _pending(store)
    resp = client.post(f"/api/agents/keys/{UNKNOWN_FP}/approve")
    assert resp.status_code == 404 and UNKNOWN_FP in resp.json()["detail"]
    assert client.post(f"/api/agents/keys/{UNKNOWN_FP}/reject").status_code == 404
    for bad in ("nope", "0123:4567", UNKNOWN_FP.upper(), UNKNOWN_FP + ":0000", "x" * 40):
        assert client.post(f"/api/agents/keys/{bad}/approve").status_code in (404, 422), bad
    # A full 40-character key in the path is not a fingerprint: nothing gets approved.
    key = _pending(store)
    # (a z85 key may hold "?" or "/": the path then names /keys/{x} itself, which only
    # answers DELETE: 405)
    assert client.post(f"/api/agents/keys/{key}/approve").status_code in (404, 405, 422)
    assert store.status(key) == "pending"
    assert client.get("/api/agents/keys", params={"status": "bogus"}).status_code == 422


def test_preapprove_a_public_key(client, store):
    public, _ = generate_keypair()
    resp = client.post("/api/agents/keys", json={"key": public})
    assert resp.status_code == 201, resp.text
    assert resp.json()["fingerprint"] == fingerprint(public)
    assert store.status(public) == "approved"
    assert _KeyCallback(store, cache_s=0).callback("sentri", public.encode()) is True
    for bad in ("short", public[:39] + " ", public + "x", public[:39] + "~"):
        assert client.post("/api/agents/keys", json={"key": bad}).status_code == 422, bad
    assert client.post("/api/agents/keys", json={"key": public, "x": 1}).status_code == 422


def test_auth_failures(anon, client, store, settings):
    key = _pending(store)
    fp = fingerprint(key)
    paths = [("GET", "/api/agents/keys"), ("POST", f"/api/agents/keys/{fp}/approve"),
             ("POST", f"/api/agents/keys/{fp}/reject")]  # fmt: skip
    with TestClient(create_app(settings), headers=SAME_ORIGIN) as nobody:
        for method, path in paths:
            assert nobody.request(method, path).status_code == 401
            bad = {"Authorization": "Bearer sentri_abc_def"}
            assert nobody.request(method, path, headers=bad).status_code == 401
    # A logged-in browser on another site cannot make the admin approve a key (CSRF).
    evil = client.post(f"/api/agents/keys/{fp}/approve", headers={"Origin": "http://evil.example"})
    assert evil.status_code == 403
    assert store.status(key) == "pending"
    # API tokens of an administrator work (automation, e.g. provisioning scripts).
    token = client.post("/api/auth/tokens", json={"name": "provision"}).json()["token"]
    with TestClient(create_app(settings), headers=SAME_ORIGIN) as bot:
        bot.headers["Authorization"] = f"Bearer {token}"
        assert bot.get("/api/agents/keys").status_code == 200
        assert bot.post(f"/api/agents/keys/{fp}/approve").status_code == 200


def test_non_admin_accounts_get_403(client, store):
    gw = client.app.state.gw
    gw.auth.set_password("viewer", "viewer-password", role="viewer")
    fp = fingerprint(_pending(store))
    viewer = TestClient(client.app, headers=SAME_ORIGIN)  # a second browser on the same running app
    assert (
        viewer.post(
            "/api/auth/login", json={"username": "viewer", "password": "viewer-password"}
        ).status_code
        == 200
    )
    assert viewer.get("/api/auth/me").status_code == 200  # logged in...
    assert viewer.get("/api/agents/keys").status_code == 403  # ...but not an admin
    assert viewer.post(f"/api/agents/keys/{fp}/approve").status_code == 403
    assert store.status(store.resolve(fp)) == "pending"
    # A deleted account is signed out at once, even with its session still in Redis.
    gw.r.hdel(gw.keys.users, "viewer")
    assert viewer.get("/api/auth/me").status_code == 401
    assert client.get("/api/agents/keys").status_code == 200  # the admin is unaffected


def test_websocket_announces_pending_keys_and_decisions(make_server, r, keys, store):
    from tests.services.gateway.test_ws import _recv_json, _token, _ws

    srv = make_server()
    token = _token(srv)
    with _ws(srv, token) as ws:
        _recv_json(ws, "hello")
        wait_for(lambda: srv.app.state.gw.hub.connections, 5, what="connection registered")
        seen: list[str] = []

        def pending_announced():
            # The notify subscription may start just after the socket: retry with new keys.
            seen.append(_pending(store))
            try:
                return _recv_json(ws, "agent_key_pending", timeout=0.3)
            except (AssertionError, TimeoutError):
                return None

        msg = wait_for(pending_announced, 10, 0, "agent_key_pending")
        assert msg["fingerprint"] in {fingerprint(k) for k in seen}
        assert set(msg) == {"fingerprint"}  # no key material in the broadcast
        c = srv.login()
        assert c.post(f"/api/agents/keys/{msg['fingerprint']}/approve").status_code == 200
        upd = _recv_json(ws, "agent_key_update")
        assert upd == {"fingerprint": msg["fingerprint"], "status": "approved"}
        # A malformed notice is dropped and counted; the socket keeps working.
        bad = INVALID_INPUT.labels("gateway", "bad_notify")
        before = bad._value.get()
        r.publish(keys.notify, '{"type": "agent_key_pending", "fingerprint": 7}')
        wait_for(lambda: bad._value.get() == before + 1, 5, what="bad notice counted")
        ws.send('{"type": "ping"}')
        _recv_json(ws, "pong")
