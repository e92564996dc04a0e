"""Capture sources: V4L2/USB devices, RTSP/HTTP streams, video files and demo scenes.

``parse_source`` turns a ``--source`` argument into a :class:`SourceSpec` (kind,
stable local name, credential-free display string); ``open_source`` opens it as a
:class:`FrameSource` whose ``read()`` blocks until the next frame, paced at the
source's own rate (video files and demo scenes are paced to their fps so they
behave like live cameras).

Accepted forms (``NAME=`` may prefix any of them to choose the camera's name)::

    0  /dev/video2                  local devices (V4L2)
    rtsp://user:pass@host/stream    network streams (FFmpeg backend)
    http://host/mjpeg  https://…
    /path/clip.mp4                  a video file, looped
    demo:bus  demo:zidane?static  demo:coffee?fps=10
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import cv2
import numpy as np

from edge_agent.demo import SCENES, DemoScene
from shared.protocol import valid_name

#: Query parameters whose values are secrets and never leave the machine.
SECRET_PARAMS = re.compile(r"pass|pwd|token|secret|key|auth|sig|credential", re.IGNORECASE)
_NAME_PREFIX = re.compile(r"^([A-Za-z0-9][A-Za-z0-9_.-]{0,63})=(.+)$")
DEMO_FPS = 30.0


class SourceError(RuntimeError):
    """A source could not be opened or delivered no frame."""


def redact(source: str) -> str:
    """``source`` with passwords and secret query values replaced by ``***``."""
    try:
        parts = urlsplit(source)
    except ValueError:
        return "<unparseable source>"
    if not parts.scheme or not parts.netloc:
        return source
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}:***@{host}" if ":" in userinfo else f"{user}@{host}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode(
            [(k, "***" if SECRET_PARAMS.search(k) else v) for k, v in pairs],
            safe="*",
            quote_via=quote,
        )
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


@dataclass(frozen=True, slots=True)
class SourceSpec:
    """A parsed ``--source``.  ``target`` may hold credentials: never log or send it."""

    name: str
    kind: str  # one of shared.protocol.CAMERA_KINDS
    target: str = field(repr=False)
    display: str
    options: dict[str, str] = field(default_factory=dict, compare=False)


def _sanitize(text: str) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-.")
    return cleaned[:48] or "cam"


def parse_source(text: str, index: int = 0) -> SourceSpec:
    """Parse one ``--source`` value; ``index`` numbers unnamed network sources."""
    text = text.strip()
    if not text:
        raise ValueError("empty source")
    name: str | None = None
    m = _NAME_PREFIX.match(text)
    if m and ":" not in m.group(1):
        name, text = m.group(1), m.group(2)
    if text.startswith("demo:"):
        scene, _, query = text[5:].partition("?")
        if scene not in SCENES:
            raise ValueError(
                f"unknown demo scene {scene!r}; choose one of: {', '.join(sorted(SCENES))}"
            )
        options = {k: v for k, v in parse_qsl(query, keep_blank_values=True)}
        for k in options:
            if k not in ("static", "fps"):
                raise ValueError(f"demo:{scene}: unknown option {k!r} (known: static, fps)")
        return SourceSpec(name or f"demo-{scene}", "demo", text, text, options)
    if text.isdigit():
        return SourceSpec(name or f"cam{int(text)}", "v4l2", text, text)
    m = re.fullmatch(r"/dev/video(\d+)", text)
    if m:
        return SourceSpec(name or f"cam{m.group(1)}", "v4l2", text, text)
    scheme = urlsplit(text).scheme.lower()
    if scheme in ("rtsp", "rtsps", "rtmp"):
        return SourceSpec(name or f"rtsp{index}", "rtsp", text, redact(text))
    if scheme in ("http", "https"):
        return SourceSpec(name or f"http{index}", "http", text, redact(text))
    if scheme and len(scheme) > 1:
        raise ValueError(f"unsupported source scheme {scheme!r} in {redact(text)!r}")
    path = Path(text).expanduser()
    return SourceSpec(name or f"file-{_sanitize(path.stem)}", "file", str(path), str(path))


def unique_names(specs: list[SourceSpec]) -> list[SourceSpec]:
    """Give duplicate names a ``-2``, ``-3`` … suffix (first keeps its name)."""
    seen: set[str] = set()
    out = []
    for spec in specs:
        name, n = spec.name, 2
        while name in seen:
            name, n = f"{spec.name}-{n}", n + 1
        seen.add(name)
        if not valid_name(name):
            raise ValueError(f"invalid camera name {name!r}")
        out.append(
            spec
            if name == spec.name
            else SourceSpec(name, spec.kind, spec.target, spec.display, spec.options)
        )
    return out


class FrameSource(Protocol):
    spec: SourceSpec
    backend: str
    width: int
    height: int
    fps: float
    #: Extra detail worth showing the user (e.g. why a demo uses a generated scene).
    note: str

    def open(self) -> None: ...
    def read(self) -> np.ndarray | None: ...
    def close(self) -> None: ...


class DemoSource:
    """A demo scene as a live camera at ``fps`` frames per second.

    A synthetic camera need not render frames nobody sends: :meth:`limit_rate`
    (called with the camera's target fps) slows rendering to that rate, while
    ``fps`` still reports what the "camera" can do.
    """

    backend = "demo"

    def __init__(self, spec: SourceSpec, width: int, height: int, phase: float = 0.0) -> None:
        self.spec = spec
        self.width, self.height = width, height
        try:
            self.fps = float(spec.options.get("fps") or DEMO_FPS)
        except ValueError:
            raise SourceError(f"{spec.display}: fps must be a number") from None
        if not 0.1 <= self.fps <= 120:
            raise SourceError(f"{spec.display}: fps must be within 0.1..120")
        self._scene_name = spec.target[5:].partition("?")[0]
        self._static = "static" in spec.options
        self._phase = phase
        self._scene: DemoScene | None = None
        self._t0 = 0.0
        self._next = 0.0
        self._period = 1.0 / self.fps
        self.note = ""

    def limit_rate(self, fps: float) -> None:
        self._period = 1.0 / min(self.fps, fps)

    def open(self) -> None:
        self._scene = DemoScene(
            self._scene_name, self.width, self.height, static=self._static, phase=self._phase
        )
        if not self._scene.is_photo:
            self.note = (
                f"photo unavailable ({self._scene.fallback_reason}); showing a generated scene"
            )
        self._t0 = self._next = time.monotonic()

    def read(self) -> np.ndarray | None:
        if self._scene is None:
            raise SourceError("not open")
        now = time.monotonic()
        if self._next > now:
            time.sleep(self._next - now)
            now = self._next
        period = self._period
        self._next = max(self._next + period, now - period)
        return self._scene.render(now - self._t0)

    def close(self) -> None:
        self._scene = None


class OpenCVSource:
    """Devices, network streams and files through ``cv2.VideoCapture``.

    Files are looped and paced to their own fps.  Opening and reading network
    streams is bounded by ``timeout_s`` (FFmpeg open/read timeouts).
    """

    def __init__(self, spec: SourceSpec, width: int, height: int, timeout_s: float = 5.0) -> None:
        self.spec = spec
        self.req_width, self.req_height = width, height
        self.timeout_s = timeout_s
        self.backend = ""
        self.width = self.height = 0
        self.fps = 0.0
        self.note = ""
        self._cap: cv2.VideoCapture | None = None
        self._next = 0.0
        self._lock = threading.Lock()

    def _make_capture(self) -> cv2.VideoCapture:
        spec = self.spec
        ms = int(self.timeout_s * 1000)
        if spec.kind == "v4l2":
            index = int(spec.target) if spec.target.isdigit() else spec.target
            cap = cv2.VideoCapture(index, cv2.CAP_V4L2)
            if cap.isOpened():
                # Ask for the configured size; the device picks the nearest it has.
                cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.req_width)
                cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.req_height)
                cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)
            return cap
        if spec.kind in ("rtsp", "http"):
            return cv2.VideoCapture(
                spec.target,
                cv2.CAP_FFMPEG,
                [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, ms],
            )
        if not Path(spec.target).is_file():
            raise SourceError(f"{spec.display}: no such file")
        return cv2.VideoCapture(spec.target)

    def open(self) -> None:
        cap = self._make_capture()
        if not cap.isOpened():
            cap.release()
            raise SourceError(f"{self.spec.display}: cannot open")
        ok, frame = cap.read()
        if not ok or frame is None:
            cap.release()
            raise SourceError(f"{self.spec.display}: opened but delivered no frame")
        self.backend = cap.getBackendName().lower()
        self.height, self.width = frame.shape[:2]
        fps = cap.get(cv2.CAP_PROP_FPS)
        self.fps = float(fps) if fps and 0 < fps <= 1000 else 0.0
        with self._lock:
            self._cap = cap
        self._next = time.monotonic()

    def read(self) -> np.ndarray | None:
        with self._lock:
            cap = self._cap
        if cap is None:
            raise SourceError("not open")
        if self.spec.kind == "file":
            now = time.monotonic()
            if self._next > now:
                time.sleep(self._next - now)
            period = 1.0 / (self.fps or 25.0)
            self._next = max(self._next + period, time.monotonic() - period)
        ok, frame = cap.read()
        if not ok and self.spec.kind == "file":
            cap.set(cv2.CAP_PROP_POS_FRAMES, 0)  # loop the clip
            ok, frame = cap.read()
        return frame if ok else None

    def close(self) -> None:
        with self._lock:
            cap, self._cap = self._cap, None
        if cap is not None:
            cap.release()


def open_source(
    spec: SourceSpec, width: int, height: int, *, timeout_s: float = 5.0, phase: float = 0.0
) -> FrameSource:
    """Open ``spec`` and read one frame; raises :class:`SourceError` when that fails."""
    source: FrameSource
    if spec.kind == "demo":
        source = DemoSource(spec, width, height, phase=phase)
    else:
        source = OpenCVSource(spec, width, height, timeout_s=timeout_s)
    source.open()
    return source
