"""Fixtures of the analyst tests: a fake Gemini server and a real photo."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.services.analyst.fake_gemini import FakeGemini

API_KEY = "test-key-0123"


@pytest.fixture
def fake_gemini(port_factory) -> Iterator[FakeGemini]:
    server = FakeGemini(port_factory(), api_key=API_KEY).start()
    yield server
    server.stop()


@pytest.fixture
def api_key_file(tmp_path: Path) -> str:
    path = tmp_path / "gemini_api_key"
    path.write_text(API_KEY + "\n")
    return str(path)


@pytest.fixture(scope="session")
def bus_photo() -> np.ndarray:
    """ultralytics' bus.jpg (810x1080, a bus and four people): a real street photo."""
    spec = importlib.util.find_spec("ultralytics")  # locate without importing torch
    assert spec is not None and spec.origin, "ultralytics is not installed"
    path = Path(spec.origin).parent / "assets" / "bus.jpg"
    img = cv2.imread(str(path))
    assert img is not None, path
    return img


@pytest.fixture(scope="session")
def bus_jpeg(bus_photo: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".jpg", bus_photo, [cv2.IMWRITE_JPEG_QUALITY, 85])
    assert ok
    return buf.tobytes()
