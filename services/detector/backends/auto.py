"""``backend: auto``: measure the candidates once, keep the fastest that is accurate.

At the first start every candidate (``onnx``, ``onnx-int8``, ``openvino``,
``openvino-int8`` by default) is loaded and

1. checked by the accuracy gate (:func:`services.detector.quantize.accuracy_gate`)
   against ``onnx`` FP32 on the reference photos: same count, box IoU >= 0.9;
2. timed: CPU milliseconds per call on a full 640×480 frame and on a region crop
   (``region_imgsz``), weighted 1:1 (the scheduler runs both kinds).

The fastest candidate that passed is used; the choice and the figures are cached in
``<state_dir>/models/auto-<model digest>-<imgsz>-<cpus>cpu.json``, so later starts
load only the chosen backend.  Detection records name the chosen backend.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
from pydantic import Field

from services.detector.backends.base import (
    BACKENDS,
    Backend,
    BackendUnavailable,
    register_backend,
)
from services.detector.backends.onnx_runtime import OnnxBackendConfig
from services.detector.backends.openvino import OpenVinoBackendConfig
from services.detector.detections import Detections
from services.detector.models import file_digest, models_dir
from shared.config import Section

if TYPE_CHECKING:
    from services.detector.config import DetectorConfig

log = logging.getLogger(__name__)

#: Timed calls per candidate and input kind (after one warm-up call).
TIMED_CALLS = 4


def candidate_config(config: DetectorConfig, name: str) -> DetectorConfig:
    """The detector config with ``backend`` set to the candidate ``name``."""
    kind, _, precision = name.partition("-")
    precision = precision or "fp32"
    if kind == "onnx":
        backend = OnnxBackendConfig(precision=precision)
    elif kind == "openvino":
        backend = OpenVinoBackendConfig(precision=precision)
    else:
        raise ValueError(f"unknown candidate {name!r}")
    return config.model_copy(update={"backend": backend})


def cpu_ms_per_call(backend: Backend, img: np.ndarray, imgsz: int | None, n: int) -> float:
    backend.infer([img], conf=0.25, imgsz=imgsz)  # warm-up (compiles shapes)
    c0 = time.process_time()
    for _ in range(n):
        backend.infer([img], conf=0.25, imgsz=imgsz)
    return (time.process_time() - c0) * 1000 / n


class AutoBackendConfig(Section):
    """Measure the candidates once (cached in <state_dir>/models) and use the fastest
    that passes the accuracy gate against FP32 on the reference photos."""

    type: Literal["auto"] = Field("auto", description="Backend selector.")
    candidates: list[Literal["onnx", "onnx-int8", "openvino", "openvino-bf16", "openvino-int8"]] = (
        Field(
            default_factory=lambda: ["onnx", "onnx-int8", "openvino", "openvino-int8"],
            min_length=1,
            max_length=5,
            description="Backends to measure; onnx (FP32) is the reference of the gate.",
        )
    )
    remeasure: bool = Field(
        False, description="Measure again at start even when a cached choice exists."
    )


@register_backend("auto", config=AutoBackendConfig)
class AutoBackend(Backend):
    """Delegates to the chosen candidate (see the module docstring)."""

    def choice_path(self) -> Path:
        return (
            models_dir(self.state_dir)
            / f"auto-{file_digest(self.model.path)}-{self.config.imgsz}-{os.cpu_count()}cpu.json"
        )

    def load(self) -> None:
        cfg = self.config.backend
        assert isinstance(cfg, AutoBackendConfig)
        cached = self._cached_choice(cfg)
        if cached is not None:
            self.report = cached
            self.chosen = self._load(cached["choice"])
        else:
            self.report = self.measure(cfg.candidates)
            self.chosen = self.report.pop("_backend")
            self.choice_path().write_text(json.dumps(self.report, indent=2))
        self.names = self.chosen.names
        self.max_batch = self.chosen.max_batch
        self.preferred_batch = self.chosen.preferred_batch
        self.type_name = self.report["choice"]  # reported in records and metrics
        log.info(
            "backend chosen",
            extra={"choice": self.report["choice"], "cached": cached is not None,
                   "cpu_ms": self.report.get("cpu_ms"), "path": str(self.choice_path())},
        )  # fmt: skip

    def _cached_choice(self, cfg: AutoBackendConfig) -> dict | None:
        path = self.choice_path()
        if cfg.remeasure or not path.exists():
            return None
        try:
            report = json.loads(path.read_text())
        except (OSError, ValueError):
            log.warning("unreadable auto choice; measuring again", extra={"path": str(path)})
            return None
        if report.get("choice") not in cfg.candidates:
            return None
        return report

    def _load(self, name: str) -> Backend:
        sub = candidate_config(self.config, name)
        backend = BACKENDS[sub.backend.type](sub, self.model, self.state_dir)
        backend.load()
        backend.warmup()
        return backend

    def measure(self, candidates: list[str]) -> dict:
        """Gate and time every candidate; returns the report (with the chosen backend)."""
        from services.detector.quantize import accuracy_gate, calibration_frames

        frame = calibration_frames()[0]
        side = self.config.region_imgsz
        crop = frame[: min(side, frame.shape[0]), : min(side, frame.shape[1])]
        reference = self._load("onnx")
        loaded: dict[str, Backend] = {"onnx": reference}
        report: dict = {"candidates": {}, "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ")}
        for name in candidates:
            try:
                backend = loaded.get(name) or self._load(name)
            except (BackendUnavailable, Exception) as exc:  # a candidate may not run here
                report["candidates"][name] = {"error": f"{type(exc).__name__}: {exc}"[:300]}
                continue
            loaded[name] = backend
            gate = accuracy_gate(backend, reference)
            full = cpu_ms_per_call(backend, frame, None, TIMED_CALLS)
            region = cpu_ms_per_call(backend, crop, side, TIMED_CALLS)
            report["candidates"][name] = {
                "gate": gate.as_dict(),
                "cpu_ms_full": round(full, 1),
                "cpu_ms_region": round(region, 1),
                "cpu_ms": round((full + region) / 2, 1),
            }
        passing = [
            (v["cpu_ms"], n)
            for n, v in report["candidates"].items()
            if "gate" in v and v["gate"]["passed"]
        ]
        choice = min(passing)[1] if passing else "onnx"
        report["choice"] = choice
        report["cpu_ms"] = report["candidates"].get(choice, {}).get("cpu_ms")
        for name, backend in loaded.items():
            if name != choice:
                backend.close()
        report["_backend"] = loaded[choice]
        return report

    def infer(
        self, images: list[np.ndarray], conf: float, imgsz: int | None = None
    ) -> list[Detections]:
        return self.chosen.infer(images, conf, imgsz)

    def warmup(self) -> None:
        """The chosen backend was warmed up when it was loaded."""

    def close(self) -> None:
        self.chosen.close()
        super().close()
