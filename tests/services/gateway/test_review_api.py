"""The storage API contract: events from the event store, snapshots, clips with HTTP
Range, recordings, storage use; on (filesystem, SQLite) and (SeaweedFS S3, PostgreSQL)."""

from __future__ import annotations

import io
import uuid
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from fastapi.testclient import TestClient

from services.gateway.app import create_app
from services.gateway.config import GatewayConfig, GatewaySettings
from shared.config import GeneralConfig, IngestConfig, RedisConfig
from shared.keys import Keys
from shared.redisutil import free_port, publish_record
from shared.storage import FsMediaStore, S3MediaStore
from tests.services.gateway.conftest import ADMIN, PASSWORD
from tests.services.gateway.review_support import CAM, POST, PRE, access_for, record_footage


def _stores(request, tmp: Path):
    if request.param == "fs+sqlite":
        return FsMediaStore(tmp / "media"), f"sqlite:///{tmp / 'events.db'}"
    s3 = request.getfixturevalue("s3_server")
    media = S3MediaStore(request.getfixturevalue("s3_bucket"), endpoint=s3.endpoint,
                         prefix=f"t{uuid.uuid4().hex[:12]}/", access_key="a", secret_key="a")  # fmt: skip
    pg = request.getfixturevalue("pg_server")
    return media, pg.url(pg.create_db())


def _client(redis_url: str, keys: Keys, media, db_url: str, tmp: Path):
    settings = GatewaySettings(
        gateway=GatewayConfig(admin_password=PASSWORD, password_hash_time_cost=1,
                              password_hash_memory_kib=1024,
                              ingest_pub=f"tcp://127.0.0.1:{free_port()}",
                              allowed_hosts=["testserver"]),
        redis=RedisConfig(url=redis_url, prefix=keys.prefix),
        general=GeneralConfig(state_dir=str(tmp / "state")),
        ingest=IngestConfig(),
    )  # fmt: skip
    app = create_app(settings)
    app.state.gw.extras["storage"] = access_for(media, db_url, tmp / "media")
    return TestClient(app, base_url="http://testserver", headers={"Origin": "http://testserver"})


def _login(c: TestClient) -> TestClient:
    resp = c.post("/api/auth/login", json={"username": ADMIN, "password": PASSWORD})
    assert resp.status_code == 200
    return c


@pytest.fixture(scope="module", params=["fs+sqlite", "s3+postgres"])
def review(request, redis_server, tmp_path_factory):
    """Footage recorded once per (media, database) pair; the tests only read it."""
    tmp = tmp_path_factory.mktemp("review")
    keys = Keys(f"t{uuid.uuid4().hex[:10]}:")
    media, db_url = _stores(request, tmp)
    footage = record_footage(redis_server.url, keys, media, db_url)
    with _client(redis_server.url, keys, media, db_url, tmp) as c:
        yield _login(c), footage


@pytest.fixture(params=["fs+sqlite", "s3+postgres"])
def fresh_review(request, redis_url, keys, tmp_path):
    """Footage of this test's own (it adds events to the stream)."""
    media, db_url = _stores(request, tmp_path)
    footage = record_footage(redis_url, keys, media, db_url)
    with _client(redis_url, keys, media, db_url, tmp_path) as c:
        yield _login(c), footage


def _decode_all(data: bytes) -> list:
    with av.open(io.BytesIO(data)) as c:
        assert c.streams.video[0].codec_context.name == "h264"
        return [f for f in c.decode(video=0)]


def test_events_list_detail_and_filters(review):
    client, fx = review
    page = client.get("/api/events", params={"limit": 500}).json()
    ids = [e["event_id"] for e in page["events"]]
    assert len(ids) == len(set(ids)) == 6 and page["next_cursor"] is None
    entered = client.get("/api/events", params={"type": "object_entered"}).json()["events"]
    assert {e["event_id"] for e in entered} == {fx.done_id, fx.running_id, fx.quiet_id}
    done = client.get(f"/api/events/{fx.done_id}").json()
    assert done["snapshot_url"] == f"/api/events/{fx.done_id}/snapshot.jpg"
    assert done["clip_url"] == f"/api/events/{fx.done_id}/clip.mp4"
    assert done["object"]["start"] == fx.first_seen and done["object"]["end"] == fx.last_seen
    # object_entered and its object_left resolve to the same tracked object.
    left = client.get(f"/api/events/{fx.left_id}").json()
    assert left["object"]["object_id"] == done["object"]["object_id"]
    # Faces recognised during a person's track are part of its row; label finds both.
    alice = client.get("/api/events", params={"label": "alice"}).json()["events"]
    assert fx.face_id in {e["event_id"] for e in alice} and fx.running_id in {
        e["event_id"] for e in alice
    }
    cars = client.get("/api/events", params={"label": "car", "type": "object_entered"}).json()
    assert [e["event_id"] for e in cars["events"]] == [fx.quiet_id]
    clips = client.get("/api/events", params={"has_clip": True, "type": "object_entered"}).json()
    assert {e["event_id"] for e in clips["events"]} == {fx.done_id, fx.running_id}
    noclip = client.get("/api/events", params={"has_clip": False, "type": "object_entered"})
    assert [e["event_id"] for e in noclip.json()["events"]] == [fx.quiet_id]
    cam = client.get("/api/events", params={"camera_id": "lab/back"}).json()["events"]
    assert {e["camera_id"] for e in cam} == {"lab/back"} and len(cam) == 2
    # No footage, no clip_url (the list tells before anyone clicks).
    assert [e["clip_url"] for e in cam] == [None, None]
    assert done["object"]["has_clip"] is True
    # Cursor pagination over stored events, no duplicates.
    seen, cursor = [], None
    while True:
        params = {"limit": 4, **({"cursor": cursor} if cursor else {})}
        p = client.get("/api/events", params=params).json()
        seen += [e["event_id"] for e in p["events"]]
        cursor = p["next_cursor"]
        if not cursor:
            break
    assert seen == ids
    assert client.get("/api/events/nope").status_code == 404
    assert client.get("/api/events/a%2F..%2Fb").status_code in (400, 404)


def test_unarchived_events_come_from_the_stream_and_merge(fresh_review, r, keys):
    client, fx = fresh_review
    for i in range(3):
        publish_record(r, keys, "events", {"type": "object_entered", "event_id": f"new{i}",
                       "camera_id": CAM, "ts": fx.t0 + 60_000 + i}, maxlen=10_000)  # fmt: skip
    seen, cursor = [], None
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        p = client.get("/api/events", params=params).json()
        seen += [e["event_id"] for e in p["events"]]
        cursor = p["next_cursor"]
        if not cursor:
            break
    assert seen[:3] == ["new2", "new1", "new0"] and len(seen) == len(set(seen)) == 9
    assert client.get("/api/events/new1").json()["event_id"] == "new1"


def test_snapshot_with_and_without_box(review):
    client, fx = review
    plain = client.get(f"/api/events/{fx.done_id}/snapshot.jpg")
    boxed = client.get(f"/api/events/{fx.done_id}/snapshot.jpg", params={"box": 1})
    assert plain.status_code == boxed.status_code == 200
    a = cv2.imdecode(np.frombuffer(plain.content, np.uint8), cv2.IMREAD_COLOR)
    b = cv2.imdecode(np.frombuffer(boxed.content, np.uint8), cv2.IMREAD_COLOR)
    assert a.shape == b.shape == (480, 640, 3)
    # The box edge (x = 0.25 * 640) is drawn; far from the box nothing changed much.
    edge = np.abs(a[150:330, 158:162].astype(int) - b[150:330, 158:162].astype(int)).mean()
    away = np.abs(a[:60, :60].astype(int) - b[:60, :60].astype(int)).mean()
    assert edge > 30 and away < 8
    assert client.get(f"/api/events/{fx.running_id}/snapshot.jpg").status_code == 404


def test_event_clip_covers_pre_and_post_roll_and_supports_range(review):
    client, fx = review
    full = client.get(f"/api/events/{fx.done_id}/clip.mp4")
    assert full.status_code == 200 and full.headers["content-type"] == "video/mp4"
    assert full.headers["accept-ranges"] == "bytes"
    frames = _decode_all(full.content)
    duration = frames[-1].time - frames[0].time + 1 / 15
    want = (fx.last_seen + POST - (fx.first_seen - PRE)) / 1000
    assert duration >= want - 0.2 and duration <= want + 4 + 0.2  # whole 4 s segments
    part = client.get(f"/api/events/{fx.done_id}/clip.mp4", headers={"Range": "bytes=100-1099"})
    assert part.status_code == 206 and part.content == full.content[100:1100]
    n = len(full.content)
    assert part.headers["content-range"] == f"bytes 100-1099/{n}"
    tail = client.get(f"/api/events/{fx.done_id}/clip.mp4", headers={"Range": "bytes=-10"})
    assert tail.status_code == 206 and tail.content == full.content[-10:]
    bad = client.get(f"/api/events/{fx.done_id}/clip.mp4", headers={"Range": f"bytes={n}-"})
    assert bad.status_code == 416 and bad.headers["content-range"] == f"bytes */{n}"
    running = client.get(f"/api/events/{fx.running_id}/clip.mp4")
    assert running.status_code == 409 and "still running" in running.json()["detail"]
    quiet = client.get(f"/api/events/{fx.quiet_id}/clip.mp4")
    assert quiet.status_code == 404 and "no footage" in quiet.json()["detail"]


def test_recordings_and_clip_ranges(review):
    client, fx = review
    rec = client.get("/api/recordings", params={"camera_id": CAM}).json()
    assert rec["segments"] and all(s["event"] for s in rec["segments"])
    start = rec["segments"][0]["start"]
    end = rec["segments"][-1]["end"]
    assert start <= fx.first_seen - PRE + 70
    ok = client.get(f"/api/recordings/{CAM}/clip.mp4", params={"start": start, "end": start + 5000})
    assert ok.status_code == 200 and len(_decode_all(ok.content)) > 30
    cases = [
        ({"start": -5, "end": 10}, 400, "negative"),
        ({"start": end, "end": start}, 400, "after start"),
        ({"start": start, "end": start + 10**7}, 400, "too long"),
        ({"start": 1000, "end": 5000}, 404, "no footage"),
    ]
    for params, status, why in cases:
        resp = client.get(f"/api/recordings/{CAM}/clip.mp4", params=params)
        assert resp.status_code == status and why in resp.json()["detail"], (params, resp.text)
    for cam in ("..", "../../etc", "%2e%2e%2fetc", "/etc/passwd", "..%2F..%2Fetc", "%00"):
        resp = client.get(f"/api/recordings/{cam}/clip.mp4", params={"start": start, "end": end})
        assert resp.status_code in (400, 404), cam
    # An encoded slash is just the camera id's own slash: the same camera.
    same = client.get("/api/recordings/lab%2Ffront/clip.mp4", params={"start": start, "end": end})
    assert same.status_code == 200
    storage = client.get("/api/storage").json()
    assert storage["cameras"][CAM]["bytes"] > 0 and storage["oldest_recording"] == start
    assert storage["used_bytes"] == storage["cameras"][CAM]["bytes"]


def test_snapshots_served_from_the_media_store_via_the_redis_pointer(review):
    from shared.storage.snapshots import MediaSnapshotSink, SnapshotWriter

    client, _ = review
    gw = client.app.state.gw
    media = gw.extras["storage"].media
    writer = SnapshotWriter(media)
    sink = MediaSnapshotSink(writer, gw.rb, gw.keys, ttl_s=60)
    sid = sink.new_id()
    jpeg = cv2.imencode(".jpg", np.full((32, 32, 3), 90, np.uint8))[1].tobytes()
    sink.store_snapshot(sid, jpeg)
    assert writer.flush()
    resp = client.get(f"/api/snapshots/{sid}")
    assert resp.status_code == 200 and resp.content == jpeg
    assert not gw.rb.get(gw.keys.snapshot(sid)).startswith(b"\xff\xd8")
    writer.close()


def test_database_down_events_still_listed_from_the_stream(redis_url, keys, r, tmp_path):
    media = FsMediaStore(tmp_path / "media")
    dead_db = f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/nothing"
    for i in range(3):
        publish_record(r, keys, "events", {"type": "object_entered", "event_id": f"d{i}",
                       "camera_id": CAM, "ts": 1_700_000_000_000 + i}, maxlen=100)  # fmt: skip
    with _client(redis_url, keys, media, dead_db, tmp_path) as c:
        client = _login(c)
        page = client.get("/api/events").json()
        assert [e["event_id"] for e in page["events"]] == ["d2", "d1", "d0"]
        assert client.get("/api/events/d1").json()["event_id"] == "d1"
        down = client.get("/api/storage")
        assert down.status_code == 503 and "unavailable" in down.json()["detail"]
        rec = client.get("/api/recordings", params={"camera_id": CAM})
        assert rec.status_code == 503


def test_an_event_store_that_cannot_be_opened_is_a_503_not_a_crash(redis_url, keys, r, tmp_path):
    # The SQLite file's directory cannot be made (a file stands where it should be):
    # opening raises OSError, which must read as "unavailable", like a database outage.
    (tmp_path / "notadir").write_text("x")
    media = FsMediaStore(tmp_path / "media")
    publish_record(r, keys, "events", {"type": "object_entered", "event_id": "o1",
                   "camera_id": CAM, "ts": 1_700_000_000_000}, maxlen=100)  # fmt: skip
    with _client(
        redis_url, keys, media, f"sqlite:///{tmp_path / 'notadir' / 'e.db'}", tmp_path
    ) as c:
        client = _login(c)
        page = client.get("/api/events")
        assert page.status_code == 200 and [e["event_id"] for e in page.json()["events"]] == ["o1"]
        down = client.get("/api/storage")
        assert down.status_code == 503 and "unavailable" in down.json()["detail"]


def test_a_scoped_viewer_sees_only_its_cameras_in_stored_history(review):
    """The camera scope (docs/users-and-roles.md) on the event-store path: lists,
    single events, their snapshots and clips."""
    client, fx = review
    name = f"v{uuid.uuid4().hex[:8]}"
    body = {"username": name, "password": "viewer-password-1", "role": "viewer",
            "cameras": ["lab/back"]}  # fmt: skip
    assert client.post("/api/users", json=body).status_code == 201
    viewer = TestClient(
        client.app, base_url="http://testserver", headers={"Origin": "http://testserver"}
    )
    login = {"username": name, "password": "viewer-password-1"}
    assert viewer.post("/api/auth/login", json=login).status_code == 200
    events = viewer.get("/api/events", params={"limit": 500}).json()["events"]
    assert events and {e["camera_id"] for e in events} == {"lab/back"}
    assert viewer.get(f"/api/events/{fx.done_id}").status_code == 404  # another camera
    assert viewer.get(f"/api/events/{fx.done_id}/snapshot.jpg").status_code == 404
    assert viewer.get(f"/api/events/{fx.done_id}/clip.mp4").status_code == 404
    assert viewer.get("/api/snapshots/snap-done").status_code == 404
    assert client.get("/api/snapshots/snap-done").status_code == 200  # the admin sees it
