"""The frame path: PULL -> validate -> authorise -> PUB, on the io thread.

Nothing here touches Redis: the session table (in memory) decides whether a
camera may send, and per-camera statistics are kept in memory and flushed by the
housekeeping thread.  The JPEG is forwarded without copying.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

import msgpack
import zmq

from services.ingest import metrics as m
from shared.protocol import (
    ProtocolError,
    check_jpeg,
    clamp_motion,
    encode_fanout,
    parse_header,
)

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
        self._packer = msgpack.Packer(use_bin_type=True)  # io thread only

    def drain(self, pull: zmq.Socket, pub: zmq.Socket) -> None:
        for _ in range(FRAME_BATCH):
            try:
                parts = pull.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            self.on_frame(parts, pub)

    def on_frame(self, parts: list[zmq.Frame], pub: zmq.Socket) -> None:
        """Validate, authorise, stamp and forward one frame.

        Order matters: the cheap header parse and the session/key check come before
        anything that walks the JPEG, so an unauthorised peer costs a dict lookup.
        """
        srv = self.srv
        rx = time.time_ns()
        views = [p.buffer for p in parts]
        if len(views) != 2:
            self._invalid("bad_multipart", f"{len(views)} parts")
            return
        try:
            header = parse_header(views[0])
        except ProtocolError as exc:
            self._invalid(exc.reason, exc.detail)
            return
        cam = header.camera_id
        if not srv.sessions.camera_registered(cam):
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
        if srv.secure:
            # Only the key that registered this client may send its frames.
            session = srv.sessions.by_client(header.client_id)
            if session is None or session.key != parts[0].get("User-Id"):
                self._invalid("key_mismatch", cam, camera_id=cam)
                return
        jpeg = views[1]
        try:  # authorised: now the size check and the JPEG marker walk
            check_jpeg(header, jpeg, srv.cfg.max_frame_bytes)
        except ProtocolError as exc:
            self._invalid(exc.reason, exc.detail, camera_id=cam)
            srv.stats.drop(cam)
            return
        srv.clocks.observe(header.client_id, rx, header.ts)
        motion, clamped = clamp_motion(header.motion)
        if clamped:  # a broken agent: its frames still flow, with a sane score
            m.MOTION_CLAMPED.inc()
            srv.count("motion_clamped")
        # The header gains the receive time; the JPEG frame is forwarded as is
        # (zmq shares its buffer, no copy).
        stamped_header = header.to_dict()
        stamped_header["rx"] = rx
        if clamped:
            stamped_header["motion"] = motion
        stamped = self._packer.pack(stamped_header)
        pub.send_multipart(encode_fanout(cam, stamped, parts[1]), copy=False)  # type: ignore[arg-type]
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

    def _invalid(self, reason: str, detail: str, **ctx: str) -> None:
        m.FRAMES_DROPPED.labels("invalid").inc()
        self.srv.reject("frame", reason, detail, **ctx)
