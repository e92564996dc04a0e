"""Encoding frames into one H.264 MP4 segment in memory (PyAV / libx264).

Every segment is a complete MP4 whose first frame is a keyframe, so any segment
plays, seeks and concatenates on its own.  Timestamps follow capture times
(milliseconds), so a camera with a variable frame rate still plays in real time.
"""

from __future__ import annotations

import io
from fractions import Fraction

import av
import numpy as np

MS = Fraction(1, 1000)


class SegmentEncoder:
    def __init__(
        self, start_ms: int, width: int, height: int, *, fps: float, crf: int, preset: str
    ) -> None:
        self.start_ms = start_ms
        self.last_ms = start_ms
        self.width, self.height = width, height
        self.frames = 0
        self._buf = io.BytesIO()
        self._out = av.open(self._buf, mode="w", format="mp4")
        st = self._out.add_stream("libx264", rate=Fraction(round(fps * 1000), 1000))
        st.width, st.height, st.pix_fmt = width - width % 2, height - height % 2, "yuv420p"
        st.codec_context.time_base = MS
        # No B-frames: decode order = display order, so segments concatenate exactly.
        st.options = {
            "crf": str(crf),
            "preset": preset,
            "g": str(max(1, round(fps * 5))),  # a keyframe every 5 s (and at every segment start)
            "bf": "0",
        }
        self._stream = st

    def add(self, ts_ms: int, image: np.ndarray) -> None:
        """Encode one BGR frame captured at ``ts_ms`` (later than the previous one)."""
        if image.shape[1] != self.width or image.shape[0] != self.height:
            raise ValueError("frame size changed")
        if self.frames and ts_ms <= self.last_ms:
            return
        if image.shape[1] % 2 or image.shape[0] % 2:
            image = image[
                : image.shape[0] - image.shape[0] % 2, : image.shape[1] - image.shape[1] % 2
            ]
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="bgr24")
        frame.pts = ts_ms - self.start_ms
        frame.time_base = MS
        for packet in self._stream.encode(frame):
            self._out.mux(packet)
        self.last_ms = ts_ms
        self.frames += 1

    def finish(self, frame_ms: int) -> tuple[bytes, int]:
        """Flush and close; returns (mp4 bytes, end ms = last frame + one frame interval)."""
        for packet in self._stream.encode():
            self._out.mux(packet)
        self._out.close()
        return self._buf.getvalue(), self.last_ms + frame_ms

    def abort(self) -> None:
        try:
            self._out.close()
        except Exception:  # noqa: BLE001 - discarding a broken segment
            pass
