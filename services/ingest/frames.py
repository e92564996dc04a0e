"""The frame path: PULL -> validate -> authorise -> PUB, on the io thread.

Nothing here touches Redis: the session table (in memory) decides whether a
camera may send, and per-camera statistics are kept in memory and flushed by the
housekeeping thread.  The JPEG is forwarded without copying.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import zmq

from services.ingest import metrics as m
from shared.protocol import ProtocolError, decode_frame, encode_fanout, parse_header

if TYPE_CHECKING:
    from services.ingest.server import IngestServer

log = logging.getLogger(__name__)

#: Frames handled per poll wake-up before control and commands get a turn.
FRAME_BATCH = 256


class FramePath:
    """Validates and forwards agent frames; owned by the io thread."""

    def __init__(self, server: IngestServer) -> None:
        self.srv = server
        self._cam_metrics: dict[str, tuple[Any, Any, Any]] = {}

    def drain(self, pull: zmq.Socket, pub: zmq.Socket) -> None:
        for _ in range(FRAME_BATCH):
            try:
                parts = pull.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            self.on_frame(parts, pub)

    def on_frame(self, parts: list[zmq.Frame], pub: zmq.Socket) -> None:
        srv = self.srv
        views = [p.buffer for p in parts]
        try:
            header, jpeg = decode_frame(views, srv.cfg.max_frame_bytes)
        except ProtocolError as exc:
            m.FRAMES_DROPPED.labels("invalid").inc()
            srv.reject("frame", exc.reason, exc.detail)
            self._attribute_drop(views)
            return
        cam = header.camera_id
        registered = srv.sessions.camera_registered(cam)
        if registered and srv.secure:
            # Only the key that registered this client may send its frames.
            session = srv.sessions.by_client(header.client_id)
            if session is None or session.key != parts[0].get("User-Id"):
                m.FRAMES_DROPPED.labels("invalid").inc()
                srv.reject("frame", "key_mismatch", cam)
                return
        if not registered:
            m.FRAMES_DROPPED.labels("unregistered").inc()
            srv.count("unregistered")
            ok, suppressed = srv.burst.should_log("unregistered")  # fixed key: bounded
            if ok:
                log.warning(
                    "dropping frames of an unregistered camera",
                    extra={"camera_id": cam, "client_id": header.client_id,
                           "suppressed": suppressed},
                )  # fmt: skip
            return
        # Forward the original header and JPEG frames: zmq shares the buffers.
        pub.send_multipart(encode_fanout(cam, parts[0], parts[1]), copy=False)  # type: ignore[arg-type]
        nbytes = len(jpeg)
        cm = self._cam_metrics.get(cam)
        if cm is None:
            cm = self._cam_metrics[cam] = (
                m.FRAMES_IN.labels(cam),
                m.BYTES_IN.labels(cam),
                m.FRAMES_OUT.labels(cam),
            )
        cm[0].inc()
        cm[1].inc(nbytes)
        cm[2].inc()
        srv.stats.frame(cam, nbytes, header.seq)
        with srv.lock:
            srv.counters["frames_in"] += 1
            srv.counters["frames_out"] += 1
            srv.counters["bytes_in"] += nbytes

    def _attribute_drop(self, views: list[memoryview]) -> None:
        """Charge an invalid frame to its camera when the header itself is fine."""
        if len(views) != 2:
            return
        try:
            header = parse_header(views[0])
        except ProtocolError:
            return
        if self.srv.sessions.camera_registered(header.camera_id):
            self.srv.stats.drop(header.camera_id)
