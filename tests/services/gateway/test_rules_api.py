"""Rules API: zones/lines CRUD with validation (422 naming the field), counts, dead letters."""

from __future__ import annotations

import json
import time

import pytest

from services.notifier.webhooks import DeadLetters
from shared.rules import RulesStore
from tests.services.gateway.conftest import add_client

SQUARE = [[0.2, 0.2], [0.6, 0.2], [0.6, 0.6], [0.2, 0.6]]


def test_zone_and_line_crud(client, r, keys):
    add_client(r, keys, "lab", ("front",))
    assert client.get("/api/cameras/lab/front/rules").json() == {"zones": [], "lines": []}
    resp = client.post("/api/cameras/lab/front/zones",
                       json={"id": "drive", "name": "Driveway", "points": SQUARE, "loiter_s": 30})  # fmt: skip
    assert resp.status_code == 200, resp.text
    resp = client.post("/api/cameras/lab/front/lines",
                       json={"id": "door", "points": [[0, 0.5], [1, 0.5]], "classes": ["person"]})  # fmt: skip
    assert resp.status_code == 200, resp.text
    body = client.get("/api/cameras/lab/front/rules").json()
    assert [z["id"] for z in body["zones"]] == ["drive"] and body["zones"][0]["loiter_s"] == 30
    assert [ln["id"] for ln in body["lines"]] == ["door"]
    # Same id replaces; the version moves so detectors reload.
    v = RulesStore(r, keys).version()
    client.post("/api/cameras/lab/front/zones", json={"id": "drive", "points": SQUARE[:3]})
    assert RulesStore(r, keys).version() > v
    assert len(RulesStore(r, keys).get("lab/front").zones[0].points) == 3
    assert client.get("/api/rules").json()["lab/front"]["lines"][0]["id"] == "door"
    assert client.delete("/api/cameras/lab/front/zones/drive").status_code == 200
    again = client.delete("/api/cameras/lab/front/zones/drive")  # idempotent
    assert again.status_code == 200 and again.json()["zones"] == []
    assert client.delete("/api/cameras/lab/front/lines/door").json() == {"zones": [], "lines": []}
    put = client.put("/api/cameras/lab/front/rules",
                     json={"zones": [{"id": "z", "points": SQUARE}], "lines": []})  # fmt: skip
    assert put.status_code == 200 and RulesStore(r, keys).get("lab/front").zones[0].id == "z"


@pytest.mark.parametrize(
    ("body", "loc", "words"),
    [
        ({"id": "z", "points": [[0.1, 0.1], [0.5, 0.5]]}, ["body", "points"], "at least 3"),
        ({"id": "z", "points": [[0.1, 0.1], [0.9, 0.9], [0.9, 0.1], [0.1, 0.9]]},
         ["body", "points"], "self-intersecting"),
        ({"id": "z", "points": [[0.1, 0.1], [1.2, 0.1], [0.5, 0.5]]},
         ["body", "points", 1, 0], "less than or equal to 1"),
        ({"id": "z", "points": [[-0.1, 0.1], [0.9, 0.1], [0.5, 0.5]]},
         ["body", "points", 0, 0], "greater than or equal to 0"),
        ({"id": "z", "points": SQUARE, "colour": "red"}, ["body", "colour"], "Extra inputs"),
    ],
)  # fmt: skip
def test_bad_zone_422_names_the_field(client, r, keys, body, loc, words):
    add_client(r, keys, "lab", ("front",))
    resp = client.post("/api/cameras/lab/front/zones", json=body)
    assert resp.status_code == 422, resp.text
    err = resp.json()["detail"][0]
    assert err["loc"] == loc and words in err["msg"]


def test_unknown_camera_422(client):
    resp = client.post("/api/cameras/nope/cam/zones", json={"id": "z", "points": SQUARE})
    assert resp.status_code == 422
    assert resp.json()["detail"][0]["loc"] == ["path", "camera_id"]
    assert "unknown camera" in resp.json()["detail"][0]["msg"]
    assert client.get("/api/cameras/nope/cam/rules").status_code == 404


def test_bad_line_422(client, r, keys):
    add_client(r, keys, "lab", ("front",))
    resp = client.post("/api/cameras/lab/front/lines", json={"id": "l", "points": [[0.5, 0.5]]})
    assert resp.status_code == 422 and resp.json()["detail"][0]["loc"] == ["body", "points"]
    resp = client.post("/api/cameras/lab/front/lines",
                       json={"id": "l", "points": [[0.5, 0.5], [0.5, 0.5]]})  # fmt: skip
    assert resp.status_code == 422 and "differ" in resp.json()["detail"][0]["msg"]


def test_counts_by_range(client, r, keys):
    add_client(r, keys, "lab", ("front",))
    client.post("/api/cameras/lab/front/lines",
                json={"id": "door", "name": "Door", "points": [[0, 0.5], [1, 0.5]]})  # fmt: skip
    t0 = 1_767_225_600_000  # 2026-01-01T00:00Z
    store = RulesStore(r, keys)
    evs = [{"type": "line_crossed", "camera_id": "lab/front", "line": "door", "ts": t0 + dt,
            "direction": d} for dt, d in [(0, "a_to_b"), (30_000, "a_to_b"),
                                          (120_000, "b_to_a"), (86400_000 + 5, "a_to_b")]]  # fmt: skip
    store.count_crossings(evs, 1)
    got = client.get("/api/cameras/lab/front/counts", params={"since": t0, "until": t0 + 60_000})
    assert got.status_code == 200, got.text
    assert got.json()["lines"]["door"] == {"name": "Door", "a_to_b": 2, "b_to_a": 0, "total": 2,
                                           "a_label": "A", "b_label": "B"}  # fmt: skip
    whole = client.get("/api/cameras/lab/front/counts",
                       params={"since": t0, "until": t0 + 2 * 86400_000}).json()  # fmt: skip
    assert whole["lines"]["door"]["a_to_b"] == 3 and whole["lines"]["door"]["b_to_a"] == 1
    bad = client.get("/api/cameras/lab/front/counts", params={"since": t0 + 1, "until": t0})
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["query", "since"]
    now = client.get("/api/cameras/lab/front/counts").json()
    assert now["lines"]["door"]["total"] == 0 and now["until"] > time.time() * 1000


def test_dead_letters_listed_and_cleared(client, r, keys):
    DeadLetters(r, keys).add({"id": "d1", "webhook": "w", "url": "http://x/", "event_id": "e1",
                              "attempts": 3, "error": "HTTP 503", "ts": 1, "event": {"a": 1}})  # fmt: skip
    body = client.get("/api/notifier/deadletters").json()
    assert body[0]["event_id"] == "e1" and body[0]["error"] == "HTTP 503"
    assert client.delete("/api/notifier/deadletters").json() == {"removed": 1}
    assert client.get("/api/notifier/deadletters").json() == []


def test_rules_need_login(anon):
    assert anon.get("/api/rules").status_code == 401
    assert anon.get("/api/notifier/deadletters").status_code == 401


def test_webhooks_crud_validation_and_secret_never_shown(client, r, keys):
    from services.notifier.webhooks import WebhookStore

    good = {"name": "ha", "url": "http://192.168.1.10:8123/api/webhook/x",
            "secret": "a-long-enough-secret", "filter": {"types": ["line_crossed"]}}  # fmt: skip
    resp = client.post("/api/notifier/webhooks", json=good)
    assert resp.status_code == 200, resp.text
    assert resp.json()["secret_set"] is True and "secret" not in resp.json()
    listed = client.get("/api/notifier/webhooks").json()
    assert [w["name"] for w in listed["webhooks"]] == ["ha"]
    assert "a-long-enough-secret" not in json.dumps(listed)
    # Empty secret on update keeps the stored one.
    resp = client.post(
        "/api/notifier/webhooks", json={**good, "secret": "", "url": "https://x.example/h"}
    )
    assert resp.status_code == 200
    assert WebhookStore(r, keys).get("ha").secret.get_secret_value() == "a-long-enough-secret"
    for body, loc in [
        ({**good, "url": "ftp://x.example/"}, ["body", "url"]),
        ({**good, "url": "http://169.254.169.254/latest"}, ["body", "url"]),
        ({**good, "url": "http://[fe80::1]/"}, ["body", "url"]),
        ({**good, "name": "new", "secret": ""}, ["body", "secret"]),
        ({**good, "name": "new", "secret": "short"}, ["body", "secret"]),
        ({**good, "filter": {"types": ["bogus"]}}, ["body", "filter", "types"]),
        (
            {**good, "filter": {"schedule": [{"start": "7pm"}]}},
            ["body", "filter", "schedule", 0, "start"],
        ),
    ]:
        resp = client.post("/api/notifier/webhooks", json=body)
        assert resp.status_code == 422, (body, resp.text)
        assert resp.json()["detail"][0]["loc"] == loc, resp.text
    WebhookStore(r, keys).set_static([])
    r.set(WebhookStore(r, keys).static_key, json.dumps(["yaml-one"]))
    resp = client.post("/api/notifier/webhooks", json={**good, "name": "yaml-one"})
    assert resp.status_code == 422 and resp.json()["detail"][0]["loc"] == ["body", "name"]
    assert client.get("/api/notifier/webhooks").json()["configured"] == ["yaml-one"]
    assert client.delete("/api/notifier/webhooks/ha").json() == {"deleted": "ha"}
    assert client.delete("/api/notifier/webhooks/ha").status_code == 404


def test_dead_letter_retry_requeues(client, r, keys):
    from services.notifier.webhooks import queue_keys

    DeadLetters(r, keys).add({"id": "d9", "webhook": "w", "url": "http://x/", "event_id": "e9",
                              "attempts": 3, "error": "HTTP 503", "ts": 1,
                              "event": {"event_id": "e9"}})  # fmt: skip
    resp = client.post("/api/notifier/deadletters/d9/retry")
    assert resp.status_code == 202 and resp.json()["webhook"] == "w"
    due, items = queue_keys(keys, "w")
    assert r.zscore(due, "d9") is not None and json.loads(r.hget(items, "d9"))["attempts"] == 0
    assert client.get("/api/notifier/deadletters").json() == []
    assert client.post("/api/notifier/deadletters/d9/retry").status_code == 404


def test_too_many_zones_is_422_not_500(client, r, keys):
    add_client(r, keys, "lab", ("front",))
    for i in range(32):
        assert client.post("/api/cameras/lab/front/zones",
                           json={"id": f"z{i}", "points": SQUARE}).status_code == 200  # fmt: skip
    resp = client.post("/api/cameras/lab/front/zones", json={"id": "z99", "points": SQUARE})
    assert resp.status_code == 422 and resp.json()["detail"][0]["loc"][:2] == ["body", "zones"]
