"""Ultralytics backends: the ``.pt`` weights on PyTorch, and OpenVINO exports."""

from __future__ import annotations

import logging
import os
from typing import Any, Literal

import numpy as np
from pydantic import Field

from services.detector.backends.base import Backend, BackendUnavailable, register_backend
from services.detector.detections import Detections
from shared.config import Section

log = logging.getLogger(__name__)


class UltralyticsBackend(Backend):
    """Runs ``YOLO(path).predict`` on a list of frames (ultralytics batches them)."""

    half: bool = False

    def weights_path(self) -> str:
        return str(self.model.path)

    def set_threads(self) -> None:
        n = self.config.resolved_threads()
        # ultralytics sets OMP_NUM_THREADS=1 on import unless it is already set.
        os.environ.setdefault("OMP_NUM_THREADS", str(n))
        import torch

        torch.set_num_threads(n)

    def load(self) -> None:
        self.set_threads()
        from ultralytics import YOLO

        path = self.weights_path()
        try:
            self.yolo = YOLO(path, task="detect")
        except Exception as exc:
            raise BackendUnavailable(f"cannot load model {path}: {exc}") from exc
        self.names = {int(k): str(v) for k, v in self.yolo.names.items()}

    def warmup(self) -> None:
        super().warmup()
        # ultralytics' first predict resets torch to (cores - 1) threads; undo that.
        import torch

        torch.set_num_threads(self.config.resolved_threads())

    def predict_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "imgsz": self.config.imgsz,
            "iou": self.config.iou,
            "device": self.config.device,
            "max_det": self.config.max_objects,
            "verbose": False,
        }
        if self.half:
            kwargs["half"] = True
        return kwargs

    def infer(
        self, images: list[np.ndarray], conf: float, imgsz: int | None = None
    ) -> list[Detections]:
        out = []
        kwargs = self.predict_kwargs()
        if imgsz:
            kwargs["imgsz"] = imgsz
        for start in range(0, len(images), self.max_batch):
            chunk = images[start : start + self.max_batch]
            for res in self.yolo.predict(chunk, conf=conf, **kwargs):
                boxes = res.boxes
                out.append(
                    Detections(
                        boxes.xyxy.cpu().numpy(),
                        boxes.conf.cpu().numpy(),
                        boxes.cls.cpu().numpy().astype(np.int64),
                    )
                )
        return out


class TorchBackendConfig(Section):
    """Run the ``.pt`` weights through ultralytics + PyTorch (slowest on CPU, no export)."""

    type: Literal["torch"] = Field("torch", description="Backend selector.")
    half: bool = Field(False, description="FP16 inference (CUDA only).")


@register_backend("torch", config=TorchBackendConfig)
class TorchBackend(UltralyticsBackend):
    def load(self) -> None:
        cfg = self.config.backend
        assert isinstance(cfg, TorchBackendConfig)
        self.half = cfg.half and self.config.device.startswith("cuda")
        self.preferred_batch = 8 if self.config.device.startswith("cuda") else 1
        if self.config.device.startswith("cuda"):
            import torch

            if not torch.cuda.is_available():
                raise BackendUnavailable(
                    f"detector.device={self.config.device} but PyTorch sees no CUDA device"
                )
        super().load()
