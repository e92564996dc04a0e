"""The dlib engine on real photos: detection geometry, quality gate, encodings."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from services.faces.config import FacesConfig
from services.faces.engine import REJECT_BLURRY, REJECT_TOO_SMALL, FaceEngine
from tests.services.faces.support import (
    astronaut_bgr,
    astronaut_face_bgr,
    compose,
    other_face_bgr,
)


def rgb(bgr: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def test_face_found_where_it_was_placed_with_and_without_downscale(engine: FaceEngine) -> None:
    # Face ~150 px, shifted: large enough for detection at half size too.
    scale, x0, y0 = 1.7, 260, 90
    scene = rgb(compose([(astronaut_face_bgr(), scale, x0, y0)]))
    # In the crop, dlib puts her face at about x 59-146, y 53-140.
    expected = np.array([x0 + 59 * scale, y0 + 53 * scale, x0 + 146 * scale, y0 + 140 * scale])
    full = engine.analyze(scene, FacesConfig(downscale=1.0))
    half = engine.analyze(scene, FacesConfig(downscale=0.5))
    assert half.scale == 0.5
    for result in (full, half):
        assert len(result.faces) == 1, result.faces
        face = result.faces[0]
        assert np.allclose(face.box, expected, atol=30), (face.box, expected)
        assert 120 <= face.size_px <= 190
        assert face.accepted and face.encoding is not None and face.encoding.shape == (128,)
    # Boxes from the half-size image are mapped back to full-resolution pixels.
    # (HOG cells are 8 px, i.e. 16 frame px at half size.)
    assert np.allclose(full.faces[0].box, half.faces[0].box, atol=20)
    # Same face, same person: the two encodings are close.
    assert np.linalg.norm(full.faces[0].encoding - half.faces[0].encoding) < 0.2


def test_different_people_are_far_apart(engine: FaceEngine) -> None:
    scene = rgb(compose([(astronaut_face_bgr(), 1.3, 40, 120), (other_face_bgr(), 0.75, 380, 150)]))
    result = engine.analyze(scene, FacesConfig())
    assert len(result.accepted) == 2
    a, b = (f.encoding for f in result.accepted)
    assert np.linalg.norm(a - b) > 0.7


def test_quality_gate_rejects_small_and_blurred_faces_without_encoding(engine: FaceEngine) -> None:
    # A 20-pixel face in a 160x120 frame: found only with 2x2 upsampling, then rejected.
    tiny = rgb(compose([(astronaut_face_bgr(), 20 / 87, 60, 40)], 160, 120))
    result = engine.analyze(tiny, FacesConfig(upsample=2, min_face_px=40))
    assert len(result.faces) == 1
    face = result.faces[0]
    assert face.size_px < 30
    assert face.reject_reason == REJECT_TOO_SMALL
    assert face.encoding is None and result.accepted == []

    sharp_scene = compose([(astronaut_face_bgr(), 1.3, 40, 120)])
    blurred_scene = sharp_scene.copy()
    blurred_scene[100:420, 20:360] = cv2.GaussianBlur(sharp_scene[100:420, 20:360], (0, 0), 2.5)
    cfg = FacesConfig(min_sharpness=150)
    sharp = engine.analyze(rgb(sharp_scene), cfg)
    blurred = engine.analyze(rgb(blurred_scene), cfg)
    assert len(sharp.faces) == 1 and sharp.faces[0].accepted, sharp.faces
    assert len(blurred.faces) == 1, "HOG still finds the blurred face"
    assert blurred.faces[0].reject_reason == REJECT_BLURRY
    assert blurred.faces[0].sharpness < sharp.faces[0].sharpness / 2
    assert blurred.faces[0].encoding is None


def test_max_faces_per_frame_keeps_the_largest(engine: FaceEngine) -> None:
    scene = rgb(compose([(astronaut_face_bgr(), 1.3, 40, 120), (other_face_bgr(), 0.75, 380, 150)]))
    result = engine.analyze(scene, FacesConfig(max_faces_per_frame=1))
    assert [f.reject_reason for f in result.faces] == [None, "too_many"]
    assert result.faces[0].size_px >= result.faces[1].size_px


def test_same_encodings_as_face_recognition(engine: FaceEngine) -> None:
    """The engine calls dlib directly; it must compute what face_recognition 1.3.0 does."""
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*pkg_resources.*")
        face_recognition = pytest.importorskip("face_recognition")
    photo = rgb(astronaut_bgr())
    (x1, y1, x2, y2), _ = engine.detect(photo)[0]
    assert face_recognition.face_locations(photo, 0) == [(y1, x2, y2, x1)]
    theirs = face_recognition.face_encodings(photo, [(y1, x2, y2, x1)], num_jitters=1)[0]
    ours = engine.encode(photo, [(x1, y1, x2, y2)], num_jitters=1)[0]
    assert np.allclose(ours, theirs, atol=1e-6)


def test_cnn_detector_when_chosen_explicitly(engine: FaceEngine) -> None:
    # Small frame: the CNN costs seconds per 640x480 frame on a CPU.
    scene = rgb(compose([(astronaut_face_bgr(), 0.8, 30, 10)], 240, 180))
    hog = engine.analyze(scene, FacesConfig())
    cnn = engine.analyze(scene, FacesConfig(model="cnn"))
    assert len(cnn.faces) == 1 and cnn.faces[0].score > 0.5
    assert np.allclose(cnn.faces[0].box, hog.faces[0].box, atol=20)
    assert np.linalg.norm(cnn.faces[0].encoding - hog.faces[0].encoding) < 0.3
