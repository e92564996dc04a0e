"""OpenVINO and INT8 backends, the accuracy gate and ``backend: auto`` on real photos.

The FP32 export, its INT8 copy and the auto choice are made once per session (the
session's state dir caches them) and reused by every test here.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from services.detector.backends import Backend, BackendUnavailable
from services.detector.detections import Detections
from services.detector.processor import load_backend
from services.detector.quantize import (
    accuracy_gate,
    compare,
    int8_path,
    reference_photos,
)
from tests.services.detector.conftest import detector_config


@pytest.fixture(scope="session")
def photos() -> dict[str, np.ndarray]:
    return reference_photos()


@pytest.fixture(scope="session")
def backends(state_dir: Path) -> Iterator[dict[str, Backend]]:
    """onnx FP32 (the reference), onnx INT8, openvino FP32 and INT8, loaded once."""
    made: dict[str, Backend] = {}
    for name, backend in (
        ("onnx", {"type": "onnx"}),
        ("onnx-int8", {"type": "onnx", "precision": "int8"}),
        ("openvino", {"type": "openvino"}),
        ("openvino-int8", {"type": "openvino", "precision": "int8"}),
    ):
        made[name] = load_backend(detector_config(backend=backend), state_dir)
    yield made
    for b in made.values():
        b.close()


def people(backend: Backend, img: np.ndarray) -> Detections:
    return backend.label_map.apply(backend.infer([img], conf=0.25)[0], None)


def test_openvino_fp32_finds_the_same_people_as_onnx_runtime(backends, photos):
    for name, expected in (("bus.jpg", 4), ("zidane.jpg", 2)):
        ref = people(backends["onnx"], photos[name])
        got = people(backends["openvino"], photos[name])
        assert len(ref) >= expected - 1
        same, worst = compare(ref, got)
        assert same and worst >= 0.95, (name, worst)
    assert backends["openvino"].type_name == "openvino"
    # Records and metrics name the precision too (as `auto`'s choices do).
    assert backends["openvino-int8"].type_name == "openvino-int8"
    assert backends["onnx-int8"].type_name == "onnx-int8"


def test_openvino_fp32_computes_in_fp32_like_onnx_runtime(backends, photos):
    """OpenVINO's CPU plugin runs FP32 models in bfloat16 on CPUs that have it unless
    told not to; "fp32" must give ONNX Runtime's numbers (a confidence 0.01 off flips
    the tracker's borderline decisions: a passer-by announced 3.6 s late)."""
    for name in ("bus.jpg", "zidane.jpg"):
        ref = people(backends["onnx"], photos[name])
        got = people(backends["openvino"], photos[name])
        assert len(ref) == len(got), name
        assert np.abs(np.sort(ref.confidence) - np.sort(got.confidence)).max() < 2e-3, name
    req = backends["openvino"]._request((480, 640))
    hint = req.get_compiled_model().get_property("INFERENCE_PRECISION_HINT")
    assert str(hint).lower().find("f32") >= 0 or "float32" in str(hint).lower(), hint


def test_openvino_bf16_is_explicit_and_needs_native_bfloat16(state_dir, photos):
    import openvino as ov

    cfg = detector_config(backend={"type": "openvino", "precision": "bf16"})
    if "BF16" not in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
        with pytest.raises(BackendUnavailable, match="bf16"):
            load_backend(cfg, state_dir)
        return
    bf16 = load_backend(cfg, state_dir)
    try:
        hint = (
            bf16._request((480, 640)).get_compiled_model().get_property("INFERENCE_PRECISION_HINT")
        )
        assert "bf16" in str(hint).lower() or "bfloat16" in str(hint).lower(), hint
        assert len(people(bf16, photos["bus.jpg"])) >= 3
        assert bf16.type_name == "openvino-bf16"
    finally:
        bf16.close()


def test_int8_export_is_cached_and_gated_against_fp32(backends, photos, state_dir):
    fp32 = Path(backends["onnx"].path)
    int8 = int8_path(fp32)
    assert int8.exists() and int8.stat().st_size < fp32.stat().st_size / 2, "weights are int8"
    assert Path(backends["onnx-int8"].path) == int8
    gate = accuracy_gate(backends["onnx-int8"], backends["onnx"], photos)
    assert gate.counts["bus.jpg"][0] >= 3
    # The gate's verdict follows its own rule (the figures are in the report).
    same = all(a == b for a, b in gate.counts.values())
    assert gate.passed == (same and gate.iou_min >= 0.9)
    assert accuracy_gate(backends["onnx"], backends["onnx"], photos).passed


def test_the_gate_fails_a_model_that_loses_a_person(backends, photos):
    class Forgetful:
        """The reference with its least confident person dropped."""

        label_map = backends["onnx"].label_map

        def infer(self, images, conf, imgsz=None):
            out = backends["onnx"].infer(images, conf, imgsz)
            return [d[np.argsort(-d.confidence)[: max(0, len(d) - 1)]] for d in out]

    gate = accuracy_gate(Forgetful(), backends["onnx"], photos)
    assert not gate.passed and gate.reason == "count differs"

    class Shifted(Forgetful):
        def infer(self, images, conf, imgsz=None):
            out = backends["onnx"].infer(images, conf, imgsz)
            for d in out:
                d.xyxy = d.xyxy + np.array([12, 0, 12, 0], np.float32)
            return out

    gate = accuracy_gate(Shifted(), backends["onnx"], photos)
    assert not gate.passed and gate.iou_min < 0.9


def test_auto_measures_once_picks_a_gated_candidate_and_caches_the_choice(backends, state_dir):
    cfg = detector_config(backend={"type": "auto", "candidates": ["onnx", "onnx-int8"]})
    auto = load_backend(cfg, state_dir)
    try:
        report = json.loads(auto.choice_path().read_text())
        assert set(report["candidates"]) == {"onnx", "onnx-int8"}
        passing = {n for n, v in report["candidates"].items() if v["gate"]["passed"]}
        assert "onnx" in passing
        assert report["choice"] in passing
        fastest = min(passing, key=lambda n: report["candidates"][n]["cpu_ms"])
        assert report["choice"] == fastest
        assert auto.type_name == report["choice"]
        assert len(people(auto, reference_photos()["bus.jpg"])) >= 3
    finally:
        auto.close()
    # A tampered cache naming a candidate that is not allowed is measured again.
    path = auto.choice_path()
    path.write_text(json.dumps({**report, "choice": "openvino-int8"}))
    again = load_backend(cfg, state_dir)
    try:
        assert json.loads(path.read_text())["choice"] in {"onnx", "onnx-int8"}
    finally:
        again.close()
    # The cached choice is used without measuring.
    path.write_text(json.dumps({**report, "choice": "onnx-int8", "candidates": {}}))
    cached = load_backend(cfg, state_dir)
    try:
        assert cached.type_name == "onnx-int8"
        assert json.loads(path.read_text())["candidates"] == {}, "not measured again"
    finally:
        cached.close()


def test_each_backend_config_lives_beside_its_backend_and_is_selectable() -> None:
    """A backend is one file: its config class registers with it, and the detector's
    config accepts it by its ``type`` without another edit."""
    from services.detector.backends import BACKEND_CONFIGS, BACKENDS
    from services.detector.config import DetectorConfig

    assert set(BACKENDS) == set(BACKEND_CONFIGS) >= {"torch", "onnx", "openvino", "auto"}
    for name, cfg in BACKEND_CONFIGS.items():
        assert cfg.__module__ == BACKENDS[name].__module__, name
        assert cfg.model_fields["type"].default == name
        assert type(DetectorConfig(backend={"type": name}).backend) is cfg
