"""Camera discovery: probe V4L2 devices and the configured sources by reading a frame."""

from __future__ import annotations

import glob
import logging
import re
import threading
from dataclasses import dataclass, field
from typing import cast

from edge_agent.sources import (
    FrameSource,
    SourceError,
    SourceSpec,
    open_source,
    parse_source,
    unique_names,
)

log = logging.getLogger(__name__)


@dataclass(slots=True)
class ProbeResult:
    """What probing one source found.  ``source`` stays open for capture when ok."""

    spec: SourceSpec
    ok: bool
    width: int = 0
    height: int = 0
    fps: float = 0.0
    backend: str = ""
    note: str = ""
    error: str = ""
    source: FrameSource | None = field(default=None, repr=False)

    def describe(self) -> str:
        if not self.ok:
            return f"{self.spec.name:<16} UNUSABLE  source={self.spec.display}  ({self.error})"
        fps = f"{self.fps:.1f} fps" if self.fps else "fps unknown"
        line = (
            f"{self.spec.name:<16} {self.width}x{self.height} @ {fps}  backend={self.backend}"
            f"  kind={self.spec.kind}  source={self.spec.display}"
        )
        return f"{line}  [{self.note}]" if self.note else line


def list_v4l2_devices() -> list[str]:
    """``/dev/video*`` capture nodes, in numeric order."""

    def number(path: str) -> int:
        m = re.search(r"(\d+)$", path)
        return int(m.group(1)) if m else 1 << 30

    return sorted((p for p in glob.glob("/dev/video*") if re.search(r"video\d+$", p)), key=number)


def probe(
    spec: SourceSpec, width: int, height: int, timeout_s: float = 5.0, phase: float = 0.0
) -> ProbeResult:
    """Open ``spec`` and read one frame, giving up after ``timeout_s``.

    Some drivers block forever in open/read; the attempt then runs on in a
    daemon thread and the source is reported as timed out.
    """
    box: dict[str, object] = {}

    def attempt() -> None:
        try:
            box["source"] = open_source(spec, width, height, timeout_s=timeout_s, phase=phase)
        except SourceError as exc:
            box["error"] = str(exc)
        except Exception as exc:  # a broken driver/codec must not stop discovery
            box["error"] = f"{type(exc).__name__}: {exc}"

    worker = threading.Thread(target=attempt, name=f"probe-{spec.name}", daemon=True)
    worker.start()
    worker.join(timeout_s + 1.0)
    if worker.is_alive():
        return ProbeResult(spec, False, error=f"no frame within {timeout_s:.0f}s")
    if "error" in box:
        return ProbeResult(spec, False, error=str(box["error"]))
    src = cast(FrameSource, box["source"])
    return ProbeResult(
        spec,
        True,
        width=src.width,
        height=src.height,
        fps=src.fps,
        backend=src.backend,
        note=src.note,
        source=src,
    )


def source_specs(sources: list[str], max_cameras: int) -> list[SourceSpec]:
    """Specs for the given ``--source`` values, or for the local V4L2 devices."""
    if sources:
        specs = [parse_source(text, i) for i, text in enumerate(sources)]
    else:
        specs = [parse_source(dev) for dev in list_v4l2_devices()]
    return unique_names(specs)


def discover(
    specs: list[SourceSpec],
    max_cameras: int,
    width: int,
    height: int,
    timeout_s: float = 5.0,
) -> list[ProbeResult]:
    """Probe every spec in parallel; at most ``max_cameras`` working sources stay open.

    Results keep the order of ``specs``; working sources past the limit are
    closed and reported as skipped.
    """
    results: list[ProbeResult | None] = [None] * len(specs)

    def run(i: int, spec: SourceSpec) -> None:
        # Demo cameras get different phases so several of them do not move in step.
        results[i] = probe(spec, width, height, timeout_s, phase=3.7 * i)

    threads = [
        threading.Thread(target=run, args=(i, s), name=f"discover-{i}", daemon=True)
        for i, s in enumerate(specs)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout_s + 2.0)
    out: list[ProbeResult] = []
    working = 0
    for spec, res in zip(specs, results, strict=True):
        if res is None:
            res = ProbeResult(spec, False, error=f"no frame within {timeout_s:.0f}s")
        if res.ok:
            working += 1
            if working > max_cameras:
                if res.source is not None:
                    res.source.close()
                res = ProbeResult(spec, False, error=f"skipped: --max-cameras {max_cameras}")
        out.append(res)
        log.info(
            "camera probed",
            extra={
                "camera": spec.name,
                "source": spec.display,
                "ok": res.ok,
                "width": res.width,
                "height": res.height,
                "backend": res.backend,
                "error": res.error,
            },
        )
    return out
