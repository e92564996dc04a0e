"""ONNX Runtime backend: the cached ONNX export, letterboxing and NMS done here.

Running sessions directly (rather than through ``YOLO("x.onnx")``) skips
ultralytics' per-call predictor set-up and lets one call take several cameras'
frames, in one of two ways:

* **lanes** (CPU default): one session per core-group; a multi-camera call deals the
  frames to the lanes, which run in parallel.  Measured on 2 shared cores this beat
  both one two-thread session and stacked batches, in throughput and latency,
  because independent runs do not wait for each other's threads;
* **stacked batches** (``lanes: 1``, and CUDA): frames of the same letterboxed shape
  go into one ``(N, 3, H, W)`` tensor.

A single frame always uses the "wide" session with every thread (lowest latency).
"""

from __future__ import annotations

import ast
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
from pydantic import Field

from services.detector.backends.base import Backend, BackendUnavailable, register_backend
from services.detector.detections import Detections
from services.detector.models import export_model, models_dir
from shared.config import Section

log = logging.getLogger(__name__)

#: Candidates kept before NMS (highest confidence first), like ultralytics' max_nms.
MAX_NMS_CANDIDATES = 30_000
#: Grey of the letterbox padding (what the YOLO models were trained with).
PAD_VALUE = 114


@dataclass(frozen=True, slots=True)
class Letterbox:
    """How an image was resized and padded into the network input."""

    gain: float
    pad_x: float
    pad_y: float
    shape: tuple[int, int]  # network input (h, w)

    def unmap(self, xyxy: np.ndarray, width: int, height: int) -> np.ndarray:
        """Network-input boxes back to original pixel boxes, clipped to the image."""
        out = xyxy.copy()
        out[:, [0, 2]] = (out[:, [0, 2]] - self.pad_x) / self.gain
        out[:, [1, 3]] = (out[:, [1, 3]] - self.pad_y) / self.gain
        out[:, [0, 2]] = out[:, [0, 2]].clip(0, width)
        out[:, [1, 3]] = out[:, [1, 3]].clip(0, height)
        return out


def letterbox_shape(h: int, w: int, imgsz: int, stride: int, fixed: tuple[int, int] | None):
    """Network input size for an ``h``×``w`` image: longest side ``imgsz``, the other
    padded to a multiple of ``stride`` (or the model's fixed input size)."""
    if fixed is not None:
        return fixed
    gain = min(imgsz / h, imgsz / w)
    nh, nw = round(h * gain), round(w * gain)
    return (int(np.ceil(nh / stride) * stride), int(np.ceil(nw / stride) * stride))


def letterbox(img: np.ndarray, shape: tuple[int, int]) -> tuple[np.ndarray, Letterbox]:
    """Resize keeping aspect ratio and pad (grey 114) to ``shape`` (h, w), centred."""
    h, w = img.shape[:2]
    th, tw = shape
    gain = min(th / h, tw / w)
    nh, nw = round(h * gain), round(w * gain)
    if (nh, nw) != (h, w):
        img = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_LINEAR)
    dy, dx = (th - nh) / 2, (tw - nw) / 2
    top, left = round(dy - 0.1), round(dx - 0.1)
    out = cv2.copyMakeBorder(
        img,
        top,
        th - nh - top,
        left,
        tw - nw - left,
        cv2.BORDER_CONSTANT,
        value=(PAD_VALUE, PAD_VALUE, PAD_VALUE),
    )
    return out, Letterbox(gain, left, top, shape)


def to_tensor(images: list[np.ndarray]) -> np.ndarray:
    """BGR HWC uint8 images of one shape -> RGB NCHW float32 0..1."""
    batch = np.stack(images)[..., ::-1].transpose(0, 3, 1, 2)
    return np.ascontiguousarray(batch, dtype=np.float32) * np.float32(1 / 255)


def decode_output(
    pred: np.ndarray, conf: float, iou: float, max_det: int, end2end: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One image's raw output -> (xyxy, confidence, class_id) in network-input pixels.

    ``pred`` is (4 + classes, anchors) of centre-xywh + class scores (YOLOv8/11 heads),
    or (detections, 6) of xyxy, score, class for NMS-free (end-to-end) exports.
    """
    if end2end:
        keep = pred[:, 4] >= conf
        p = pred[keep][:max_det]
        return p[:, :4].astype(np.float32), p[:, 4].astype(np.float32), p[:, 5].astype(np.int64)
    scores = pred[4:]
    cls = scores.argmax(0)
    confidence = scores[cls, np.arange(scores.shape[1])]
    keep = np.flatnonzero(confidence >= conf)
    if keep.size == 0:
        empty = np.zeros((0, 4), np.float32)
        return empty, np.zeros(0, np.float32), np.zeros(0, np.int64)
    if keep.size > MAX_NMS_CANDIDATES:
        keep = keep[np.argsort(-confidence[keep])[:MAX_NMS_CANDIDATES]]
    cxcywh = pred[:4, keep].T
    confidence, cls = confidence[keep], cls[keep]
    xywh_tl = cxcywh.copy()
    xywh_tl[:, :2] -= cxcywh[:, 2:] / 2
    picked = cv2.dnn.NMSBoxesBatched(
        xywh_tl.astype(np.float32), confidence.astype(np.float32), cls.astype(np.int32), conf, iou
    )
    picked = np.asarray(picked, dtype=np.int64).reshape(-1)[:max_det]
    xyxy = np.concatenate([xywh_tl[picked, :2], xywh_tl[picked, :2] + cxcywh[picked, 2:]], axis=1)
    return xyxy.astype(np.float32), confidence[picked].astype(np.float32), cls[picked]


class OnnxBackendConfig(Section):
    """Run an ONNX export (made once, cached in <state_dir>/models) with ONNX Runtime."""

    type: Literal["onnx"] = Field("onnx", description="Backend selector.")
    path: str | None = Field(
        None,
        description="Use this .onnx file instead of exporting the configured model.",
    )
    lanes: int = Field(
        0,
        ge=0,
        le=32,
        description="Sessions that run frames of different cameras in parallel, each with "
        "threads/lanes threads (0 = auto: min(4, threads) on CPU, 1 on CUDA; 1 = one "
        "session, several cameras stacked into one batch).",
    )
    allow_spinning: bool = Field(
        True,
        description="Let ONNX Runtime threads busy-wait between ops (faster, but burns CPU "
        "when the host is shared).",
    )
    precision: Literal["fp32", "int8"] = Field(
        "fp32",
        description="int8: run a statically quantized copy of the export (made once, cached; "
        "calibrated on the demo scenes). Check it with the accuracy gate "
        "(`backend: auto` does).",
    )


@register_backend("onnx", config=OnnxBackendConfig)
class OnnxBackend(Backend):
    def load(self) -> None:
        try:
            import onnxruntime as ort
        except ImportError:
            raise BackendUnavailable(
                "detector.backend.type=onnx needs onnxruntime: pip install 'sentri[detector]'"
            ) from None
        cfg = self.config.backend
        assert isinstance(cfg, OnnxBackendConfig)
        if cfg.path:
            path = cfg.path
        elif self.model.path.suffix == ".onnx":
            path = str(self.model.path)
        else:
            self.cached_export = export_model(
                self.model.path,
                imgsz=self.config.imgsz,
                fmt="onnx",
                cache_dir=models_dir(self.state_dir),
            )
            path = str(self.cached_export)
        if cfg.precision != "fp32":  # named like `auto`'s choices, in records and metrics
            self.type_name = f"{self.type_name}-{cfg.precision}"
        if cfg.precision == "int8":
            from services.detector.quantize import quantize_int8

            path = str(quantize_int8(Path(path)))
            self.cached_export = Path(path)  # a corrupt int8 copy is made again
        providers: list = ["CPUExecutionProvider"]

        on_cuda = self.config.device.startswith("cuda")
        if on_cuda:
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise BackendUnavailable(
                    f"detector.device={self.config.device} but onnxruntime has no CUDA provider "
                    "(install onnxruntime-gpu or use device: cpu)"
                )
            dev = int(self.config.device.partition(":")[2] or 0)
            providers = [("CUDAExecutionProvider", {"device_id": dev}), "CPUExecutionProvider"]
        threads = self.config.resolved_threads()
        lanes = cfg.lanes or (1 if on_cuda else min(4, threads))
        try:
            # The wide session (every thread) serves single frames at the lowest latency;
            # with several frames, each lane (a session with threads/lanes threads) takes
            # its share in parallel: independent runs scale better on a busy CPU than
            # one run split over threads that wait for each other.
            self.session = self._session(ort, path, threads, providers)
            self.lanes = (
                [
                    self._session(ort, path, max(1, threads // lanes), providers)
                    for _ in range(lanes)
                ]
                if lanes > 1
                else []
            )
        except Exception as exc:
            raise BackendUnavailable(f"cannot load ONNX model {path}: {exc}") from exc
        self._pool = (
            ThreadPoolExecutor(len(self.lanes), thread_name_prefix="onnx-lane")
            if self.lanes
            else None
        )
        self.preferred_batch = max(1, len(self.lanes)) if not on_cuda else 8
        self.path = path
        meta = self.session.get_modelmeta().custom_metadata_map
        self.names = self._names(meta)
        self.stride = int(meta.get("stride", 32))
        self.end2end = meta.get("end2end", "False") == "True"
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        b, _, h, w = inp.shape
        self.fixed_shape = (h, w) if isinstance(h, int) and isinstance(w, int) else None
        if isinstance(b, int):  # exported with a fixed batch size
            self.max_batch = max(1, b)

    def _session(self, ort, path: str, threads: int, providers: list):  # noqa: ANN001
        cfg = self.config.backend
        assert isinstance(cfg, OnnxBackendConfig)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if not cfg.allow_spinning:
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        return ort.InferenceSession(path, opts, providers=providers)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
        super().close()

    @staticmethod
    def _names(meta: dict[str, str]) -> dict[int, str]:
        try:
            names = ast.literal_eval(meta.get("names", "{}"))
            return {int(k): str(v) for k, v in dict(names).items()}
        except (ValueError, SyntaxError, TypeError):
            log.warning("ONNX model has no readable class names; using numbers")
            return {}

    def _shape(self, img: np.ndarray, imgsz: int | None = None) -> tuple[int, int]:
        return letterbox_shape(
            img.shape[0], img.shape[1], imgsz or self.config.imgsz, self.stride, self.fixed_shape
        )

    def _detect(
        self,
        session,  # noqa: ANN001
        images: list[np.ndarray],
        conf: float,
        imgsz: int | None = None,
    ) -> list[Detections]:
        """One model call on images of the same letterboxed shape."""
        shape = self._shape(images[0], imgsz)
        boxed = [letterbox(img, shape) for img in images]
        out = session.run(None, {self.input_name: to_tensor([b[0] for b in boxed])})[0]
        dets = []
        for j, img in enumerate(images):
            xyxy, confidence, cls = decode_output(
                out[j], conf, self.config.iou, self.config.max_objects, self.end2end
            )
            h, w = img.shape[:2]
            dets.append(Detections(boxed[j][1].unmap(xyxy, w, h), confidence, cls))
        return dets

    def infer(
        self, images: list[np.ndarray], conf: float, imgsz: int | None = None
    ) -> list[Detections]:
        if not images:
            return []
        if self._pool is not None and len(images) > 1:
            # Frames dealt round-robin to the lanes, one model call per frame.
            shares = [list(range(k, len(images), len(self.lanes))) for k in range(len(self.lanes))]

            def run_share(k: int) -> list[tuple[int, Detections]]:
                return [
                    (i, self._detect(self.lanes[k], [images[i]], conf, imgsz)[0]) for i in shares[k]
                ]

            results: list[Detections | None] = [None] * len(images)
            for share in self._pool.map(run_share, range(len(self.lanes))):
                for i, det in share:
                    results[i] = det
            return [r if r is not None else Detections.empty() for r in results]
        # Stack frames of the same shape into batches (GPU; or lanes disabled).
        out: list[Detections | None] = [None] * len(images)
        groups: dict[tuple[int, int], list[int]] = {}
        for i, img in enumerate(images):
            groups.setdefault(self._shape(img, imgsz), []).append(i)
        for idxs in groups.values():
            for start in range(0, len(idxs), self.max_batch):
                chunk = idxs[start : start + self.max_batch]
                for i, det in zip(
                    chunk,
                    self._detect(self.session, [images[i] for i in chunk], conf, imgsz),
                    strict=True,
                ):
                    out[i] = det
        return [r if r is not None else Detections.empty() for r in out]
