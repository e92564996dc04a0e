"""REST endpoints against a real Redis: registry, processing, commands, results, limits."""

from __future__ import annotations

import json
import time

import cv2
import numpy as np
import pytest
from fastapi.testclient import TestClient

from services.gateway.app import create_app
from shared import registry
from shared.keys import STREAM_COMMANDS
from shared.redisutil import publish_record
from tests.helpers import encode_jpeg
from tests.services.gateway.conftest import ADMIN, PASSWORD, SAME_ORIGIN, add_client


def test_clients_and_camera_views(client, r, keys):
    add_client(r, keys, "lab", ("front", "back"))
    add_client(r, keys, "gate", ("door",))
    # An old client: offline by health, removed by cleanup.
    add_client(r, keys, "attic", ("roof",))
    registry.touch_client(r, keys, "attic", now=time.time() - 3 * 86400)

    body = client.get("/api/distributed/clients").json()
    assert body["count"] == 3
    by_id = {c["client_id"]: c for c in body["clients"]}
    assert by_id["lab"]["status"] == "online" and by_id["attic"]["status"] == "offline"
    assert [c["camera_id"] for c in by_id["lab"]["cameras"]] == ["lab/back", "lab/front"]
    assert by_id["lab"]["cameras"][0]["processing"] == {
        "detector": True,
        "faces": True,
        "analyst": True,
    }

    one = client.get("/api/distributed/clients/gate").json()
    assert one["hostname"] == "gate-host" and one["cameras"][0]["name"] == "door"
    assert client.get("/api/distributed/clients/nope").status_code == 404

    cams = client.get("/api/cameras").json()
    assert [c["camera_id"] for c in cams] == ["attic/roof", "gate/door", "lab/back", "lab/front"]
    cam = client.get("/api/cameras/lab/front").json()  # slash in the id, unencoded
    assert cam["camera_id"] == "lab/front" and cam["client_status"] == "online"
    assert client.get("/api/cameras/lab%2Ffront").json()["camera_id"] == "lab/front"
    assert client.get("/api/cameras/lab/nope").status_code == 404

    assert client.post("/api/distributed/cleanup").json() == {"removed": ["attic"]}
    assert client.get("/api/distributed/clients").json()["count"] == 2


def test_processing_switches(client, r, keys):
    add_client(r, keys, "lab", ("front",))
    resp = client.post("/api/distributed/stop_processing", json={"camera_id": "lab/front"})
    assert resp.json() == {"camera_id": "lab/front", "service": "detector", "enabled": False}
    client.post(
        "/api/distributed/stop_processing", json={"camera_id": "lab/front", "service": "faces"}
    )
    assert client.get("/api/distributed/processing").json() == {
        "lab/front": {"detector": False, "faces": False, "analyst": True}
    }
    # What workers read (shared.worker.processing_enabled) agrees.
    from shared.worker import processing_enabled

    assert processing_enabled(r, keys, "detector", ["lab/front"], True) == set()
    client.post("/api/distributed/start_processing", json={"camera_id": "lab/front"})
    assert processing_enabled(r, keys, "detector", ["lab/front"], True) == {"lab/front"}
    assert client.get("/api/cameras/lab/front").json()["processing"]["detector"] is True


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"camera_id": ""},
        {"camera_id": "lab/front", "service": "gpu"},
        {"camera_id": "lab/front", "extra": 1},
        {"camera_id": 5},
    ],
)
def test_processing_bad_bodies_422(client, r, keys, body):
    add_client(r, keys)
    assert client.post("/api/distributed/start_processing", json=body).status_code == 422


def test_processing_unknown_camera_404_and_malformed_json_422(client):
    resp = client.post("/api/distributed/start_processing", json={"camera_id": "x/y"})
    assert resp.status_code == 404
    resp = client.post(
        "/api/distributed/start_processing",
        content=b"{not json",
        headers={"Content-Type": "application/json"},
    )
    assert resp.status_code == 422


def test_stream_commands_reach_the_commands_stream(client, r, keys):
    add_client(r, keys, "lab", ("front",))
    a = client.post("/api/cameras/lab/front/stream/stop")
    b = client.post("/api/cameras/lab/front/stream/start")
    c = client.post("/api/cameras/lab/front/settings", json={"quality": 55, "fps": 2.5})
    assert [x.status_code for x in (a, b, c)] == [202, 202, 202]
    entries = r.xrange(keys.stream(STREAM_COMMANDS))
    got = [(f["client_id"], f["type"], f["camera"]) for _, f in entries]
    assert got == [
        ("lab", "stop_streaming", "front"),
        ("lab", "start_streaming", "front"),
        ("lab", "update_streaming_settings", "front"),
    ]
    assert entries[2][1]["quality"] == "55" and float(entries[2][1]["fps"]) == 2.5
    assert a.json()["command_id"] == entries[0][0]
    assert client.post("/api/cameras/lab/nope/stream/start").status_code == 404


@pytest.mark.parametrize(
    "body",
    [{}, {"quality": 0}, {"quality": 101}, {"fps": 0}, {"fps": 61}, {"quality": "hi"}, {"q": 5}],
)
def test_settings_bad_bodies_422(client, r, keys, body):
    add_client(r, keys)
    assert client.post("/api/cameras/lab/front/settings", json=body).status_code == 422
    assert r.xlen(keys.stream(STREAM_COMMANDS)) == 0


def _event(cam: str, kind: str, ts: int, **extra) -> dict:
    return {"type": kind, "event_id": f"e{ts}", "camera_id": cam, "ts": ts, **extra}


def test_events_filters_cursor_pagination_and_snapshots(client, r, keys):
    rb_jpeg = encode_jpeg(np.full((48, 64, 3), 120, np.uint8))
    r_bin = client.app.state.gw.rb
    r_bin.set(keys.snapshot("snap1"), rb_jpeg, ex=60)
    t0 = int(time.time() * 1000) - 20_000  # event time, a bit before it is stored
    ids = []
    for i in range(12):
        cam = "lab/front" if i % 2 == 0 else "gate/door"
        kind = "object_entered" if i % 3 else "object_left"
        extra = {"snapshot_id": "snap1", "class": "person", "track_id": i} if i == 11 else {}
        ids.append(
            publish_record(r, keys, "events", _event(cam, kind, t0 + i, **extra), maxlen=1000)
        )

    page = client.get("/api/events", params={"limit": 5}).json()
    assert [e["id"] for e in page["events"]] == ids[::-1][:5]  # newest first
    assert page["events"][0]["snapshot_url"] == "/api/snapshots/snap1"
    assert page["events"][1]["snapshot_url"] is None
    seen = [e["id"] for e in page["events"]]
    while page["next_cursor"]:
        page = client.get("/api/events", params={"limit": 5, "cursor": page["next_cursor"]}).json()
        seen += [e["id"] for e in page["events"]]
    assert seen == ids[::-1]  # every event once, in order

    front = client.get("/api/events", params={"camera_id": "lab/front"}).json()["events"]
    assert {e["camera_id"] for e in front} == {"lab/front"} and len(front) == 6
    left = client.get("/api/events", params={"type": "object_left"}).json()["events"]
    assert [e["ts"] for e in left] == [t0 + 9, t0 + 6, t0 + 3, t0]
    window = client.get("/api/events", params={"since": t0 + 3, "until": t0 + 5}).json()["events"]
    assert [e["ts"] for e in window] == [t0 + 5, t0 + 4, t0 + 3]
    # Filter + pagination together.
    p1 = client.get("/api/events", params={"camera_id": "gate/door", "limit": 4}).json()
    p2 = client.get(
        "/api/events", params={"camera_id": "gate/door", "limit": 4, "cursor": p1["next_cursor"]}
    ).json()
    assert [e["ts"] for e in p1["events"] + p2["events"]] == [t0 + i for i in (11, 9, 7, 5, 3, 1)]
    assert p2["next_cursor"] is None

    snap = client.get("/api/snapshots/snap1")
    assert snap.status_code == 200 and snap.headers["content-type"] == "image/jpeg"
    assert snap.content == rb_jpeg
    assert client.get("/api/snapshots/gone").status_code == 404
    assert client.get("/api/snapshots/a*b").status_code == 400
    assert client.get("/api/events", params={"cursor": "drop table"}).status_code == 400
    assert client.get("/api/events", params={"limit": 0}).status_code == 422
    assert client.get("/api/events", params={"since": 5, "until": 1}).status_code == 400


def test_detections_and_analysis_latest_and_recent(client, r, keys):
    add_client(r, keys, "lab", ("front", "back"))
    for seq in range(3):
        rec = {
            "type": "detection", "camera_id": "lab/front", "seq": seq, "ts": 1000 + seq,
            "objects": [{"class": "person", "confidence": 0.9, "box": [0.1, 0.1, 0.5, 0.9], "track_id": 1}],
        }  # fmt: skip
        publish_record(r, keys, "detections", rec, maxlen=1000)
    publish_record(
        r, keys, "detections",
        {"type": "detection", "camera_id": "lab/back", "seq": 7, "ts": 2000, "objects": []},
        maxlen=1000,
    )  # fmt: skip
    body = client.get("/api/detections", params={"limit": 3}).json()
    assert body["latest"]["lab/front"]["seq"] == 2 and body["latest"]["lab/back"]["seq"] == 7
    assert [x["seq"] for x in body["recent"]] == [7, 2, 1]
    only = client.get("/api/detections", params={"camera_id": "lab/front"}).json()
    assert list(only["latest"]) == ["lab/front"] and len(only["recent"]) == 3

    publish_record(
        r, keys, "analysis",
        {"type": "analysis", "camera_id": "lab/back", "ts": 5, "summary": "A bus at a stop."},
        maxlen=1000,
    )  # fmt: skip
    res = client.get("/api/analysis").json()
    assert res["latest"]["lab/back"]["summary"] == "A bus at a stop."
    assert res["recent"][0]["summary"] == "A bus at a stop."


def test_stats_summarise_clients_workers_and_rates(client, r, keys):
    add_client(r, keys, "lab", ("front", "back"))
    now = time.time()
    # det-old heartbeated 6 s ago: dead by the workers' member TTL (4 s), although it is
    # within ingest's stale_after_s (10 s) — replicas are counted by the one liveness rule.
    r.zadd(keys.members("detector"), {"det-1": now, "det-2": now, "det-old": now - 6})
    r.hset(
        keys.worker_stats("detector"),
        mapping={
            "lab/front": json.dumps({"replica": "det-1", "fps": 4.0, "received": 50, "processed": 40,
                                     "skipped": 10, "latency_ms": 120.0, "updated": now}),
            "lab/back": json.dumps({"replica": "det-2", "fps": 2.5, "received": 20, "processed": 20,
                                    "skipped": 0, "latency_ms": 80.0, "updated": now}),
        },
    )  # fmt: skip
    for _ in range(3):
        publish_record(
            r, keys, "detections",
            {"type": "detection", "camera_id": "lab/front", "objects": [{"class": "car"}] * 2},
            maxlen=1000,
        )  # fmt: skip
    s = client.get("/api/distributed/stats").json()
    assert s["clients"] == {"online": 1, "stale": 0, "offline": 0} and s["cameras"] == 2
    assert s["streaming"] == 2
    det = s["services"]["detector"]
    assert det == {"replicas": 2, "cameras": 2, "fps": 6.5, "skipped": 10, "processed": 60,
                   "latency_ms": 100.0}  # fmt: skip
    assert s["detections_per_min"] == 3 and s["objects_per_min"] == 6
    cam = client.get("/api/cameras/lab/front").json()
    assert cam["worker_stats"]["detector"]["skipped"] == 10


def test_security_headers_and_closed_cors(client):
    for path in ("/api/cameras", "/login", "/static/css/app.css"):
        resp = client.get(path, headers={"Origin": "http://evil.example"})
        h = resp.headers
        assert h["x-content-type-options"] == "nosniff"
        assert h["x-frame-options"] == "DENY"
        assert h["referrer-policy"] == "no-referrer"
        assert "default-src 'self'" in h["content-security-policy"]
        assert "access-control-allow-origin" not in h
    pre = client.options(
        "/api/cameras",
        headers={"Origin": "http://evil.example", "Access-Control-Request-Method": "GET"},
    )
    assert "access-control-allow-origin" not in pre.headers


def test_cors_opens_only_to_configured_origins(make_settings):
    app = create_app(make_settings(cors_origins=["https://ops.example"]))
    with TestClient(app, headers=SAME_ORIGIN) as c:
        ok = c.options(
            "/api/cameras",
            headers={"Origin": "https://ops.example", "Access-Control-Request-Method": "GET"},
        )
        assert ok.headers["access-control-allow-origin"] == "https://ops.example"
        bad = c.get("/healthz", headers={"Origin": "http://evil.example"})
        assert "access-control-allow-origin" not in bad.headers


def test_body_limit_413_declared_and_streamed(make_settings, r, keys):
    app = create_app(make_settings(max_body_bytes=2048))
    with TestClient(app, headers=SAME_ORIGIN) as c:
        c.post("/api/auth/login", json={"username": ADMIN, "password": PASSWORD})
        add_client(r, keys)
        big = json.dumps({"camera_id": "lab/front", "pad": "x" * 5000})
        resp = c.post("/api/distributed/start_processing", content=big,
                      headers={"Content-Type": "application/json"})  # fmt: skip
        assert resp.status_code == 413

        def chunks():  # no Content-Length: chunked transfer
            for _ in range(10):
                yield b"x" * 1000

        resp = c.post("/api/distributed/start_processing", content=chunks(),
                      headers={"Content-Type": "application/json"})  # fmt: skip
        assert resp.status_code == 413
        # Small bodies still work.
        ok = c.post("/api/distributed/start_processing", json={"camera_id": "lab/front"})
        assert ok.status_code == 200


def test_healthz_reports_redis_down(make_settings, redis_config):
    settings = make_settings()
    bad = settings.redis.model_copy(update={"url": "redis://127.0.0.1:1/0"})
    from dataclasses import replace

    app = create_app(replace(settings, redis=bad))
    c = TestClient(
        app, headers=SAME_ORIGIN
    )  # no lifespan: Redis is down, only /healthz is exercised
    resp = c.get("/healthz")
    assert resp.status_code == 503 and resp.json() == {"status": "degraded", "redis": False}


def test_openapi_schema_is_the_contract(client):
    schema = client.get("/openapi.json").json()
    paths = schema["paths"]
    for p in (
        "/api/distributed/clients", "/api/distributed/clients/{client_id}",
        "/api/distributed/stats", "/api/distributed/start_processing",
        "/api/distributed/stop_processing", "/api/distributed/processing",
        "/api/distributed/cleanup", "/api/cameras", "/api/cameras/{camera_id}",
        "/api/cameras/{camera_id}/snapshot.jpg", "/api/cameras/{camera_id}/mjpeg",
        "/api/cameras/{camera_id}/settings", "/api/events", "/api/snapshots/{snapshot_id}",
        "/api/detections", "/api/analysis", "/api/faces", "/api/faces/{name}/rename",
        "/api/auth/login", "/api/auth/tokens", "/healthz",
    ):  # fmt: skip
        assert p in paths, p
    settings_schema = schema["components"]["schemas"]["StreamSettings"]["properties"]
    assert settings_schema["quality"]["anyOf"][0]["maximum"] == 100
    assert client.get("/docs").status_code == 200


def test_snapshot_jpg_is_the_latest_live_frame(make_settings, r, keys, publisher):
    add_client(r, keys, "lab", ("front",))
    app = create_app(make_settings(snapshot_wait_s=0.5))
    img = cv2.imread(str(_bus()))
    with TestClient(app, headers=SAME_ORIGIN) as c:
        c.post("/api/auth/login", json={"username": ADMIN, "password": PASSWORD})
        assert c.get("/api/cameras/lab/front/snapshot.jpg").status_code == 504  # nothing streams
        live = app.state.gw.live
        live.acquire("lab/front")  # a viewer, so frames flow while we publish

        def got_frame():
            publisher.publish("lab/front", img)
            return live.latest("lab/front")

        from tests.helpers import wait_for

        wait_for(got_frame, 10, 0.1, "live frame")
        resp = c.get("/api/cameras/lab/front/snapshot.jpg")
        assert resp.status_code == 200 and resp.headers["content-type"] == "image/jpeg"
        decoded = cv2.imdecode(np.frombuffer(resp.content, np.uint8), cv2.IMREAD_COLOR)
        assert decoded.shape == img.shape
        assert int(resp.headers["x-frame-seq"]) >= 1
        assert c.get("/api/cameras/lab/nope/snapshot.jpg").status_code == 404


def _bus():
    from pathlib import Path

    import ultralytics

    return Path(ultralytics.__file__).parent / "assets" / "bus.jpg"


@pytest.mark.parametrize(
    ("params", "status"),
    [
        # Found by tests/security/test_schemathesis.py: these used to reach Redis as
        # invalid stream ids and came back as 503.
        ({"since": 304250263527209, "until": 55797707444772679974912}, 422),
        ({"until": 2**64}, 422),
        ({"cursor": "18446744073709551616-0"}, 400),
        ({"cursor": "1-18446744073709551616"}, 400),
        ({"cursor": "0-0"}, 200),
        ({"cursor": "000-00"}, 200),
        ({"cursor": "18446744073709551615-18446744073709551615"}, 200),
        ({"since": 10**15, "until": 10**15}, 200),
    ],
)
def test_events_out_of_range_inputs_are_client_errors(client, r, keys, params, status):
    from shared.redisutil import publish_record

    publish_record(r, keys, "events", {"type": "object_entered", "camera_id": "lab/front",
                                       "ts": 1_700_000_000_000}, maxlen=100)  # fmt: skip
    resp = client.get("/api/events", params=params)
    assert resp.status_code == status, resp.text
    if status == 200 and params.get("cursor", "").startswith("0"):
        assert resp.json() == {"events": [], "next_cursor": None}
