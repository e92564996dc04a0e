"""Benchmark helpers: real test photo frames, percentiles, child processes."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def photo(name: str = "bus.jpg", size: tuple[int, int] = (640, 480)) -> np.ndarray:
    """A real photo shipped by ultralytics, resized (640x480 by default)."""
    import ultralytics

    img = cv2.imread(str(Path(ultralytics.__file__).parent / "assets" / name))
    return cv2.resize(img, size, interpolation=cv2.INTER_AREA)


def jpeg(img: np.ndarray, quality: int = 80) -> bytes:
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return buf.tobytes()


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    return float(np.percentile(np.asarray(values), p))


def child_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update({k: str(v) for k, v in extra.items()})
    env.setdefault("PYTHONPATH", str(ROOT))
    return env


def spawn(args: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    f = open(log_path, "wb")  # noqa: SIM115 - lives as long as the child
    return subprocess.Popen(
        [sys.executable, *args], env=env, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT
    )


def stop(proc: subprocess.Popen, timeout: float = 10) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def wait_until(pred, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.05)
    raise TimeoutError(f"benchmark setup: timed out waiting for {what}")
