"""Accounts, roles, narrower tokens, sessions that end when they should, cookie-write
origin rules and the audit trail (issue 14)."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect as ws_connect

from tests.helpers import encode_jpeg, wait_for
from tests.services.gateway.conftest import ADMIN, PASSWORD, add_client

PW = "long-enough-password"
CLOSE_WITHIN_S = 5.0


def _user(client, name: str, role: str = "viewer", cameras=("demo/demo-bus",)) -> dict:
    body = {"username": name, "password": PW, "role": role, "cameras": list(cameras)}
    resp = client.post("/api/users", json=body)
    assert resp.status_code == 201, resp.text
    return resp.json()


def _login(app_client, name: str, password: str = PW):
    from fastapi.testclient import TestClient

    from tests.services.gateway.conftest import SAME_ORIGIN

    c = TestClient(app_client.app, headers=SAME_ORIGIN)
    assert (
        c.post("/api/auth/login", json={"username": name, "password": password}).status_code == 200
    )
    return c


# ------------------------------------------------------------------ bad input
@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"role": "superuser"}, "role"),
        ({"cameras": []}, "cameras"),
        ({"cameras": [""]}, "cameras"),
        ({"cameras": ["a b"]}, "cameras"),
        ({"cameras": ["lab/?"]}, "cameras"),
        ({"cameras": ["/lab"]}, "cameras"),
        ({"cameras": ["lab//x"]}, "cameras"),
        ({"password": "short-11chr"}, "password"),
        ({"username": "bad name"}, "username"),
        ({"extra": 1}, "extra"),
    ],
)
def test_bad_account_bodies_get_422_naming_the_field(client, body, field):
    full = {"username": "alice", "password": PW, "role": "viewer", "cameras": ["*"], **body}
    resp = client.post("/api/users", json=full)
    assert resp.status_code == 422, resp.text
    assert field in [str(x) for x in resp.json()["detail"][0]["loc"]]
    assert [u["username"] for u in client.get("/api/users").json()] == [ADMIN]


def test_patch_validates_too(client):
    _user(client, "alice")
    for body, field in (
        ({"role": "root"}, "role"),
        ({"cameras": ["x y"]}, "cameras"),
        ({"password": "x" * 11}, "password"),
    ):
        resp = client.patch("/api/users/alice", json=body)
        assert resp.status_code == 422 and field in resp.json()["detail"][0]["loc"]
    assert client.patch("/api/users/nobody", json={"role": "viewer"}).status_code == 404


# ------------------------------------------------------------- account admin
def test_account_lifecycle_and_the_last_admin(client):
    created = _user(client, "alice", "operator", ("shop", "lab/cam*"))
    assert created == {**created, "role": "operator", "cameras": ["lab/cam*", "shop"]}
    assert (
        client.post(
            "/api/users", json={"username": "alice", "password": PW, "role": "viewer"}
        ).status_code
        == 409
    )
    assert client.get("/api/users/alice").json()["role"] == "operator"
    assert "hash" not in json.dumps(client.get("/api/users").json())

    # The only administrator can be neither demoted, nor disabled, nor deleted.
    assert client.patch(f"/api/users/{ADMIN}", json={"role": "viewer"}).status_code == 409
    assert client.patch(f"/api/users/{ADMIN}", json={"disabled": True}).status_code == 409
    assert client.delete(f"/api/users/{ADMIN}").status_code == 409
    assert client.get(f"/api/users/{ADMIN}").json()["role"] == "admin"
    # With a second administrator it can.
    assert client.patch("/api/users/alice", json={"role": "admin"}).status_code == 200
    assert client.patch(f"/api/users/{ADMIN}", json={"role": "viewer"}).status_code == 200
    alice = _login(client, "alice")
    assert alice.delete("/api/users/alice").status_code == 409  # now alice is the last one
    assert alice.delete(f"/api/users/{ADMIN}").status_code == 200
    assert [u["username"] for u in alice.get("/api/users").json()] == ["alice"]


def test_viewer_is_read_only_and_sees_no_admin_routes(client, r, keys):
    add_client(r, keys, "demo", ("demo-bus", "demo-car"))
    _user(client, "guard")
    guard = _login(client, "guard")
    me = guard.get("/api/auth/me").json()
    assert me == {"user": "guard", "via": "session", "role": "viewer", "cameras": ["demo/demo-bus"]}
    assert [c["camera_id"] for c in guard.get("/api/cameras").json()] == ["demo/demo-bus"]
    body = {"camera_id": "demo/demo-bus"}
    assert guard.post("/api/distributed/stop_processing", json=body).status_code == 403
    assert guard.post("/api/cameras/demo/demo-bus/stream/stop").status_code == 403
    assert guard.post("/api/cameras/demo/demo-car/stream/stop").status_code == 404
    assert guard.delete("/api/faces/Ada").status_code == 403
    assert guard.post("/api/distributed/cleanup").status_code == 403
    for path in ("/api/users", "/api/audit", "/api/agents/keys"):
        assert guard.get(path).status_code == 403


# ------------------------------------------------------------ narrower tokens
def test_tokens_are_never_wider_than_their_owner(client, r, keys):
    add_client(r, keys, "demo", ("demo-bus", "demo-car"))
    add_client(r, keys, "other", ("cam",))
    _user(client, "op", "operator", ("demo",))
    op = _login(client, "op")
    # Wider than the owner: refused.
    assert op.post("/api/auth/tokens", json={"name": "t", "role": "admin"}).status_code == 403
    assert op.post("/api/auth/tokens", json={"name": "t", "cameras": ["*"]}).status_code == 403
    assert op.post("/api/auth/tokens", json={"name": "t", "cameras": ["other"]}).status_code == 403
    resp = op.post("/api/auth/tokens", json={"name": "t", "cameras": ["de*"]})
    assert resp.status_code == 403  # 'de*' could match clients outside 'demo'
    # Narrower: fine.
    resp = op.post(
        "/api/auth/tokens", json={"name": "bus", "role": "viewer", "cameras": ["demo/demo-bus"]}
    )
    assert resp.status_code == 201
    bearer = {"Authorization": f"Bearer {resp.json()['token']}"}
    anon = _anon(client)
    assert anon.get("/api/auth/me", headers=bearer).json() == {
        "user": "op", "via": "token", "role": "viewer", "cameras": ["demo/demo-bus"],
    }  # fmt: skip
    assert [c["camera_id"] for c in anon.get("/api/cameras", headers=bearer).json()] == [
        "demo/demo-bus"
    ]
    assert anon.get("/api/cameras/demo/demo-car", headers=bearer).status_code == 404
    # The token cannot widen itself: no token minting, no account changes, no writes.
    assert anon.post("/api/auth/tokens", json={"name": "x"}, headers=bearer).status_code == 403
    assert anon.patch("/api/users/op", json={"cameras": ["*"]}, headers=bearer).status_code == 403
    body = {"camera_id": "demo/demo-bus"}
    assert (
        anon.post("/api/distributed/stop_processing", json=body, headers=bearer).status_code == 403
    )
    # An admin's token narrowed to a viewer is a viewer.
    admin_token = client.post(
        "/api/auth/tokens", json={"name": "ro", "role": "viewer", "cameras": ["other"]}
    ).json()["token"]
    ro = {"Authorization": f"Bearer {admin_token}"}
    assert anon.get("/api/users", headers=ro).status_code == 403
    assert [c["camera_id"] for c in anon.get("/api/cameras", headers=ro).json()] == ["other/cam"]
    # An admin's token limited to some cameras is at most an operator: it could
    # otherwise create an account wider than itself.
    scoped_admin = client.post("/api/auth/tokens", json={"name": "s", "cameras": ["other"]})
    sa = {"Authorization": f"Bearer {scoped_admin.json()['token']}"}
    assert anon.get("/api/auth/me", headers=sa).json()["role"] == "operator"
    wide = {"username": "wide", "password": PW, "role": "admin", "cameras": ["*"]}
    assert anon.post("/api/users", json=wide, headers=sa).status_code == 403
    client.delete(f"/api/auth/tokens/{scoped_admin.json()['id']}")
    # The owner's scope shrinking shrinks the token with it.
    client.patch("/api/users/op", json={"cameras": ["other"]})
    assert anon.get("/api/cameras", headers=bearer).json() == []
    # Tokens are listed to their owner only (administrators see all).
    assert [t["name"] for t in op.get("/api/auth/tokens").json()] == ["bus"]
    assert {t["name"] for t in client.get("/api/auth/tokens").json()} == {"bus", "ro"}
    other_id = next(t["id"] for t in client.get("/api/auth/tokens").json() if t["name"] == "ro")
    assert op.delete(f"/api/auth/tokens/{other_id}").status_code == 404


def _anon(client):
    from fastapi.testclient import TestClient

    return TestClient(client.app)


# ------------------------------------------------------- sessions that end
def test_password_change_ends_the_other_sessions(client):
    _user(client, "alice")
    laptop, phone = _login(client, "alice"), _login(client, "alice")
    token = laptop.post("/api/auth/tokens", json={"name": "ci"}).json()["token"]
    resp = laptop.post(
        "/api/auth/password", json={"current_password": PW, "new_password": "a-new-long-password"}
    )
    assert resp.status_code == 200
    assert laptop.get("/api/auth/me").status_code == 200  # this session got a new cookie
    assert phone.get("/api/auth/me").status_code == 401  # the other one ended
    anon = _anon(client)
    assert anon.get("/api/auth/me", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    # An admin resetting the password ends every session of the user.
    assert (
        client.patch("/api/users/alice", json={"password": "reset-by-admin-1"}).status_code == 200
    )
    assert laptop.get("/api/auth/me").status_code == 401


def test_disable_and_delete_end_sessions_and_tokens_at_once(client):
    _user(client, "alice")
    alice = _login(client, "alice")
    token = alice.post("/api/auth/tokens", json={"name": "ci"}).json()["token"]
    bearer = {"Authorization": f"Bearer {token}"}
    anon = _anon(client)
    assert client.patch("/api/users/alice", json={"disabled": True}).status_code == 200
    assert alice.get("/api/auth/me").status_code == 401
    assert anon.get("/api/auth/me", headers=bearer).status_code == 401
    assert (
        anon.post("/api/auth/login", json={"username": "alice", "password": PW}).status_code == 401
    )
    # Enabling again does not revive the old session (it ended), but the token works again.
    client.patch("/api/users/alice", json={"disabled": False})
    assert alice.get("/api/auth/me").status_code == 401
    assert anon.get("/api/auth/me", headers=bearer).status_code == 200
    assert client.delete("/api/users/alice").status_code == 200
    assert anon.get("/api/auth/me", headers=bearer).status_code == 401
    assert client.get("/api/auth/tokens").json() == []  # its tokens are gone


@pytest.fixture
def live_server(make_server, r, keys, publisher) -> Iterator:
    srv = make_server(credential_recheck_s=0.5)
    add_client(r, keys, "demo", ("demo-bus",))
    jpeg = encode_jpeg(np.full((48, 64, 3), 90, np.uint8))
    stop = threading.Event()

    def frames() -> None:
        while not stop.is_set():
            publisher.publish("demo/demo-bus", jpeg=jpeg)
            stop.wait(0.05)

    t = threading.Thread(target=frames, daemon=True)
    t.start()
    admin = srv.login()
    try:
        yield srv, admin
    finally:
        stop.set()
        t.join(5)
        admin.close()


class OpenStreams:
    """An MJPEG stream and a websocket held open with one credential, in threads."""

    def __init__(self, srv, headers: dict[str, str]) -> None:
        self.ended: dict[str, float] = {}
        self.frames = {"mjpeg": 0, "ws": 0}
        self.srv, self.headers = srv, headers
        self.threads = [
            threading.Thread(target=self._mjpeg, daemon=True),
            threading.Thread(target=self._ws, daemon=True),
        ]
        for t in self.threads:
            t.start()
        wait_for(lambda: min(self.frames.values()) > 0, 15, what="both streams flowing")

    def _mjpeg(self) -> None:
        with (
            httpx.Client(base_url=self.srv.url, timeout=30) as c,
            c.stream("GET", "/api/cameras/demo/demo-bus/mjpeg", headers=self.headers) as resp,
        ):
            assert resp.status_code == 200
            try:
                for chunk in resp.iter_raw():
                    self.frames["mjpeg"] += chunk.count(b"--sentriframe")
            except httpx.HTTPError:
                pass
        self.ended["mjpeg"] = time.monotonic()

    def _ws(self) -> None:
        url = self.srv.url.replace("http", "ws") + "/ws"
        with ws_connect(url, additional_headers=self.headers, origin=self.srv.url) as ws:
            ws.send(json.dumps({"type": "subscribe", "cameras": ["demo/demo-bus"]}))
            try:
                while True:
                    if isinstance(ws.recv(timeout=30), bytes):
                        self.frames["ws"] += 1
            except (ConnectionClosed, TimeoutError):
                pass
        self.ended["ws"] = time.monotonic()

    def wait_closed(self, since: float) -> dict[str, float]:
        wait_for(lambda: len(self.ended) == 2, CLOSE_WITHIN_S + 5, what="streams closed")
        return {k: v - since for k, v in self.ended.items()}


def _session_headers(srv, user: str) -> tuple[httpx.Client, dict[str, str]]:
    c = httpx.Client(base_url=srv.url, timeout=10, headers={"Origin": srv.url})
    assert c.post("/api/auth/login", json={"username": user, "password": PW}).status_code == 200
    return c, {"Cookie": f"sentri_session={c.cookies['sentri_session']}"}


@pytest.mark.parametrize("how", ["delete", "disable", "revoke_token", "logout", "password"])
def test_open_streams_close_within_5_s(live_server, how):
    srv, admin = live_server
    assert (
        admin.post(
            "/api/users",
            json={"username": "guard", "password": PW, "role": "viewer", "cameras": ["demo/*"]},
        ).status_code
        == 201
    )
    session, cookie = _session_headers(srv, "guard")
    if how == "revoke_token":
        token = session.post("/api/auth/tokens", json={"name": "wall"}).json()
        headers = {"Authorization": f"Bearer {token['token']}"}
    elif how == "password":
        _, headers = _session_headers(srv, "guard")  # another session of the same user
    else:
        headers = cookie
    streams = OpenStreams(srv, headers)
    t0 = time.monotonic()
    if how == "delete":
        assert admin.delete("/api/users/guard").status_code == 200
    elif how == "disable":
        assert admin.patch("/api/users/guard", json={"disabled": True}).status_code == 200
    elif how == "revoke_token":
        assert session.delete(f"/api/auth/tokens/{token['id']}").status_code == 200
    elif how == "logout":
        assert session.post("/api/auth/logout").status_code == 200
    else:
        resp = session.post(
            "/api/auth/password",
            json={"current_password": PW, "new_password": "another-password-2"},
        )
        assert resp.status_code == 200
    closed = streams.wait_closed(t0)
    print(f"{how}: closed after {closed}")
    assert max(closed.values()) < CLOSE_WITHIN_S, closed
    session.close()


# -------------------------------------------------------- cookie-write origin
def test_cookie_writes_need_same_origin_and_a_known_host(client, r, keys):
    add_client(r, keys, "lab", ("front",))
    body = {"camera_id": "lab/front"}
    url = "/api/distributed/stop_processing"
    assert client.post(url, json=body, headers={"Origin": ""}).status_code == 403  # no Origin
    assert client.post(url, json=body, headers={"Origin": "https://testserver"}).status_code == 403
    resp = client.post(url, json=body, headers={"Origin": "", "Referer": "http://testserver/"})
    assert resp.status_code == 200  # a same-origin Referer will do
    foreign = {"Host": "rebind.evil.example", "Origin": "http://rebind.evil.example"}
    assert client.post(url, json=body, headers=foreign).status_code == 403
    assert client.get("/api/cameras", headers={"Host": "rebind.evil.example"}).status_code == 403
    # Tokens are not cookies: integrations may use any host name.
    token = client.post("/api/auth/tokens", json={"name": "ci"}).json()["token"]
    anon = _anon(client)
    bearer = {"Authorization": f"Bearer {token}", "Host": "sentri.lan"}
    assert anon.post(url, json=body, headers=bearer).status_code == 200
    # Logging in through a foreign name is refused (the cookie would belong to it).
    resp = anon.post(
        "/api/auth/login",
        json={"username": ADMIN, "password": PASSWORD},
        headers={"Host": "rebind.evil.example"},
    )
    assert resp.status_code == 403


def test_default_allowed_hosts_are_bind_address_and_loopback_names(make_settings):
    from services.gateway.deps import allowed_host_names

    s = make_settings(allowed_hosts=[], host="10.1.2.3")
    assert allowed_host_names(s) == {"10.1.2.3", "localhost", "127.0.0.1"}
    lan = allowed_host_names(make_settings(allowed_hosts=[], host="0.0.0.0"))
    assert {"localhost", "127.0.0.1", socket.gethostname().lower()} <= lan
    assert allowed_host_names(make_settings(allowed_hosts=["Sentri.LAN"])) == {"sentri.lan"}


# --------------------------------------------------------------------- audit
def test_audit_trail_records_who_did_what_from_where(client, r, keys):
    from shared.security import AgentKeyStore, fingerprint, generate_keypair

    add_client(r, keys, "lab", ("front",))
    anon = _anon(client)
    anon.post("/api/auth/login", json={"username": ADMIN, "password": "wrong-password"})
    _user(client, "alice", "operator", ("lab",))
    client.patch("/api/users/alice", json={"role": "viewer", "password": "x" * 12})
    tok = client.post("/api/auth/tokens", json={"name": "ci"}).json()
    client.delete(f"/api/auth/tokens/{tok['id']}")
    client.post("/api/distributed/stop_processing", json={"camera_id": "lab/front"})
    client.post("/api/cameras/lab/front/stream/stop")
    key, _ = generate_keypair()
    AgentKeyStore(r, keys).note_pending(key)
    client.post(f"/api/agents/keys/{fingerprint(key)}/approve")
    client.delete("/api/users/alice")

    page = client.get("/api/audit", params={"limit": 100}).json()
    recs = page["records"]
    actions = [x["action"] for x in recs][::-1]  # oldest first
    assert actions == [
        "login", "login_failed", "user_created", "user_updated", "token_created",
        "token_revoked", "processing_stopped", "stream_stopped", "agent_key_approved",
        "user_deleted",
    ]  # fmt: skip
    by = {x["action"]: x for x in recs}
    assert by["login_failed"]["user"] == ADMIN and by["login_failed"]["ip"] == "testclient"
    assert by["user_updated"]["detail"] == {"role": "viewer", "password": "changed"}
    assert by["processing_stopped"]["target"] == "lab/front"
    assert by["agent_key_approved"]["target"] == fingerprint(key)
    assert "x" * 12 not in json.dumps(recs)  # passwords never reach the trail
    only = client.get("/api/audit", params={"action": "user_deleted"}).json()["records"]
    assert [x["target"] for x in only] == ["alice"]
    first = client.get("/api/audit", params={"limit": 3}).json()
    second = client.get("/api/audit", params={"limit": 3, "cursor": first["next_cursor"]}).json()
    assert [x["id"] for x in first["records"] + second["records"]] == [x["id"] for x in recs[:6]]


def test_audit_stream_is_bounded(make_settings, r, keys):
    from fastapi.testclient import TestClient

    from services.gateway.app import create_app
    from tests.services.gateway.conftest import SAME_ORIGIN

    with TestClient(create_app(make_settings(audit_max_entries=100)), headers=SAME_ORIGIN) as c:
        for _ in range(400):
            c.post("/api/auth/login", json={"username": "nobody", "password": "x"})
        assert r.xlen(keys.audit) < 400
    # Retention by age: records older than audit_retention_days go.
    r.delete(keys.audit)
    old_ms = int((time.time() - 3 * 86400) * 1000)
    for i in range(300):  # whole macro nodes of old entries (trimming is approximate)
        r.xadd(keys.audit, {"action": "login", "ts": str(old_ms)}, id=f"{old_ms}-{i}")
    with TestClient(create_app(make_settings(audit_retention_days=1)), headers=SAME_ORIGIN) as c:
        c.post("/api/auth/login", json={"username": "nobody", "password": "x"})
    remaining = r.xrange(keys.audit)
    assert len(remaining) < 300
    assert remaining[-1][1]["action"] in ("login_failed", "login_rate_limited")


def test_metrics_need_an_admin_off_loopback(client):
    """/metrics is process-wide (not scoped): a viewer gets 403, an admin the figures."""
    _user(client, "guard")
    guard = _login(client, "guard")
    assert guard.get("/metrics").status_code == 403  # TestClient's peer is not loopback
    assert client.get("/metrics").status_code == 200


def test_behind_a_tls_proxy_the_origin_is_https(make_settings, r, keys):
    """secure_cookies: the browser is on HTTPS (a proxy terminates TLS), so its https
    Origin is the same origin and an http one is not."""
    from fastapi.testclient import TestClient

    from services.gateway.app import create_app

    add_client(r, keys, "lab", ("front",))
    app = create_app(make_settings(secure_cookies=True, allowed_hosts=["sentri.example"]))
    with TestClient(app, base_url="https://sentri.example") as c:
        login = {"username": ADMIN, "password": PASSWORD}
        assert c.post("/api/auth/login", json=login).status_code == 200
        body = {"camera_id": "lab/front"}
        url = "/api/distributed/stop_processing"
        https = {"Origin": "https://sentri.example", "Host": "sentri.example"}
        assert c.post(url, json=body, headers=https).status_code == 200
        http = {"Origin": "http://sentri.example", "Host": "sentri.example"}
        assert c.post(url, json=body, headers=http).status_code == 403
