"""Clips from recording segments: remuxed (no re-encoding) into one MP4.

Segments start on keyframes, so whole segments concatenate cleanly: the clip
covers the asked range rounded out to segment boundaries.  The result has its
index at the front (``faststart``) so a browser can play and seek it with HTTP
Range requests.  :class:`ClipCache` keeps recently assembled clips (bounded by
bytes) so the Range requests of one playback assemble the clip once.
"""

from __future__ import annotations

import io
import os
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Sequence
from fractions import Fraction
from typing import Any

import av

from shared.storage.media import MediaStore

MS = Fraction(1, 1000)


class ClipError(Exception):
    pass


def assemble_clip(media: MediaStore, segments: Sequence[dict[str, Any]]) -> bytes:
    """One MP4 of ``segments`` (dicts with ``key`` and ``start`` ms), in order.

    A segment missing from the media store (deleted by retention meanwhile) is
    skipped; a segment whose picture size differs from the first is skipped too."""
    # faststart rewrites the file in a second pass: it needs a real file.
    tmp = tempfile.NamedTemporaryFile(suffix=".mp4", delete=False)  # noqa: SIM115
    tmp.close()
    try:
        return _assemble(media, segments, tmp.name)
    finally:
        os.unlink(tmp.name)


def _assemble(media: MediaStore, segments: Sequence[dict[str, Any]], path: str) -> bytes:
    out = av.open(path, mode="w", format="mp4", options={"movflags": "+faststart"})
    ostream = None
    size = None
    t0 = None
    last_dts: int | None = None
    wrote = 0
    try:
        for seg in segments:
            try:
                data = media.get(seg["key"])
            except Exception:  # noqa: BLE001 - gone meanwhile: the clip has a hole
                continue
            with av.open(io.BytesIO(data)) as inp:
                if not inp.streams.video:
                    continue
                istream = inp.streams.video[0]
                cc = istream.codec_context
                if ostream is None:
                    ostream = out.add_stream_from_template(istream)
                    ostream.time_base = MS
                    size = (cc.width, cc.height)
                    t0 = int(seg["start"])
                elif (cc.width, cc.height) != size:
                    continue
                offset = int(seg["start"]) - t0
                for packet in inp.demux(istream):
                    if packet.dts is None:
                        continue
                    tb = packet.time_base
                    pts = (
                        int(round(packet.pts * tb * 1000)) + offset
                        if packet.pts is not None
                        else None
                    )
                    dts = int(round(packet.dts * tb * 1000)) + offset
                    if last_dts is not None and dts <= last_dts:
                        shift = last_dts + 1 - dts
                        dts += shift
                        pts = pts + shift if pts is not None else None
                    last_dts = dts
                    packet.pts, packet.dts = pts, dts
                    packet.time_base = MS
                    packet.stream = ostream
                    out.mux(packet)
                    wrote += 1
    finally:
        out.close()
    if not wrote:
        raise ClipError("no footage")
    with open(path, "rb") as f:
        return f.read()


class ClipCache:
    def __init__(self, max_bytes: int = 64 * 1024 * 1024) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[tuple, bytes] = OrderedDict()
        self._size = 0
        self._lock = threading.Lock()

    def get_or_build(self, media: MediaStore, segments: Sequence[dict[str, Any]]) -> bytes:
        key = tuple(s["key"] for s in segments)
        with self._lock:
            hit = self._items.get(key)
            if hit is not None:
                self._items.move_to_end(key)
                return hit
        data = assemble_clip(media, segments)
        with self._lock:
            if len(data) <= self.max_bytes and key not in self._items:
                self._items[key] = data
                self._size += len(data)
                while self._size > self.max_bytes:
                    _, old = self._items.popitem(last=False)
                    self._size -= len(old)
        return data
