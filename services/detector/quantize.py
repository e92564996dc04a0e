"""INT8 models through ONNX Runtime static quantization, and the accuracy gate.

:func:`quantize_int8` turns the cached FP32 ONNX export into an INT8 one (QDQ format,
per-channel weights, activations calibrated on frames of the demo scenes: real
photos seen through the demo's moving virtual camera).  The detection head's
post-processing (distribution focal loss, box decoding, concatenations) stays in
float: quantizing it costs box precision for no speed.  The result is cached beside
the FP32 export as ``<stem>-int8.onnx``; ONNX Runtime and OpenVINO both run it.

:func:`accuracy_gate` compares a candidate backend with the FP32 reference on the
reference photos (ultralytics' ``bus.jpg`` and ``zidane.jpg``): the same number of
confident detections per class, and every reference box matched by a candidate box
of IoU >= 0.9.  A model that fails the gate is never chosen by ``backend: auto``.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from services.detector.detections import Detections, box_iou

log = logging.getLogger(__name__)

#: The gate: every reference box needs a candidate box at least this close.
GATE_IOU = 0.9
#: Confidence above which detections count for the gate.
GATE_CONFIDENCE = 0.25
#: Calibration frames per scene and the scenes they come from.
CALIBRATION_SCENES = ("bus", "zidane", "static", "coffee", "rocket", "cameraman", "astronaut")
CALIBRATION_TIMES = (0.0, 2.5, 5.0, 8.5)


def int8_path(fp32: Path) -> Path:
    return fp32.with_name(f"{fp32.stem}-int8.onnx")


def calibration_frames(size: tuple[int, int] = (640, 480)) -> list[np.ndarray]:
    """Frames of the demo scenes (real photos through a moving virtual camera), BGR."""
    from edge_agent.demo import DemoScene

    out = []
    for name in CALIBRATION_SCENES:
        scene = DemoScene(name, *size)
        for t in CALIBRATION_TIMES:
            out.append(scene.render(t).copy())
    return out


def reference_photos() -> dict[str, np.ndarray]:
    """The accuracy gate's photos: ultralytics' bus.jpg (4 people) and zidane.jpg (2)."""
    import cv2
    import ultralytics

    assets = Path(ultralytics.__file__).parent / "assets"
    photos = {}
    for name in ("bus.jpg", "zidane.jpg"):
        img = cv2.imread(str(assets / name))
        if img is None:
            raise FileNotFoundError(assets / name)
        photos[name] = img
    return photos


def _head_nodes(model) -> list[str]:  # noqa: ANN001 - an onnx.ModelProto
    """Non-convolution nodes of the last module (the detect head's post-processing)."""
    index = [
        int(m.group(1)) for n in model.graph.node if (m := re.match(r"/model\.(\d+)/", n.name))
    ]
    if not index:
        return []
    prefix = f"/model.{max(index)}/"
    return [
        n.name
        for n in model.graph.node
        if n.name.startswith(prefix) and (n.op_type != "Conv" or "/dfl/" in n.name)
    ]


def quantize_int8(fp32: Path, *, force: bool = False) -> Path:
    """The INT8 (QDQ) version of the FP32 ONNX model ``fp32``, made once and cached."""
    target = int8_path(fp32)
    if target.exists() and not force:
        return target
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from services.detector.backends.onnx_runtime import letterbox, letterbox_shape, to_tensor

    t0 = time.monotonic()
    frames = calibration_frames()
    model = onnx.load(str(fp32), load_external_data=False)
    input_name = model.graph.input[0].name

    class Frames(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter(frames)

        def get_next(self) -> dict | None:
            img = next(self._it, None)
            if img is None:
                return None
            shape = letterbox_shape(img.shape[0], img.shape[1], 640, 32, None)
            return {input_name: to_tensor([letterbox(img, shape)[0]])}

    with tempfile.TemporaryDirectory(prefix=".int8-", dir=fp32.parent) as tmp:
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)
        out = Path(tmp) / "int8.onnx"
        quantize_static(
            str(pre),
            str(out),
            Frames(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=_head_nodes(onnx.load(str(pre), load_external_data=False)),
        )
        os.replace(out, target)
    log.info(
        "model quantized to int8",
        extra={"path": str(target), "s": round(time.monotonic() - t0, 1), "frames": len(frames)},
    )
    return target


@dataclass
class GateResult:
    """How a candidate compares with the FP32 reference on the reference photos."""

    passed: bool
    iou_min: float
    counts: dict[str, tuple[int, int]] = field(default_factory=dict)  # photo -> (ref, cand)
    reason: str = ""

    def as_dict(self) -> dict:
        return {
            "passed": self.passed,
            "iou_min": round(self.iou_min, 4),
            "counts": {k: list(v) for k, v in self.counts.items()},
            "reason": self.reason,
        }


def compare(reference: Detections, candidate: Detections) -> tuple[bool, float]:
    """(same count per class, smallest best-match IoU over the reference boxes)."""
    same = True
    worst = 1.0
    for cls in set(reference.class_id.tolist()) | set(candidate.class_id.tolist()):
        ref = reference.xyxy[reference.class_id == cls]
        cand = candidate.xyxy[candidate.class_id == cls]
        same &= len(ref) == len(cand)
        if len(ref):
            m = box_iou(ref, cand)
            worst = min(worst, float(m.max(axis=1).min()) if m.size else 0.0)
    return same, worst


def accuracy_gate(candidate, reference, photos: dict[str, np.ndarray] | None = None) -> GateResult:  # noqa: ANN001
    """Run both backends on the reference photos; see the module docstring."""
    photos = reference_photos() if photos is None else photos
    counts: dict[str, tuple[int, int]] = {}
    worst = 1.0
    same_all = True
    for name, img in photos.items():
        ref = reference.label_map.apply(reference.infer([img], conf=GATE_CONFIDENCE)[0], None)
        cand = candidate.label_map.apply(candidate.infer([img], conf=GATE_CONFIDENCE)[0], None)
        same, iou = compare(ref, cand)
        counts[name] = (len(ref), len(cand))
        same_all &= same
        worst = min(worst, iou)
    passed = same_all and worst >= GATE_IOU
    reason = (
        "" if passed else ("count differs" if not same_all else f"box IoU {worst:.3f} < {GATE_IOU}")
    )
    return GateResult(passed, worst, counts, reason)
