"""The gallery API the gateway codes against, on a real Redis with real photos."""

from __future__ import annotations

import io
import math

import cv2
import numpy as np
import pytest
from PIL import Image

from services.faces.config import FacesConfig
from services.faces.engine import FaceEngine
from services.faces.gallery import Gallery, GalleryError, decode_photo, version_key
from tests.helpers import encode_jpeg
from tests.services.faces.support import (
    astronaut_bgr,
    astronaut_face_bgr,
    background,
    compose,
    other_face_bgr,
)


@pytest.fixture
def gallery(r, keys) -> Gallery:
    return Gallery(r, keys, FacesConfig())


def encodings_of(engine: FaceEngine, bgr: np.ndarray) -> list[np.ndarray]:
    """Encodings of the faces in ``bgr``, left to right."""
    result = engine.analyze(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), FacesConfig())
    return [f.encoding for f in sorted(result.accepted, key=lambda f: f.box[0])]


def status_of(fn, *args) -> tuple[int, str]:
    with pytest.raises(GalleryError) as info:
        fn(*args)
    assert isinstance(info.value, ValueError)
    return info.value.status, info.value.message


def test_enroll_then_list_get_and_add_more_photos(gallery: Gallery, astronaut_jpeg) -> None:
    info = gallery.enroll("  Eileen Collins ", [astronaut_jpeg])
    assert info["name"] == "Eileen Collins"  # trimmed
    assert info["encodings"] == 1 and info["added"] == 1
    assert info["created"] == info["updated"]

    # A second photo (mirrored, PNG) adds an encoding to the same person.
    png = io.BytesIO()
    Image.fromarray(cv2.cvtColor(astronaut_bgr()[:, ::-1], cv2.COLOR_BGR2RGB)).save(png, "PNG")
    info2 = gallery.enroll("Eileen Collins", [png.getvalue()])
    assert info2["encodings"] == 2 and info2["added"] == 1
    assert info2["created"] == info["created"] and info2["updated"] >= info["updated"]

    assert gallery.list() == [
        {
            "name": "Eileen Collins",
            "encodings": 2,
            "created": info["created"],
            "updated": info2["updated"],
        }
    ]
    assert gallery.get("Eileen Collins") == gallery.list()[0]
    assert gallery.get("nobody") is None


def test_match_known_unknown_and_empty(
    gallery: Gallery, engine, astronaut_jpeg, two_people_scene
) -> None:
    encs = encodings_of(engine, two_people_scene)
    assert len(encs) == 2
    # Empty gallery: everything unknown, infinitely far.
    assert gallery.match(encs) == [(None, math.inf), (None, math.inf)]
    assert gallery.match([]) == []

    gallery.enroll("astronaut", [astronaut_jpeg])
    (name_a, d_a), (name_b, d_b) = gallery.match(encs)
    # Left: the astronaut; right: the other man.
    assert name_a == "astronaut" and d_a < 0.5
    assert name_b is None and d_b > 0.6

    # A stricter tolerance turns the same face unknown.
    strict = Gallery(gallery.r, gallery.keys, FacesConfig(tolerance=d_a * 0.9))
    assert strict.match(encs[:1]) == [(None, pytest.approx(d_a))]


def test_match_picks_the_nearest_person(
    gallery: Gallery, engine, astronaut_jpeg, two_people_scene
) -> None:
    other = cv2.resize(other_face_bgr(), None, fx=1.2, fy=1.2)
    gallery.enroll("astronaut", [astronaut_jpeg])
    gallery.enroll("coach", [encode_jpeg(other)])
    names = [name for name, _ in gallery.match(encodings_of(engine, two_people_scene))]
    assert names == ["astronaut", "coach"]


def test_match_reloads_when_another_process_changes_the_gallery(
    r, keys, engine, astronaut_jpeg, known_scene
) -> None:
    reader, writer = Gallery(r, keys, FacesConfig()), Gallery(r, keys, FacesConfig())
    encs = encodings_of(engine, known_scene)
    assert reader.match(encs)[0][0] is None
    writer.enroll("astronaut", [astronaut_jpeg])
    assert reader.match(encs)[0][0] == "astronaut"
    writer.rename("astronaut", "Eileen")
    assert reader.match(encs)[0][0] == "Eileen"
    assert writer.delete("Eileen") is True
    assert reader.match(encs)[0][0] is None
    assert int(r.get(version_key(keys))) == 3


def test_upload_validation_statuses(r, keys, astronaut_jpeg) -> None:
    gallery = Gallery(r, keys, FacesConfig(max_upload_bytes=64 * 1024, max_photos_per_enroll=2))
    # Not an image -> 415 (also an empty file, and a format outside the allow-list).
    assert status_of(gallery.enroll, "a", [b"%PDF-1.4 definitely not a photo"])[0] == 415
    assert status_of(gallery.enroll, "a", [b""])[0] == 415
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n"
    assert status_of(gallery.enroll, "a", [eps])[0] == 415
    # Truncated JPEG header -> 415 with a message naming the photo.
    status, msg = status_of(
        gallery.enroll, "a", [encode_jpeg(astronaut_bgr(), 10), astronaut_jpeg[:40]]
    )
    assert status == 415 and "photo 2" in msg
    # Larger than max_upload_bytes -> 413.
    assert len(astronaut_jpeg) > 64 * 1024
    assert status_of(gallery.enroll, "a", [astronaut_jpeg])[0] == 413
    # Too many photos, no photos, not a list -> 400.
    small = encode_jpeg(astronaut_bgr(), 40)
    assert status_of(gallery.enroll, "a", [small] * 3)[0] == 400
    assert status_of(gallery.enroll, "a", [])[0] == 400
    # Nothing was stored by any failed request.
    assert gallery.list() == []


def test_pixel_bomb_rejected_before_decoding(r, keys) -> None:
    gallery = Gallery(r, keys, FacesConfig(max_upload_pixels=1_000_000))
    png = io.BytesIO()
    Image.new("L", (2000, 1000)).save(png, "PNG", optimize=True)  # tiny file, 2 MP
    assert len(png.getvalue()) < 20_000
    status, msg = status_of(gallery.enroll, "a", [png.getvalue()])
    assert status == 413 and "2000x1000" in msg


def test_photos_without_a_usable_face_are_rejected(gallery: Gallery) -> None:
    status, msg = status_of(gallery.enroll, "a", [encode_jpeg(background())])
    assert status == 400 and "no face" in msg
    # Two faces of similar size: which one is meant is ambiguous.
    pair = compose([(astronaut_face_bgr(), 1.3, 40, 120), (other_face_bgr(), 0.75, 380, 150)])
    status, msg = status_of(gallery.enroll, "a", [encode_jpeg(pair)])
    assert status == 400 and "one person" in msg
    # A blurred face fails the quality gate.
    blurred = cv2.GaussianBlur(astronaut_bgr(), (0, 0), 2.5)
    strict = Gallery(gallery.r, gallery.keys, FacesConfig(min_sharpness=150))
    status, msg = status_of(strict.enroll, "a", [encode_jpeg(blurred, 95)])
    assert status == 400 and "blurred" in msg
    # A face smaller than min_face_px fails it too.
    big_min = Gallery(gallery.r, gallery.keys, FacesConfig(min_face_px=200))
    status, msg = status_of(big_min.enroll, "a", [encode_jpeg(astronaut_bgr())])
    assert status == 400 and "200 px" in msg
    assert gallery.list() == []


def test_largest_face_is_used_when_the_others_are_clearly_smaller(gallery, engine) -> None:
    # Astronaut large in front, the other man small in the background.
    photo = compose([(astronaut_face_bgr(), 1.8, 20, 60), (other_face_bgr(), 0.45, 500, 40)])
    assert (
        len(engine.analyze(cv2.cvtColor(photo, cv2.COLOR_BGR2RGB), FacesConfig(upsample=1)).faces)
        == 2
    )
    gallery.enroll("astronaut", [encode_jpeg(photo)])
    solo = encodings_of(engine, compose([(astronaut_face_bgr(), 1.3, 40, 120)]))
    assert gallery.match(solo)[0][0] == "astronaut"


@pytest.mark.parametrize(
    "name",
    [
        "", "   ", "x" * 65, "tab\tname", "new\nline", "nul\x00", "unknown", "Unknown ", 42, None,
        "a/b", "/", "..", ".hidden", "back\\slash", "50%", "who?", "#1", "<b>",
    ],
)  # fmt: skip
def test_bad_names_rejected(gallery: Gallery, astronaut_jpeg, name) -> None:
    status, msg = status_of(gallery.enroll, name, [astronaut_jpeg])
    assert status == 422 and msg.startswith("name")
    gallery.enroll("alice", [astronaut_jpeg])
    status, msg = status_of(gallery.rename, "alice", name)
    assert status == 422 and msg.startswith("new_name")
    assert [p["name"] for p in gallery.list()] == ["alice"]


@pytest.mark.parametrize(
    "name", ["Zoë O'Brien-Smith", "Ada Lovelace", "李雷", "agent_007", "J. Doe"]
)
def test_good_names_accepted(gallery: Gallery, astronaut_jpeg, name) -> None:
    assert gallery.enroll(name, [astronaut_jpeg])["name"] == name


def test_rename_and_delete(gallery: Gallery, astronaut_jpeg) -> None:
    gallery.enroll("alice", [astronaut_jpeg])
    gallery.enroll("bob", [astronaut_jpeg])
    assert status_of(gallery.rename, "carol", "dave")[0] == 404
    assert status_of(gallery.rename, "alice", "bob")[0] == 409
    assert status_of(gallery.rename, "alice", "x" * 65)[0] == 422
    renamed = gallery.rename("alice", "Alice Smith")
    assert renamed["name"] == "Alice Smith" and renamed["encodings"] == 1
    assert [p["name"] for p in gallery.list()] == ["Alice Smith", "bob"]
    assert gallery.delete("bob") is True
    assert gallery.delete("bob") is False
    assert [p["name"] for p in gallery.list()] == ["Alice Smith"]


def test_encodings_per_person_are_capped(r, keys) -> None:
    gallery = Gallery(r, keys, FacesConfig(max_encodings_per_person=2, enroll_num_jitters=1))
    photo = encode_jpeg(astronaut_bgr())
    gallery.enroll("a", [photo, photo])
    assert gallery.enroll("a", [photo])["encodings"] == 2


def test_corrupt_entries_are_ignored_not_fatal(
    gallery: Gallery, r, keys, engine, astronaut_jpeg, known_scene
) -> None:
    gallery.enroll("astronaut", [astronaut_jpeg])
    r.hset(keys.gallery, "garbage", "{not json")
    r.hset(keys.gallery, "short", '{"encodings": [[0.1, 0.2]]}')
    r.incr(version_key(keys))
    assert [p["name"] for p in gallery.list()] == ["astronaut"]
    assert gallery.match(encodings_of(engine, known_scene))[0][0] == "astronaut"
    # Enrolling over a corrupt entry replaces it.
    assert gallery.enroll("garbage", [astronaut_jpeg])["encodings"] == 1


def test_phone_photo_rotation_from_exif_is_applied(gallery: Gallery) -> None:
    # Phones store pixels sideways and an EXIF Orientation tag (6 = rotate 90° CW to view).
    sideways = np.rot90(cv2.cvtColor(astronaut_bgr(), cv2.COLOR_BGR2RGB))  # 90° CCW
    exif = Image.Exif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(sideways)).save(buf, "JPEG", quality=92, exif=exif)
    assert gallery.enroll("astronaut", [buf.getvalue()])["encodings"] == 1
    # Without the tag the same pixels show no upright face.
    plain = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(sideways)).save(plain, "JPEG", quality=92)
    assert status_of(gallery.enroll, "other", [plain.getvalue()])[0] == 400


def test_large_photo_is_shrunk_before_detection(gallery: Gallery) -> None:
    big = cv2.resize(astronaut_bgr(), (3000, 3000), interpolation=cv2.INTER_CUBIC)
    jpeg = encode_jpeg(big, 85)
    img = decode_photo(jpeg, FacesConfig(), max_side=1280)
    assert max(img.shape[:2]) == 1280 and img.shape[2] == 3
    assert gallery.enroll("astronaut", [jpeg])["encodings"] == 1
