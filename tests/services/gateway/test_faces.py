"""Face gallery through the API: real uploads, real face_recognition on a real photo."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

pytest.importorskip("services.faces.gallery", reason="faces gallery not available")
pytest.importorskip("face_recognition", reason="face_recognition not installed")

from skimage import data as skdata  # noqa: E402

from tests.helpers import encode_jpeg  # noqa: E402


@pytest.fixture(scope="module")
def astronaut_jpeg() -> bytes:
    return encode_jpeg(cv2.cvtColor(skdata.astronaut(), cv2.COLOR_RGB2BGR), 90)


def test_enrol_list_rename_delete(client, astronaut_jpeg):
    files = [("files", ("eileen.jpg", astronaut_jpeg, "image/jpeg"))]
    resp = client.post("/api/faces", data={"name": "Eileen"}, files=files)
    assert resp.status_code == 201, resp.text
    assert resp.json()["name"] == "Eileen" and resp.json()["encodings"] == 1
    people = client.get("/api/faces").json()
    assert [p["name"] for p in people] == ["Eileen"]
    assert client.get("/api/faces/Eileen").json()["encodings"] == 1

    resp = client.post("/api/faces/Eileen/rename", json={"new_name": "Eileen Collins"})
    assert resp.status_code == 200 and resp.json()["name"] == "Eileen Collins"
    assert client.get("/api/faces/Eileen").status_code == 404
    client.post("/api/faces", data={"name": "Other"}, files=files)
    assert (
        client.post("/api/faces/Other/rename", json={"new_name": "Eileen Collins"}).status_code
        == 409
    )
    assert client.post("/api/faces/Nobody/rename", json={"new_name": "X"}).status_code == 404
    assert client.post("/api/faces/Other/rename", json={}).status_code == 422

    assert client.delete("/api/faces/Eileen Collins").json() == {"ok": True}
    assert client.delete("/api/faces/Eileen Collins").status_code == 404
    assert [p["name"] for p in client.get("/api/faces").json()] == ["Other"]


def test_enrol_rejects_bad_uploads_with_clear_4xx(make_settings, astronaut_jpeg):
    from fastapi.testclient import TestClient

    from services.gateway.app import create_app
    from tests.services.gateway.conftest import ADMIN, PASSWORD, SAME_ORIGIN

    with TestClient(
        create_app(make_settings(max_upload_bytes=64 * 1024)), headers=SAME_ORIGIN
    ) as c:
        c.post("/api/auth/login", json={"username": ADMIN, "password": PASSWORD})
        text = [("files", ("notes.txt", b"hello, not a photo" * 10, "text/plain"))]
        resp = c.post("/api/faces", data={"name": "X"}, files=text)
        assert resp.status_code == 415 and "not an image" in resp.json()["detail"]
        fake = [("files", ("x.jpg", b"<html>" * 100, "image/jpeg"))]  # lies about its type
        assert c.post("/api/faces", data={"name": "X"}, files=fake).status_code == 415
        big = [("files", ("big.jpg", astronaut_jpeg + b"\0" * 70_000, "image/jpeg"))]
        assert c.post("/api/faces", data={"name": "X"}, files=big).status_code == 413
        assert c.post("/api/faces", data={"name": "X"}).status_code == 422  # no files
        noface = encode_jpeg(np.full((200, 200, 3), 90, np.uint8))
        resp = c.post(
            "/api/faces", data={"name": "X"}, files=[("files", ("w.jpg", noface, "image/jpeg"))]
        )
        assert resp.status_code == 400 and "face" in resp.json()["detail"].lower()
        assert c.get("/api/faces").json() == []


@pytest.mark.parametrize("name", ["a/b", "../x", "/", "50%", "who?", ".hidden"])
def test_unsafe_face_names_get_422_naming_the_field(client, astronaut_jpeg, name):
    files = [("files", ("p.jpg", astronaut_jpeg, "image/jpeg"))]
    resp = client.post("/api/faces", data={"name": name}, files=files)
    assert resp.status_code == 422, resp.text
    assert resp.json()["detail"][0]["loc"] == ["body", "name"]
    assert client.post("/api/faces", data={"name": "Ada"}, files=files).status_code == 201
    resp = client.post("/api/faces/Ada/rename", json={"new_name": name})
    assert resp.status_code == 422
    assert resp.json()["detail"][0]["loc"] == ["body", "new_name"]
    assert [p["name"] for p in client.get("/api/faces").json()] == ["Ada"]
