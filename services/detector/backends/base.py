"""Backend interface and registry."""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import numpy as np
from pydantic import Field

from services.detector.detections import Detections, LabelMap
from services.detector.models import ResolvedModel, label_map_for

if TYPE_CHECKING:
    from services.detector.config import DetectorConfig

log = logging.getLogger(__name__)


#: Largest batch sent to a model with a dynamic batch dimension.
MAX_MODEL_BATCH = 64


class BackendUnavailable(RuntimeError):
    """The selected backend cannot run here (missing package, device, file)."""


class Backend(ABC):
    """Runs the model on a batch of BGR images and returns pixel-space detections."""

    #: The ``type`` key this backend is registered under.
    type_name: str = ""

    def __init__(self, config: DetectorConfig, model: ResolvedModel, state_dir: Path) -> None:
        self.config = config
        self.model = model
        self.state_dir = Path(state_dir)
        #: Raw class names of the loaded model (set by :meth:`load`).
        self.names: dict[int, str] = {}
        #: Largest batch the model takes in one call (:meth:`infer` splits bigger lists).
        self.max_batch: int = MAX_MODEL_BATCH
        #: Frames per call this backend handles best (``detector.max_batch: 0`` uses it).
        self.preferred_batch: int = 1
        #: The cached export this backend loaded (set by backends that export), so a
        #: corrupt cache can be thrown away and exported again.
        self.cached_export: Path | None = None

    @property
    def label_map(self) -> LabelMap:
        return label_map_for(self.names)

    @abstractmethod
    def load(self) -> None:
        """Load (and if needed export) the model.  Raises :class:`BackendUnavailable`."""

    @abstractmethod
    def infer(
        self, images: list[np.ndarray], conf: float, imgsz: int | None = None
    ) -> list[Detections]:
        """Detections (raw model class ids) for each image, at least ``conf`` confident.

        ``imgsz`` overrides ``detector.imgsz`` for this call (region crops run smaller).
        """

    def warmup(self) -> None:
        """One inference on a blank frame so the first real frame is not slow."""
        side = self.config.imgsz
        self.infer([np.zeros((side * 3 // 4, side, 3), np.uint8)], conf=0.99)

    def close(self) -> None:
        """Release the model (backends holding native resources extend this)."""
        self.closed = True


BACKENDS: dict[str, type[Backend]] = {}

B = TypeVar("B", bound=type[Backend])


#: The config class each backend registered with (its ``type`` is the selector).
BACKEND_CONFIGS: dict[str, type] = {}


def register_backend(type_name: str, *, config: type) -> Callable[[B], B]:
    """Register a backend and, beside it, its config class (``type: Literal[name]``)."""

    def deco(cls: B) -> B:
        if type_name in BACKENDS:
            raise ValueError(f"backend {type_name!r} registered twice")
        cls.type_name = type_name
        BACKENDS[type_name] = cls
        BACKEND_CONFIGS[type_name] = config
        return cls

    return deco


def backend_config_union() -> Any:
    """``detector.backend``: the registered backends' configs, discriminated by ``type``."""
    members = tuple(BACKEND_CONFIGS.values())
    union = members[0]
    for m in members[1:]:
        union = union | m
    return Annotated[union, Field(discriminator="type")]


def create_backend(config: DetectorConfig, model: ResolvedModel, state_dir: Path) -> Backend:
    """Instantiate (not load) the backend ``config.backend.type`` selects."""
    cls = BACKENDS.get(config.backend.type)
    if cls is None:
        raise BackendUnavailable(
            f"detector.backend.type {config.backend.type!r} is not registered "
            f"(known: {', '.join(sorted(BACKENDS))})"
        )
    return cls(config, model, state_dir)
