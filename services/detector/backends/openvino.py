"""OpenVINO backend: the cached ONNX export (FP32 or INT8) run by the OpenVINO runtime.

OpenVINO reads the ONNX export directly (no second export); each letterboxed input
shape (a camera's resolution, the region size) is compiled once, with OpenVINO's
model cache in ``<state_dir>/models/openvino-cache`` so later starts are quick.
Pre- and post-processing (letterbox, NMS) are the ONNX backend's, so the two
backends return the same kind of boxes.
"""

from __future__ import annotations

import importlib.util
import logging
import threading
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field

from services.detector.backends.base import Backend, BackendUnavailable, register_backend
from services.detector.backends.onnx_runtime import (
    OnnxBackend,
    decode_output,
    letterbox,
    letterbox_shape,
    to_tensor,
)
from services.detector.detections import Detections
from services.detector.models import export_model, models_dir
from shared.config import Section

log = logging.getLogger(__name__)


class OpenVinoBackendConfig(Section):
    """Run the cached ONNX export with the OpenVINO runtime (pip package ``openvino``)."""

    type: Literal["openvino"] = Field("openvino", description="Backend selector.")
    precision: Literal["fp32", "bf16", "int8"] = Field(
        "fp32",
        description="fp32: computed in FP32 (the same numbers as onnx); bf16: OpenVINO's "
        "bfloat16 inference on CPUs that have it natively (about 2x faster, confidences "
        "differ by ~0.01); int8: the statically quantized export (as for onnx).",
    )


@register_backend("openvino", config=OpenVinoBackendConfig)
class OpenVinoBackend(Backend):
    def load(self) -> None:
        if importlib.util.find_spec("openvino") is None:
            raise BackendUnavailable(
                "detector.backend.type=openvino needs the 'openvino' package, which is not "
                "installed (pip install openvino); or use backend type 'onnx'"
            )
        if self.config.device != "cpu":
            raise BackendUnavailable("the openvino backend runs on device: cpu only")
        import openvino as ov

        cfg = self.config.backend
        assert isinstance(cfg, OpenVinoBackendConfig)
        if self.model.path.suffix == ".onnx":
            path = self.model.path
        else:
            path = self.cached_export = export_model(
                self.model.path,
                imgsz=self.config.imgsz,
                fmt="onnx",
                cache_dir=models_dir(self.state_dir),
            )
        if cfg.precision != "fp32":  # named like `auto`'s choices, in records and metrics
            self.type_name = f"{self.type_name}-{cfg.precision}"
        if cfg.precision == "int8":
            from services.detector.quantize import quantize_int8

            path = self.cached_export = quantize_int8(Path(path))
        self.path = str(path)
        self.core = ov.Core()
        cache = models_dir(self.state_dir) / "openvino-cache"
        cache.mkdir(exist_ok=True)
        self.core.set_property({"CACHE_DIR": str(cache)})
        try:
            self.ov_model = self.core.read_model(self.path)
        except Exception as exc:
            raise BackendUnavailable(f"OpenVINO cannot read {self.path}: {exc}") from exc
        # Class names and stride live in the ONNX metadata (the ONNX backend reads them).
        import onnx

        meta = {
            p.key: p.value for p in onnx.load(self.path, load_external_data=False).metadata_props
        }
        self.names = OnnxBackend._names(meta)
        self.stride = int(meta.get("stride", 32))
        self.end2end = meta.get("end2end", "False") == "True"
        self.input_name = self.ov_model.inputs[0].get_any_name()
        self.threads = self.config.resolved_threads()
        self.compile_config = {"INFERENCE_NUM_THREADS": self.threads, "PERFORMANCE_HINT": "LATENCY"}
        if cfg.precision == "bf16":
            if "BF16" not in self.core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
                raise BackendUnavailable(
                    "detector.backend.precision=bf16 needs a CPU with native bfloat16 "
                    "(AVX512_BF16 or AMX); use fp32"
                )
            self.compile_config["INFERENCE_PRECISION_HINT"] = "bf16"
        elif cfg.precision == "fp32":
            # OpenVINO's CPU plugin computes an FP32 model in bfloat16 by default on CPUs
            # that have it: "fp32" must mean FP32 (the numbers onnx gives).
            self.compile_config["INFERENCE_PRECISION_HINT"] = "f32"
        self._compiled: dict[tuple[int, int], object] = {}
        self._lock = threading.Lock()
        self.preferred_batch = 1

    def _request(self, shape: tuple[int, int]):  # noqa: ANN202
        """An infer request for inputs of ``shape`` (h, w), compiled on first use."""
        with self._lock:
            req = self._compiled.get(shape)
            if req is None:
                model = self.ov_model.clone()
                model.reshape({self.input_name: [1, 3, shape[0], shape[1]]})
                compiled = self.core.compile_model(model, "CPU", self.compile_config)
                req = self._compiled[shape] = compiled.create_infer_request()
            return req

    def infer(
        self, images: list[np.ndarray], conf: float, imgsz: int | None = None
    ) -> list[Detections]:
        out = []
        for img in images:
            h, w = img.shape[:2]
            shape = letterbox_shape(h, w, imgsz or self.config.imgsz, self.stride, None)
            boxed, lb = letterbox(img, shape)
            pred = self._request(shape).infer({0: to_tensor([boxed])})[0]
            xyxy, confidence, cls = decode_output(
                np.asarray(pred)[0], conf, self.config.iou, self.config.max_objects, self.end2end
            )
            out.append(Detections(lb.unmap(xyxy, w, h), confidence, cls))
        return out

    def close(self) -> None:
        self._compiled.clear()
        super().close()
