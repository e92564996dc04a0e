"""Authentication: no anonymous access, sessions, tokens, rate limiting, first-start admin."""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from services.gateway.app import create_app
from tests.services.gateway.conftest import ADMIN, PASSWORD, SAME_ORIGIN, add_client

PROTECTED = [
    ("GET", "/api/distributed/clients"),
    ("GET", "/api/distributed/clients/lab"),
    ("GET", "/api/distributed/stats"),
    ("POST", "/api/distributed/start_processing"),
    ("POST", "/api/distributed/stop_processing"),
    ("GET", "/api/distributed/processing"),
    ("POST", "/api/distributed/cleanup"),
    ("GET", "/api/cameras"),
    ("GET", "/api/cameras/lab/front"),
    ("POST", "/api/cameras/lab/front/stream/start"),
    ("POST", "/api/cameras/lab/front/stream/stop"),
    ("POST", "/api/cameras/lab/front/settings"),
    ("GET", "/api/cameras/lab/front/snapshot.jpg"),
    ("GET", "/api/cameras/lab/front/mjpeg"),
    ("GET", "/api/events"),
    ("GET", "/api/snapshots/abc"),
    ("GET", "/api/detections"),
    ("GET", "/api/analysis"),
    ("GET", "/api/faces"),
    ("POST", "/api/faces"),
    ("DELETE", "/api/faces/alice"),
    ("POST", "/api/faces/alice/rename"),
    ("GET", "/api/auth/me"),
    ("GET", "/api/auth/tokens"),
    ("POST", "/api/auth/tokens"),
    ("DELETE", "/api/auth/tokens/abc"),
    ("GET", "/openapi.json"),
    ("GET", "/api/agents/keys"),
    ("POST", "/api/agents/keys"),
    ("POST", "/api/agents/keys/0000:0000:0000:0000:0000:0000:0000:0000/approve"),
    ("POST", "/api/agents/keys/0000:0000:0000:0000:0000:0000:0000:0000/reject"),
    ("GET", "/metrics"),  # TestClient's peer is not loopback
]


@pytest.mark.parametrize(("method", "path"), PROTECTED)
def test_every_endpoint_refuses_anonymous_and_bad_tokens(anon, r, keys, method, path):
    add_client(r, keys)
    resp = anon.request(method, path)
    assert resp.status_code == 401, (path, resp.text)
    resp = anon.request(method, path, headers={"Authorization": "Bearer sentri_nope_nope"})
    assert resp.status_code == 401
    resp = anon.request(method, path, headers={"Authorization": "Basic YWRtaW46YWRtaW4="})
    assert resp.status_code == 401


def test_public_paths_need_no_login(anon):
    assert anon.get("/healthz").json() == {"status": "ok", "redis": True}
    assert anon.get("/login").status_code == 200
    assert anon.get("/static/js/app.js").status_code == 200
    resp = anon.get("/", follow_redirects=False)
    assert resp.status_code == 303 and resp.headers["location"] == "/login"
    assert anon.get("/distributed", follow_redirects=False).status_code == 303
    resp = anon.get("/docs", follow_redirects=False)  # the API reference page, like the dashboard
    assert resp.status_code == 303 and resp.headers["location"] == "/login"


def test_login_sets_strict_httponly_cookie_and_logout_ends_session(anon):
    resp = anon.post("/api/auth/login", json={"username": ADMIN, "password": PASSWORD})
    assert resp.status_code == 200
    cookie = resp.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
    assert "Secure" not in cookie
    sid = re.search(r"sentri_session=([^;]+)", cookie).group(1)
    assert anon.get("/api/auth/me").json() == {
        "user": ADMIN,
        "via": "session",
        "role": "admin",
        "cameras": ["*"],
    }
    assert anon.get("/").status_code == 200
    anon.post("/api/auth/logout")
    # The old session id is dead server-side, not just forgotten by the browser.
    anon.cookies.set("sentri_session", sid)
    assert anon.get("/api/auth/me").status_code == 401


def test_secure_cookie_when_configured(make_settings):
    app = create_app(make_settings(secure_cookies=True))
    with TestClient(app, headers={"Origin": "https://testserver"}) as c:  # the browser is on HTTPS
        resp = c.post("/api/auth/login", json={"username": ADMIN, "password": PASSWORD})
        assert "Secure" in resp.headers["set-cookie"]


def test_wrong_password_and_unknown_user_get_401(anon):
    for user, pw in ((ADMIN, "wrong-password"), ("nobody", PASSWORD)):
        resp = anon.post("/api/auth/login", json={"username": user, "password": pw})
        assert resp.status_code == 401
        assert "set-cookie" not in resp.headers


def test_login_rate_limit_429_with_retry_after_even_for_right_password(anon):
    for _ in range(5):
        assert (
            anon.post("/api/auth/login", json={"username": ADMIN, "password": "x"}).status_code
            == 401
        )
    resp = anon.post("/api/auth/login", json={"username": ADMIN, "password": PASSWORD})
    assert resp.status_code == 429
    assert 1 <= int(resp.headers["retry-after"]) <= 60


def test_rate_limit_per_user_across_ips(make_settings, r, keys):
    """Failures from many addresses against one account still trip the per-user limit."""
    app = create_app(make_settings(login_max_failures=3))
    with TestClient(app, headers=SAME_ORIGIN) as c:
        for i in range(3):
            c2 = TestClient(app, client=(f"10.0.0.{i}", 1234), headers=SAME_ORIGIN)
            assert (
                c2.post("/api/auth/login", json={"username": ADMIN, "password": "x"}).status_code
                == 401
            )
        resp = c.post("/api/auth/login", json={"username": ADMIN, "password": PASSWORD})
        assert resp.status_code == 429


def test_api_tokens_create_use_list_revoke(client, anon_factory=None):
    resp = client.post("/api/auth/tokens", json={"name": "grafana"})
    assert resp.status_code == 201
    created = resp.json()
    token = created["token"]
    assert token.startswith("sentri_") and created["name"] == "grafana"
    listed = client.get("/api/auth/tokens").json()
    assert [t["id"] for t in listed] == [created["id"]]
    assert "token" not in listed[0] and "sha256" not in listed[0]
    # Stored hashed: the secret is nowhere in Redis.
    raw = client.app.state.gw.r.hgetall(client.app.state.gw.keys.tokens)
    assert token.split("_", 2)[2] not in str(raw)

    bearer = {"Authorization": f"Bearer {token}"}
    client.cookies.clear()
    assert client.get("/api/auth/me", headers=bearer).json()["via"] == "token"
    assert client.get("/api/cameras", headers=bearer).status_code == 200
    # A token cannot mint or revoke tokens (needs an interactive session).
    assert client.post("/api/auth/tokens", json={"name": "x"}, headers=bearer).status_code == 403
    # A tampered secret is refused.
    assert (
        client.get("/api/auth/me", headers={"Authorization": f"Bearer {token}x"}).status_code == 401
    )

    client.post("/api/auth/login", json={"username": ADMIN, "password": PASSWORD})
    assert client.delete(f"/api/auth/tokens/{created['id']}").status_code == 200
    assert client.delete(f"/api/auth/tokens/{created['id']}").status_code == 404
    client.cookies.clear()
    assert client.get("/api/auth/me", headers=bearer).status_code == 401


def test_token_create_validates_body(client):
    assert client.post("/api/auth/tokens", json={}).status_code == 422
    assert client.post("/api/auth/tokens", json={"name": "x" * 65}).status_code == 422
    assert client.post("/api/auth/tokens", json={"name": "a", "admin": True}).status_code == 422


def test_cross_origin_cookie_write_is_refused(client, r, keys):
    add_client(r, keys)
    body = {"camera_id": "lab/front"}
    evil = {"Origin": "http://evil.example"}
    assert (
        client.post("/api/distributed/stop_processing", json=body, headers=evil).status_code == 403
    )
    same = {"Origin": "http://testserver"}
    assert (
        client.post("/api/distributed/stop_processing", json=body, headers=same).status_code == 200
    )


def test_password_change(client):
    bad = client.post(
        "/api/auth/password",
        json={"current_password": "nope-nope", "new_password": "another-long-one"},
    )
    assert bad.status_code == 403
    short = client.post(
        "/api/auth/password", json={"current_password": PASSWORD, "new_password": "short"}
    )
    assert short.status_code == 422
    ok = client.post(
        "/api/auth/password",
        json={"current_password": PASSWORD, "new_password": "another-long-one"},
    )
    assert ok.status_code == 200
    client.post("/api/auth/logout")
    resp = client.post("/api/auth/login", json={"username": ADMIN, "password": "another-long-one"})
    assert resp.status_code == 200


def test_first_start_generates_admin_once(make_settings, capsys, tmp_path):
    settings = make_settings(admin_password=None)
    with TestClient(create_app(settings), headers=SAME_ORIGIN):
        pass
    out = capsys.readouterr().out
    password = re.search(r"password: (\S+)", out).group(1)
    assert len(password) >= 20
    path = os.path.join(settings.general.state_dir, "admin-password.txt")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert password in Path(path).read_text()
    # Stored hashed (argon2), never in clear.
    with TestClient(create_app(settings), headers=SAME_ORIGIN) as c:
        raw = c.app.state.gw.r.hget(c.app.state.gw.keys.users, ADMIN)
        assert password not in raw and "$argon2id$" in raw
        assert (
            c.post("/api/auth/login", json={"username": ADMIN, "password": password}).status_code
            == 200
        )
    assert "password:" not in capsys.readouterr().out  # second start: not shown again


def test_admin_password_config_rejects_weak_value(make_settings):
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="at least 8"):
        make_settings(admin_password="short")


def test_metrics_from_loopback_or_with_credentials(make_server):
    import httpx

    srv = make_server()
    resp = httpx.get(f"{srv.url}/metrics", timeout=10)  # from 127.0.0.1
    assert resp.status_code == 200 and "sentri_gateway_http_requests_total" in resp.text
    srv2 = make_server(metrics_allow_loopback=False)
    assert httpx.get(f"{srv2.url}/metrics", timeout=10).status_code == 401
    c = srv2.login()
    assert c.get("/metrics").status_code == 200
