"""Recorder fixtures: demo-scene frames (real photos, moving virtual camera)."""

from __future__ import annotations

import av
import pytest

from edge_agent.demo import DemoScene
from tests.helpers import encode_jpeg

FPS = 15


@pytest.fixture(scope="session")
def demo_jpegs() -> list[bytes]:
    """6 s of the 'bus' demo scene at 15 fps, JPEG as agents send it (reused in a loop)."""
    scene = DemoScene("bus", 640, 480)
    return [encode_jpeg(scene.render(i / FPS), 80) for i in range(FPS * 6)]


def frames(demo_jpegs, t0_ms: int, seconds: float):
    """(capture ms, jpeg) at 15 fps for ``seconds`` from ``t0_ms``."""
    n = int(seconds * FPS)
    for i in range(n):
        yield t0_ms + round(i * 1000 / FPS), demo_jpegs[i % len(demo_jpegs)]


def probe(data: bytes) -> dict:
    """Decode an MP4 completely with PyAV: codec, duration, frames, first keyframe."""
    import io

    with av.open(io.BytesIO(data)) as c:
        vs = c.streams.video[0]
        codec = vs.codec_context.name
        decoded = [f for f in c.decode(video=0)]
    times = [f.time for f in decoded]
    return {
        "codec": codec,
        "frames": len(decoded),
        "duration": (times[-1] - times[0]) + 1 / FPS if times else 0.0,
        "first_key": decoded[0].key_frame if decoded else False,
        "size": (decoded[0].width, decoded[0].height) if decoded else None,
    }
