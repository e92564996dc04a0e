"""The recorder's :class:`~shared.worker.Processor`: per camera, frames → segments.

Frames come from the shared runtime (this replica's cameras, latest frame each).
Each camera has a :class:`CameraRecorder`; finished segments go to an
:class:`Uploader` thread that writes them to the media store and indexes them in
the event store, so storage is never on the frame path.  A full disk (ENOSPC), an
S3 or database outage drops the segment, counts it, records a gap, and recording
goes on.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np
from prometheus_client import Counter, Gauge
from sqlalchemy.exc import SQLAlchemyError

from services.recorder.config import RecorderConfig
from services.recorder.segments import SegmentEncoder
from services.recorder.triggers import EventTriggers
from shared.keys import STREAM_EVENTS
from shared.logs import BurstLimiter
from shared.storage import MediaError, MediaFull, MediaStore, segment_key
from shared.streams import StreamFollower
from shared.worker import Frame, Processor

if TYPE_CHECKING:
    from shared.eventstore import EventStore
    from shared.worker import WorkerRuntime

log = logging.getLogger(__name__)

SEGMENTS = Counter(
    "sentri_recorder_segments_total", "Segments finished, by result.", ["camera_id", "result"]
)
SEGMENT_BYTES = Counter("sentri_recorder_bytes_total", "Bytes of stored segments.", ["camera_id"])
RECORDING = Gauge("sentri_recorder_recording", "1 while a camera is being recorded.", ["camera_id"])
QUEUED = Gauge("sentri_recorder_upload_queue", "Finished segments waiting to be stored.")


@dataclass
class FinishedSegment:
    camera_id: str
    start_ms: int
    end_ms: int
    data: bytes
    frames: int
    mode: str
    event: bool


class CameraRecorder:
    """One camera's recording state: pre-roll ring, open segment, mode."""

    def __init__(self, camera_id: str, config: RecorderConfig) -> None:
        self.camera_id = camera_id
        self.config = config
        self.ring: deque[tuple[int, bytes]] = deque()
        self.encoder: SegmentEncoder | None = None
        self.event_in_segment = False
        self.last_ts = 0

    @property
    def frame_ms(self) -> int:
        return max(1, round(1000 / self.config.fps))

    def feed(self, ts_ms: int, jpeg: bytes, recording: bool, event_start: int | None,
             mode: str) -> list[FinishedSegment]:  # fmt: skip
        out: list[FinishedSegment] = []
        if ts_ms <= self.last_ts:
            return out  # older than what we hold: order is kept
        self.last_ts = ts_ms
        if mode == "off":
            self.ring.clear()
            return self.close()
        if mode == "events" and not recording:
            out += self.close()
            self.ring.append((ts_ms, jpeg))
            horizon = ts_ms - int((self.config.pre_roll_s + 3.0) * 1000)
            while self.ring and self.ring[0][0] < horizon:
                self.ring.popleft()
            return out
        if recording:
            self.event_in_segment = True
        pending: list[tuple[int, bytes]] = []
        if self.encoder is None and self.ring:
            # Pre-roll: from the event's start minus pre_roll_s (what the ring holds).
            since = (event_start or ts_ms) - int(self.config.pre_roll_s * 1000)
            pending = [(t, j) for t, j in self.ring if t >= since]
            self.ring.clear()
        pending.append((ts_ms, jpeg))
        for t, j in pending:
            out += self._encode(t, j, mode)
        return out

    def _encode(self, ts_ms: int, jpeg: bytes, mode: str) -> list[FinishedSegment]:
        img = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
        if img is None:
            return []
        out: list[FinishedSegment] = []
        h, w = img.shape[:2]
        enc = self.encoder
        if enc is not None and (
            ts_ms - enc.start_ms >= self.config.segment_s * 1000
            or (enc.width, enc.height) != (w, h)
        ):
            out += self.close(mode)
            enc = None
        if enc is None:
            enc = self.encoder = SegmentEncoder(
                ts_ms, w, h, fps=self.config.fps, crf=self.config.crf, preset=self.config.preset
            )
        enc.add(ts_ms, img)
        return out

    def close(self, mode: str | None = None) -> list[FinishedSegment]:
        enc, self.encoder = self.encoder, None
        if enc is None:
            return []
        event = self.event_in_segment or mode == "events"
        self.event_in_segment = False
        if enc.frames == 0:
            enc.abort()
            return []
        data, end = enc.finish(self.frame_ms)
        return [FinishedSegment(self.camera_id, enc.start_ms, end, data, enc.frames,
                                mode or self.config.mode_of(self.camera_id), event)]  # fmt: skip


class Uploader(threading.Thread):
    """Stores finished segments (media store, then the index) off the frame path."""

    def __init__(self, media: MediaStore, open_store: Callable[[], EventStore],
                 config: RecorderConfig) -> None:  # fmt: skip
        super().__init__(name="recorder-upload", daemon=True)
        self.media, self.open_store, self.config = media, open_store, config
        self.q: queue.Queue[FinishedSegment | None] = queue.Queue(config.upload_queue)
        self.store: EventStore | None = None
        self._burst = BurstLimiter()
        self.last_end: dict[str, int] = {}
        self.unindexed: deque[tuple[str, Any]] = deque(maxlen=10_000)
        self.stored = 0
        self.dropped = 0
        self.idle = threading.Event()
        self.idle.set()

    def submit(self, seg: FinishedSegment) -> None:
        try:
            self.idle.clear()
            self.q.put_nowait(seg)
        except queue.Full:
            self._drop(seg, "queue_full")
        QUEUED.set(self.q.qsize())

    def _drop(self, seg: FinishedSegment, why: str) -> None:
        self.dropped += 1
        SEGMENTS.labels(seg.camera_id, f"dropped_{why}").inc()
        self._warn(why, "segment dropped", camera_id=seg.camera_id, reason=why)
        self.unindexed.append(("gap", (seg.camera_id, seg.start_ms, seg.end_ms, f"dropped_{why}")))

    def run(self) -> None:
        while True:
            seg = self.q.get()
            if seg is None:
                self.idle.set()
                return
            try:
                self._store(seg)
            except Exception:  # noqa: BLE001 - one bad segment never stops recording
                log.exception("segment store failed", extra={"camera_id": seg.camera_id})
            QUEUED.set(self.q.qsize())
            if self.q.empty():
                self.idle.set()

    def _store(self, seg: FinishedSegment) -> None:
        key = segment_key(seg.camera_id, seg.start_ms, seg.end_ms)
        try:
            self.media.put(key, seg.data, "video/mp4")
        except MediaFull:
            self._drop(seg, "no_space")
            self._index()
            return
        except MediaError:
            self._drop(seg, "media_unavailable")
            return
        SEGMENTS.labels(seg.camera_id, "stored").inc()
        SEGMENT_BYTES.labels(seg.camera_id).inc(len(seg.data))
        self.stored += 1
        prev = self.last_end.get(seg.camera_id)
        reason = "no_frames"
        if prev is None and seg.mode == "continuous":
            # First segment of this camera here: it moved from another replica, or we
            # restarted.  The index knows where the previous footage ended.
            prev, reason = self._indexed_end(seg.camera_id, seg.start_ms), "handover_or_restart"
        if (
            seg.mode == "continuous"
            and prev is not None
            and seg.start_ms - prev > self.config.gap_s * 1000
        ):
            self.unindexed.append(("gap", (seg.camera_id, prev, seg.start_ms, reason)))
        self.last_end[seg.camera_id] = seg.end_ms
        self.unindexed.append(("segment", (seg.camera_id, seg.start_ms, seg.end_ms, key,
                                           len(seg.data), seg.frames, seg.mode, seg.event)))  # fmt: skip
        self._index()

    def _indexed_end(self, camera_id: str, before_ms: int) -> int | None:
        """End of the camera's newest indexed segment in the 6 h before ``before_ms``."""
        try:
            if self.store is None:
                self.store = self.open_store()
            segs = self.store.segments(camera_id, before_ms - 6 * 3_600_000, before_ms)
        except (SQLAlchemyError, OSError):
            return None
        ends = [s["end"] for s in segs if s["end"] <= before_ms]
        return max(ends) if ends else None

    def _index(self) -> None:
        """Write pending index rows; kept (bounded) while the database is down."""
        try:
            if self.store is None:
                self.store = self.open_store()
            while self.unindexed:
                kind, args = self.unindexed[0]
                if kind == "segment":
                    self.store.add_segment(*args)
                else:
                    self.store.add_gap(*args)
                self.unindexed.popleft()
        except (SQLAlchemyError, OSError) as exc:
            self._warn("db", "event store unavailable; segment index held", error=str(exc)[:200],
                       held=len(self.unindexed))  # fmt: skip

    def _warn(self, key: str, msg: str, **extra: Any) -> None:
        ok, suppressed = self._burst.should_log(key)
        if ok:
            log.warning(msg, extra={**extra, "suppressed": suppressed})

    def stop(self, timeout: float = 30.0) -> None:
        try:
            self.q.put(None, timeout=timeout)
        except queue.Full:
            pass
        self.join(timeout)
        if self.store is not None:
            self.store.close()


class RecorderProcessor(Processor):
    service = "recorder"
    max_batch = 8

    def __init__(self, config: RecorderConfig, media: MediaStore,
                 open_store: Callable[[], EventStore]) -> None:  # fmt: skip
        self.config = config
        self.triggers = EventTriggers(
            int(config.post_roll_s * 1000), int(config.max_event_s * 1000)
        )
        self.uploader = Uploader(media, open_store, config)
        self.cameras: dict[str, CameraRecorder] = {}
        self.runtime: WorkerRuntime | None = None
        self.follower: StreamFollower | None = None
        self._follow: threading.Thread | None = None
        self._burst = BurstLimiter()
        self._lock = threading.Lock()  # the process and membership threads both close segments

    def setup(self, runtime: WorkerRuntime) -> None:
        self.runtime = runtime
        self.uploader.start()
        # Every replica follows all events (no group) and keeps its own cameras' state.
        self.follower = StreamFollower(
            runtime.redis, {"events": runtime.keys.stream(STREAM_EVENTS)}, count=500, block_ms=500
        )
        self._follow = threading.Thread(
            target=self.follower.run,
            args=(lambda entry: self.triggers.apply(entry.record()), runtime.stop_event),
            name="recorder-events",
            daemon=True,
        )
        self._follow.start()

    def process_batch(self, frames: list[Frame]) -> None:
        for f in frames:
            self.feed(f.camera_id, f.header.ts // 1_000_000, f.jpeg)

    def feed(self, camera_id: str, ts_ms: int, jpeg: bytes) -> None:
        rec = self.cameras.get(camera_id)
        if rec is None:
            rec = self.cameras[camera_id] = CameraRecorder(camera_id, self.config)
        mode = self.config.mode_of(camera_id)
        on, start = self.triggers.recording(camera_id, ts_ms)
        try:
            with self._lock:
                done = rec.feed(ts_ms, jpeg, on, start, mode)
        except (ValueError, OSError) as exc:
            ok, _ = self._burst.should_log("encode")
            if ok:
                log.warning("encode failed", extra={"camera_id": camera_id, "error": str(exc)})
            rec.encoder = None
            return
        RECORDING.labels(camera_id).set(1 if rec.encoder is not None else 0)
        for seg in done:
            self.uploader.submit(seg)

    def flush(self, camera_id: str | None = None) -> None:
        with self._lock:
            for cam, rec in list(self.cameras.items()):
                if camera_id is None or cam == camera_id:
                    for seg in rec.close(self.config.mode_of(cam)):
                        self.uploader.submit(seg)

    def on_cameras_changed(self, owned: frozenset[str]) -> None:
        # A camera that moved away: its open segment is stored now (at most one
        # segment's worth is lost on a hard kill).  Runs on the membership thread,
        # so only cameras we no longer own are touched.
        with self._lock:
            for cam in [c for c in self.cameras if c not in owned]:
                rec = self.cameras.pop(cam)
                for seg in rec.close(self.config.mode_of(cam)):
                    self.uploader.submit(seg)
                RECORDING.labels(cam).set(0)
        self.triggers.forget(owned)

    def close(self) -> None:
        if self._follow is not None:
            self._follow.join(3)  # the runtime set stop_event; it closes Redis after us
        self.flush()
        self.uploader.stop()


def wait_idle(processor: RecorderProcessor, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if processor.uploader.q.empty() and processor.uploader.idle.is_set():
            return True
        time.sleep(0.05)
    return False
