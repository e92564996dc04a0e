"""``sentri faces bench``: time face detection + encoding at the configured settings."""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

import cv2
import numpy as np

from services.faces.config import FacesConfig


def demo_scene(width: int = 640, height: int = 480) -> np.ndarray:
    """A BGR frame with the astronaut's face (scikit-image sample) at ~110 px."""
    from skimage import data

    face = cv2.cvtColor(data.astronaut()[30:240, 120:330], cv2.COLOR_RGB2BGR)
    face = cv2.resize(face, None, fx=1.25, fy=1.25, interpolation=cv2.INTER_AREA)
    scene = cv2.resize(cv2.cvtColor(data.coffee(), cv2.COLOR_RGB2BGR), (width, height))
    fh, fw = face.shape[:2]
    y, x = (height - fh) // 3, (width - fw) // 2
    scene[y : y + fh, x : x + fw] = face
    return scene


def run_bench(config: FacesConfig, *, frames: int = 20, image: Path | None = None) -> int:
    from services.faces.engine import get_engine

    if image is not None:
        bgr = cv2.imread(str(image), cv2.IMREAD_COLOR)
        if bgr is None:
            print(f"sentri faces bench: cannot read image {image}", file=sys.stderr)
            return 1
    else:
        try:
            bgr = demo_scene()
        except ImportError:
            print(
                "sentri faces bench: scikit-image is needed for the test scene; pass --image",
                file=sys.stderr,
            )
            return 1
    engine = get_engine()
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    engine.analyze(rgb, config)  # warm-up
    detect, encode, faces = [], [], 0
    for _ in range(max(1, frames)):
        a = engine.analyze(rgb, config)
        detect.append(a.detect_ms)
        encode.append(a.encode_ms)
        faces = len(a.accepted)
    total = [d + e for d, e in zip(detect, encode, strict=True)]
    result = {
        "frame": f"{rgb.shape[1]}x{rgb.shape[0]}",
        "model": config.model,
        "downscale": config.downscale,
        "upsample": config.upsample,
        "num_jitters": config.num_jitters,
        "faces": faces,
        "frames": len(total),
        "detect_ms_median": round(statistics.median(detect), 1),
        "encode_ms_median": round(statistics.median(encode), 1),
        "total_ms_median": round(statistics.median(total), 1),
        "total_ms_max": round(max(total), 1),
    }
    print(json.dumps(result))
    return 0
