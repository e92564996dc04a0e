"""Camera scope over EVERY route of the OpenAPI schema, generated, not hand-picked.

A viewer and an operator scoped to ``demo/demo-bus`` get 200 for that camera and 404
(single items) or nothing (lists) for ``demo/demo-car`` and ``other/cam`` on every route
that takes or returns a camera.  The walk also checks, from the schema, that every such
route depends on the one enforcement point (``deps.camera_scope``) or is admin-only:
adding a camera route without the scope check fails here.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi.routing import APIRoute
from websockets.sync.client import connect as ws_connect

from services.gateway.deps import camera_scope, require_admin
from services.gateway.hub import decode_frame_message
from shared.ingest_info import publish_ingest_info
from shared.keys import SERVICES
from shared.redisutil import publish_record
from shared.security import AgentKeyStore, fingerprint, generate_keypair
from tests.helpers import encode_jpeg
from tests.services.gateway.conftest import add_client

ALLOWED = "demo/demo-bus"
OTHERS = ("demo/demo-car", "other/cam")
CAMERAS = (ALLOWED, *OTHERS)
LEAK_MARKERS = (*OTHERS, '"other"', "snap-other", "snap-demo-demo-car")
SCOPED_PASSWORD = "scoped-password-123"

# Routes that return scope *patterns* (an account's own settings), not camera data.
NOT_CAMERA_DATA = {
    ("get", "/api/auth/me"),
    ("post", "/api/auth/login"),
    ("get", "/api/auth/tokens"),
    ("post", "/api/auth/tokens"),
}
CAMERA_PARAMS = {"camera_id", "client_id", "snapshot_id"}
CAMERA_PROPERTIES = {"camera_id", "client_id", "cameras", "latest", "camera"}
# Lists whose admin answer must mention the other cameras (else the walk proves nothing).
MUST_LEAK_FOR_ADMIN = {
    "/api/cameras",
    "/api/distributed/clients",
    "/api/distributed/processing",
    "/api/events",
    "/api/detections",
    "/api/analysis",
}


def _value(kind: str, allowed: bool, pending_fp: str) -> str:
    if kind == "camera_id":
        return ALLOWED if allowed else OTHERS[0]
    if kind == "client_id":
        return "demo" if allowed else "other"
    if kind == "snapshot_id":
        return "snap-demo-demo-bus" if allowed else "snap-demo-demo-car"
    if kind == "fingerprint":
        return pending_fp
    if kind == "name":
        return "op"
    return "abc"


class Walk:
    def __init__(self, schema: dict[str, Any]) -> None:
        self.schema = schema

    def resolve(self, node: Any) -> Any:
        while isinstance(node, dict) and "$ref" in node:
            name = node["$ref"].rsplit("/", 1)[-1]
            node = self.schema["components"]["schemas"][name]
        return node

    def mentions_camera(self, node: Any, seen: set[str] | None = None) -> bool:
        """Does this schema carry camera data (a camera/client id, or an image)?"""
        seen = seen if seen is not None else set()
        if isinstance(node, dict):
            ref = node.get("$ref")
            if ref:
                if ref in seen:
                    return False
                seen.add(ref)
                return self.mentions_camera(self.resolve(node), seen)
            if CAMERA_PROPERTIES & set(node.get("properties", {})):
                return True
            return any(self.mentions_camera(v, seen) for v in node.values())
        if isinstance(node, list):
            return any(self.mentions_camera(v, seen) for v in node)
        return False

    def touches_camera(self, path: str, op: dict[str, Any]) -> bool:
        params = {p["name"] for p in op.get("parameters", [])}
        if params & CAMERA_PARAMS:
            return True
        if self.mentions_camera(op.get("requestBody", {})):
            return True
        for status, resp in op.get("responses", {}).items():
            if not status.startswith("2"):
                continue
            content = resp.get("content", {})
            if any(ct.startswith(("image/", "multipart/x-mixed")) for ct in content):
                return True
            if self.mentions_camera(content):
                return True
        return False

    def body(self, op: dict[str, Any], camera: str) -> dict[str, Any] | None:
        rb = op.get("requestBody")
        if not rb:
            return None
        content = rb.get("content", {})
        if "application/json" not in content:
            return None
        return self._example(content["application/json"]["schema"], camera)

    def _example(self, node: Any, camera: str) -> Any:
        node = self.resolve(node)
        if "anyOf" in node:
            node = self.resolve(next(n for n in node["anyOf"] if n.get("type") != "null"))
        if node.get("type") == "object" or "properties" in node:
            out = {}
            for name, sub in node.get("properties", {}).items():
                sub_r = self.resolve(sub)
                if "anyOf" in sub_r:
                    sub_r = self.resolve(next(n for n in sub_r["anyOf"] if n.get("type") != "null"))
                if name in node.get("required", []) or "minimum" in sub_r:
                    out[name] = self._named(name, sub_r, camera)
            return out
        return self._named("", node, camera)

    def _named(self, name: str, node: dict[str, Any], camera: str) -> Any:
        if name == "camera_id":
            return camera
        # A field with a format this generator cannot guess declares an example
        # (pydantic Field(examples=[...])): the walk uses it.
        if node.get("examples"):
            return node["examples"][0]
        if "example" in node:
            return node["example"]
        if "enum" in node:
            return node["enum"][0]
        if "const" in node:
            return node["const"]
        kind = node.get("type")
        if kind == "integer":
            return int(node.get("minimum", 1))
        if kind == "number":
            return float(node.get("minimum", 1))
        if kind == "boolean":
            return False
        if kind == "array":
            return ["*"]
        return "x" * max(1, int(node.get("minLength", 1)))


def _api_routes(routes: list[Any]) -> Iterator[APIRoute]:
    """Every APIRoute, also inside included routers (FastAPI >= 0.165 wraps them)."""
    for route in routes:
        if isinstance(route, APIRoute):
            yield route
        inner = getattr(route, "original_router", None)
        if inner is not None:
            yield from _api_routes(inner.routes)


def _route_calls(app, method: str, path: str) -> set[Any]:
    """Every dependency callable of the route serving (method, path)."""
    for route in _api_routes(app.routes):
        if (
            isinstance(route, APIRoute)
            and route.path_format == path
            and method.upper() in (route.methods or set())
        ):
            calls: set[Any] = set()
            stack = list(route.dependant.dependencies)
            while stack:
                dep = stack.pop()
                calls.add(dep.call)
                stack.extend(dep.dependencies)
            return calls
    raise AssertionError(f"no route for {method} {path}")


@pytest.fixture
def world(make_server, r, keys, publisher) -> Iterator[dict[str, Any]]:
    """A gateway with three cameras on two clients, results for each, live frames for
    each, a scoped viewer and a scoped operator."""
    srv = make_server(snapshot_wait_s=2.0, credential_recheck_s=0.5)
    add_client(r, keys, "demo", ("demo-bus", "demo-car"))
    add_client(r, keys, "other", ("cam",))
    now_ms = int(time.time() * 1000)
    jpeg = encode_jpeg(np.full((48, 64, 3), 100, np.uint8))
    rb = srv.app.state.gw.rb
    for cam in CAMERAS:
        snap = "snap-" + cam.replace("/", "-")
        rb.set(keys.snapshot(snap), jpeg, ex=600)
        event = {"camera_id": cam, "type": "object_entered", "ts": now_ms, "snapshot_id": snap}
        publish_record(r, keys, "events", event, maxlen=1000)
        det = {"camera_id": cam, "ts": now_ms, "objects": [{"class": "person"}]}
        publish_record(r, keys, "detections", det, maxlen=1000)
        publish_record(r, keys, "analysis", {"camera_id": cam, "ts": now_ms, "summary": "s"}, maxlen=1000)  # fmt: skip
        for svc in SERVICES:
            stats = {"fps": 1, "processed": 3, "skipped": 0, "updated": time.time()}
            r.hset(keys.worker_stats(svc), cam, json.dumps(stats))
    publish_ingest_info(
        r,
        keys,
        bind_host="127.0.0.1",
        frame_port=5555,
        control_port=5556,
        public_key=generate_keypair()[0],
    )  # a running ingest (agent bootstrap)
    store = AgentKeyStore(r, keys)
    pending, _ = generate_keypair()
    store.note_pending(pending)

    admin = srv.login()
    for name, role in (("guard", "viewer"), ("op", "operator")):
        body = {"username": name, "password": SCOPED_PASSWORD, "role": role, "cameras": [ALLOWED]}
        assert admin.post("/api/users", json=body).status_code == 201

    stop = threading.Event()

    def frames() -> None:
        while not stop.is_set():
            for cam in CAMERAS:
                publisher.publish(cam, jpeg=jpeg)
            stop.wait(0.05)

    t = threading.Thread(target=frames, daemon=True)
    t.start()
    try:
        yield {"srv": srv, "admin": admin, "pending_fp": fingerprint(pending)}
    finally:
        stop.set()
        t.join(5)
        admin.close()


def _client(srv, user: str) -> httpx.Client:
    c = httpx.Client(base_url=srv.url, timeout=15, headers={"Origin": srv.url})
    resp = c.post("/api/auth/login", json={"username": user, "password": SCOPED_PASSWORD})
    assert resp.status_code == 200, resp.text
    return c


def _call(c: httpx.Client, method: str, url: str, body: Any) -> tuple[int, str]:
    """Status and (for non-streams) body text; streams are closed after the headers."""
    with c.stream(method.upper(), url, json=body) as resp:
        if resp.headers.get("content-type", "").startswith("multipart/x-mixed-replace"):
            return resp.status_code, ""
        return resp.status_code, resp.read().decode("latin-1")


def test_every_route_enforces_the_camera_scope(world):
    srv, admin, fp = world["srv"], world["admin"], world["pending_fp"]
    walk = Walk(admin.get("/openapi.json").json())
    users = {"viewer": _client(srv, "guard"), "operator": _client(srv, "op")}
    missing, failures, leaked_for_admin = [], [], set()
    checked = 0
    for path, ops in walk.schema["paths"].items():
        for method, op in ops.items():
            if path in ("/api/auth/logout", "/api/auth/password"):
                continue  # would end the walking user's session; tested in test_users.py
            calls = _route_calls(srv.app, method, path)
            admin_only = require_admin in calls
            scoped = camera_scope in calls
            touches = walk.touches_camera(path, op) and (method, path) not in NOT_CAMERA_DATA
            if touches and not (scoped or admin_only):
                missing.append(f"{method.upper()} {path}")
                continue
            params = [p for p in op.get("parameters", []) if p["in"] == "path"]
            has_cam_param = any(p["name"] in CAMERA_PARAMS for p in params)

            # Required query parameters get guessed values (e.g. a clip's start/end): the
            # route may then refuse them (400/404/409/416/422), but never for the scope.
            required_query = [
                p for p in op.get("parameters", []) if p["in"] == "query" and p.get("required")
            ]
            guessed = not required_query or all(p["name"] == "camera_id" for p in required_query)
            lenient = not guessed

            def url(allowed: bool, params=params, path=path, query=required_query) -> str:
                out = path
                for p in params:
                    out = out.replace("{" + p["name"] + "}", _value(p["name"], allowed, fp))
                pairs = [
                    f"{p['name']}="
                    + str(walk._named(p["name"], walk.resolve(p.get("schema", {})), ALLOWED if allowed else OTHERS[0]))
                    for p in query
                ]  # fmt: skip
                return out + ("?" + "&".join(pairs) if pairs else "")

            write = method != "get"
            if method == "get" and not params:
                code, text = _call(admin, method, path, None)
                if code == 200 and any(m in text for m in LEAK_MARKERS):
                    leaked_for_admin.add(path)
            for role, c in users.items():
                checked += 1
                where = f"{role} {method.upper()} {path}"
                if admin_only:
                    code, _ = _call(c, method, url(True), walk.body(op, ALLOWED))
                    if code != 403:
                        failures.append(f"{where}: admin-only route answered {code}")
                    continue
                if has_cam_param:
                    code, _ = _call(c, method, url(False), walk.body(op, OTHERS[0]))
                    if code != 404:
                        failures.append(f"{where} (other camera): {code}, want 404")
                    code, text = _call(c, method, url(True), walk.body(op, ALLOWED))
                    want = (403,) if write and role == "viewer" else (200, 201, 202)
                    scope_refusal = code in (401, 403) or "unknown camera" in text
                    if code not in want and not (
                        lenient and 400 <= code < 500 and not scope_refusal
                    ):
                        failures.append(f"{where} (its camera): {code}, want {want}: {text[:120]}")
                    if any(m in text for m in LEAK_MARKERS):
                        failures.append(f"{where} (its camera) mentions another camera")
                    continue
                body_cam = walk.body(op, OTHERS[0])
                if write and isinstance(body_cam, dict) and "camera_id" in body_cam:
                    code, _ = _call(c, method, path, body_cam)
                    want = (403,) if role == "viewer" else (404,)
                    if code not in want:
                        failures.append(f"{where} (other camera in body): {code}, want {want}")
                    code, _ = _call(c, method, path, walk.body(op, ALLOWED))
                    want = (403,) if role == "viewer" else (200, 201, 202)
                    if code not in want:
                        failures.append(f"{where} (its camera in body): {code}, want {want}")
                    continue
                if method == "get":
                    code, text = _call(c, method, path, None)
                    if code >= 500:
                        failures.append(f"{where}: {code}")
                    if any(m in text for m in LEAK_MARKERS):
                        failures.append(f"{where}: lists another camera: {text[:300]}")
                    if any(p["name"] == "camera_id" for p in op.get("parameters", [])):
                        code, text = _call(c, method, f"{path}?camera_id={OTHERS[0]}", None)
                        leaks = code == 200 and any(m in text for m in LEAK_MARKERS)
                        if code not in (200, 404) or leaks:  # a 404 may echo the asked id
                            failures.append(f"{where}?camera_id=other: {code} {text[:200]}")
    assert not missing, f"camera routes without the camera_scope dependency: {missing}"
    assert not failures, "\n".join(failures)
    assert leaked_for_admin >= MUST_LEAK_FOR_ADMIN, MUST_LEAK_FOR_ADMIN - leaked_for_admin
    assert checked > 40
    for c in users.values():
        c.close()


def test_websocket_sends_only_cameras_in_scope(world, r, keys):
    srv = world["srv"]
    viewer = _client(srv, "guard")
    sid = viewer.cookies["sentri_session"]
    url = srv.url.replace("http", "ws") + "/ws"
    with ws_connect(
        url, additional_headers={"Cookie": f"sentri_session={sid}"}, origin=srv.url
    ) as ws:
        ws.send(json.dumps({"type": "subscribe", "cameras": list(CAMERAS)}))
        seen_types: list[tuple[str, str]] = []
        frames: set[str] = set()
        changes: list[dict] = []
        subscribed = None
        deadline = time.monotonic() + 15
        marker_seen = False
        sent_results = False
        # Results and registry changes come through two readers: wait for both markers
        # (the own camera's analysis, the own client's change), each published after
        # the others' on the same channel.
        while time.monotonic() < deadline and not (marker_seen and changes):
            msg = ws.recv(timeout=max(0.05, deadline - time.monotonic()))
            if isinstance(msg, bytes):
                head, _ = decode_frame_message(msg)
                frames.add(head["camera_id"])
            else:
                data = json.loads(msg)
                if data["type"] == "subscribed":
                    subscribed = data["data"]["cameras"]
                if data["type"] == "distributed_client_change":
                    changes.append(data["data"])
                cam = data["data"].get("camera_id") if isinstance(data["data"], dict) else None
                if cam:
                    seen_types.append((data["type"], cam))
                    marker_seen = marker_seen or data["data"].get("summary") == "marker"
            if subscribed is not None and ALLOWED in frames and not sent_results:
                sent_results = True
                # Others' results first, then the viewer's own: when that arrives, the
                # others' would have (one reader, stream order).
                for cam in OTHERS:
                    publish_record(r, keys, "events", {"camera_id": cam, "type": "x"}, maxlen=1000)
                    publish_record(r, keys, "detections", {"camera_id": cam, "objects": []}, maxlen=1000)  # fmt: skip
                    publish_record(r, keys, "analysis", {"camera_id": cam, "summary": "no"}, maxlen=1000)  # fmt: skip
                    publish_record(r, keys, "faces", {"camera_id": cam, "faces": []}, maxlen=1000)  # fmt: skip
                for client, cams in (("other", ["other/cam"]), ("demo", list(CAMERAS[:2]))):
                    change = {"type": "client_registered", "client_id": client, "cameras": cams}
                    r.publish(keys.notify, json.dumps(change))
                publish_record(r, keys, "analysis", {"camera_id": ALLOWED, "summary": "marker"}, maxlen=1000)  # fmt: skip
    assert marker_seen, "the viewer's own camera's update never arrived"
    assert subscribed == [ALLOWED]
    assert frames == {ALLOWED}
    assert all(cam == ALLOWED for _, cam in seen_types), seen_types
    # Registry changes: the other client's is not sent; the own client's lists only the
    # cameras in scope.
    assert changes == [{"type": "client_registered", "client_id": "demo", "cameras": [ALLOWED]}]
    viewer.close()


def test_operator_cannot_approve_keys_or_manage_users(world):
    op = _client(world["srv"], "op")
    fp = world["pending_fp"]
    assert op.post(f"/api/agents/keys/{fp}/approve").status_code == 403
    assert op.get("/api/agents/keys").status_code == 403
    body = {"username": "mallory", "password": "p" * 16, "role": "admin", "cameras": ["*"]}
    assert op.post("/api/users", json=body).status_code == 403
    assert op.patch("/api/users/op", json={"role": "admin"}).status_code == 403
    assert op.get("/api/audit").status_code == 403
    assert [u["username"] for u in world["admin"].get("/api/users").json()] == [
        "admin",
        "guard",
        "op",
    ]
    # Operators may do the write work on their cameras.
    assert op.post(f"/api/cameras/{ALLOWED}/stream/stop").status_code == 202
    op.close()
