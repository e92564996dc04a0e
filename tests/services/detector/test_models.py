"""Config, model resolution, backends (torch vs ONNX on real photos), export, CLI."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest

from services.detector.backends import BACKENDS, BackendUnavailable, create_backend
from services.detector.backends.onnx_runtime import letterbox, letterbox_shape
from services.detector.config import SECTION, DetectorConfig
from services.detector.detections import Detections
from services.detector.models import (
    BUNDLED_LABEL,
    bundled_person_model,
    export_path,
    label_map_for,
    resolve_model,
)
from services.detector.processor import load_backend
from shared.config import ConfigError, load_section
from tests.helpers import wait_for
from tests.services.detector.conftest import ASSETS, BUS_PEOPLE, detector_config, iou

ROOT = Path(__file__).resolve().parents[3]


# ---------------------------------------------------------------------- config


def test_config_defaults_and_env_selects_backend():
    cfg = load_section(DetectorConfig, SECTION, env={})
    assert cfg.model == "yolo11n.pt" and cfg.backend.type == "onnx" and cfg.imgsz == 640
    env = {
        "SENTRI_DETECTOR__BACKEND__TYPE": "torch",
        "SENTRI_DETECTOR__CLASSES": "[person, car]",
        "SENTRI_DETECTOR__TRACKER__MIN_HITS": "5",
    }
    cfg = load_section(DetectorConfig, SECTION, env=env)
    assert cfg.backend.type == "torch" and cfg.classes == ["person", "car"]
    assert cfg.tracker.min_hits == 5


@pytest.mark.parametrize(
    ("env", "field"),
    [
        ({"SENTRI_DETECTOR__IMGSZ": "650"}, "detector.imgsz"),
        ({"SENTRI_DETECTOR__IMGSZ": "4096"}, "detector.imgsz"),
        ({"SENTRI_DETECTOR__CONFIDENCE": "3"}, "detector.confidence"),
        ({"SENTRI_DETECTOR__DEVICE": "gpu"}, "detector.device"),
        ({"SENTRI_DETECTOR__BACKEND__TYPE": "tensorrt"}, "detector.backend"),
        ({"SENTRI_DETECTOR__BACKEND__HALF": "true"}, "detector.backend.onnx.half"),
        ({"SENTRI_DETECTOR__TRACKER__LOST_AFTER_S": "0"}, "detector.tracker.lost_after_s"),
        ({"SENTRI_DETECTOR__COLOUR": "red"}, "detector.colour"),
    ],
)
def test_invalid_config_names_the_field(env, field):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        load_section(DetectorConfig, SECTION, env=env)


# ---------------------------------------------------------------- resolution


def test_missing_model_falls_back_to_bundled_person_model_with_one_line(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="services.detector")
    # A path (not a bare asset name) is never downloaded: no network involved.
    got = resolve_model(str(tmp_path / "no-such-weights.pt"), tmp_path / "state")
    assert got.fallback and got.label == BUNDLED_LABEL
    assert got.path == bundled_person_model()
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "falling back" in warnings[0].getMessage()
    assert os.environ["YOLO_OFFLINE"] == "1"


def test_model_found_by_path_and_in_the_state_models_dir(tmp_path):
    weights = tmp_path / "state" / "models" / "mine.pt"
    weights.parent.mkdir(parents=True)
    weights.write_bytes(b"not really weights")
    by_name = resolve_model("mine.pt", tmp_path / "state")
    assert by_name.path == weights and not by_name.fallback and by_name.label == "mine.pt"
    by_path = resolve_model(str(weights), tmp_path / "elsewhere")
    assert by_path.path == weights.resolve() and not by_path.fallback


def test_fall_model_classes_are_reported_as_person_with_posture():
    labels = label_map_for({0: "Normal", 1: "Fall"})
    det = Detections([[0, 0, 10, 10], [5, 5, 20, 20]], [0.9, 0.8], [0, 1])
    out = labels.apply(det, labels.allowed_raw_ids(["person"]))
    assert list(out.class_id) == [0, 0]
    assert out.attributes == [{"posture": "standing"}, {"posture": "fallen"}]
    assert len(labels.apply(det, labels.allowed_raw_ids(["car"]))) == 0


def test_openvino_backend_is_registered_and_explains_what_is_missing(tmp_path):
    assert {"torch", "onnx", "openvino"} <= set(BACKENDS)
    if __import__("importlib.util").util.find_spec("openvino") is not None:
        pytest.skip("openvino is installed here")
    cfg = detector_config(backend={"type": "openvino"})
    backend = create_backend(cfg, resolve_model(cfg.model, tmp_path), tmp_path)
    with pytest.raises(BackendUnavailable, match="openvino"):
        backend.load()


# ------------------------------------------------------------------ backends


def test_letterbox_maps_boxes_back_to_the_original_image():
    img = np.zeros((1080, 810, 3), np.uint8)
    shape = letterbox_shape(1080, 810, 640, 32, None)
    assert shape == (640, 480)
    boxed, lb = letterbox(img, shape)
    assert boxed.shape == (640, 480, 3)
    box = np.array([[81.0, 108.0, 405.0, 540.0]], np.float32)
    in_net = box * lb.gain + [lb.pad_x, lb.pad_y, lb.pad_x, lb.pad_y]
    assert np.allclose(lb.unmap(in_net, 810, 1080), box, atol=0.01)
    wide = letterbox_shape(720, 1280, 640, 32, None)
    assert wide == (384, 640)


@pytest.fixture(scope="module")
def photos() -> dict[str, np.ndarray]:
    return {name: cv2.imread(str(ASSETS / f"{name}.jpg")) for name in ("bus", "zidane")}


@pytest.fixture(scope="module")
def torch_backend(state_dir):
    backend = load_backend(detector_config(backend={"type": "torch"}), state_dir)
    yield backend
    backend.close()


def test_onnx_export_matches_the_torch_model_on_real_photos(onnx_backend, torch_backend, photos):
    for name, img in photos.items():
        (ref,) = torch_backend.infer([img], conf=0.25)
        (got,) = onnx_backend.infer([img], conf=0.25)
        assert len(ref) == len(got) >= 2, name
        for box, conf in zip(ref.xyxy, ref.confidence, strict=True):
            best = max(range(len(got)), key=lambda j: iou(box, got.xyxy[j]))
            # Same pixels, not just overlapping boxes: a letterbox slip of even a few
            # pixels (clipped at the image edge) would still pass an IoU check.
            assert np.abs(box - got.xyxy[best]).max() <= 2.0, (name, box, got.xyxy[best])
            assert abs(conf - got.confidence[best]) < 0.02, name


@pytest.fixture(scope="module")
def stacked_backend(state_dir):
    """One ONNX session taking stacked batches (lanes: 1), the GPU-style path."""
    backend = load_backend(detector_config(backend={"type": "onnx", "lanes": 1}), state_dir)
    yield backend
    backend.close()


@pytest.mark.parametrize("variant", ["lanes", "stacked"])
def test_multi_camera_calls_equal_one_by_one(variant, onnx_backend, stacked_backend, photos):
    backend = onnx_backend if variant == "lanes" else stacked_backend
    if variant == "lanes":
        assert len(backend.lanes) >= 2 or (os.cpu_count() or 1) < 2
    else:
        assert backend.lanes == []
    small = cv2.resize(photos["bus"], (405, 540))
    images = [photos["bus"], photos["zidane"], small, photos["bus"]]
    together = backend.infer(images, conf=0.25)
    for img, det in zip(images, together, strict=True):
        (single,) = backend.infer([img], conf=0.25)
        assert len(single) == len(det)
        assert np.allclose(single.xyxy, det.xyxy, atol=1.0)
    # The people of bus.jpg are where they are, at both sizes.
    for det, scale in ((together[0], (810, 1080)), (together[2], (405, 540))):
        boxes = det.normalized_boxes(*scale)
        assert sum(max(iou(ref, b) for b in boxes) >= 0.5 for ref in BUS_PEOPLE) >= 3


# ----------------------------------------------------------------------- CLI


def _env(state_dir: Path, **extra: str) -> dict[str, str]:
    env = {**os.environ, "SENTRI_STATE_DIR": str(state_dir), "PYTHONPATH": str(ROOT), **extra}
    env.pop("SENTRI_CONFIG", None)
    return env


def test_export_command_writes_a_cached_onnx_keyed_by_model_and_size(onnx_backend, state_dir):
    model = str(bundled_person_model())
    cmd = [sys.executable, "-m", "services.detector", "export", "--model", model]
    out = subprocess.run(
        cmd, env=_env(state_dir), capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert out.returncode == 0, out.stderr[-2000:]
    path = Path(out.stdout.strip().splitlines()[-1])
    assert path == export_path(Path(model), 640, "onnx", state_dir / "models")
    assert path.is_file() and path.stat().st_size > 1_000_000
    assert "using cached export" in out.stderr  # the module fixture exported it already


def test_run_command_reports_ready_joins_and_stops_cleanly_on_sigterm(
    state_dir, redis_url, prefix, r, keys, port_factory, tmp_path
):
    # The prefix goes through a YAML file: as an env var "tXXXX:" would parse as a mapping.
    config = tmp_path / "sentri.yaml"
    config.write_text(f"redis:\n  prefix: '{prefix}'\nworker:\n  heartbeat_s: 0.2\n")
    cmd = [
        sys.executable, "-m", "services.detector",
        "--config", str(config),
        "--redis-url", redis_url,
        "--ingest-pub", f"tcp://127.0.0.1:{port_factory()}",
        "--model", str(bundled_person_model()),
        "--replica-id", "cli-replica",
    ]  # fmt: skip
    proc = subprocess.Popen(
        cmd,
        env=_env(state_dir),
        cwd=ROOT,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    lines: list[str] = []

    def read() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        wait_for(
            lambda: any("detector ready" in ln for ln in lines) or proc.poll() is not None,
            60,
            what="ready line",
        )
        assert proc.poll() is None, "".join(lines)[-3000:]
        wait_for(lambda: r.zscore(keys.members("detector"), "cli-replica"), 10, what="member")
        text = "".join(lines)
        assert "loading model" in text and "model ready in" in text and "backend=onnx" in text
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    reader.join(5)
    assert any("detector stopped" in ln for ln in lines)
    assert r.zscore(keys.members("detector"), "cli-replica") is None, "left the membership"


def test_a_corrupt_cached_export_is_exported_again_not_a_crash_loop(onnx_backend, tmp_path, caplog):
    """A truncated cached ONNX (a crash or a full disk during a copy) is thrown away
    and exported again, with one clear log line; the detector then runs."""
    weights = onnx_backend.model.path
    cache = tmp_path / "models"
    cache.mkdir()
    target = export_path(weights, 640, "onnx", cache)
    good = Path(onnx_backend.path).read_bytes()
    target.write_bytes(good[: len(good) // 3])  # truncated
    with caplog.at_level(logging.WARNING, logger="services.detector.processor"):
        backend = load_backend(detector_config(backend={"type": "onnx", "lanes": 1}), tmp_path)
    try:
        assert "cached model export is corrupt" in caplog.text
        assert target.stat().st_size > len(good) // 2, "exported again"
        assert backend.names  # loaded and warmed up
    finally:
        backend.close()
