"""The faces worker: a :class:`shared.worker.Processor` that recognises gallery people.

Per frame of an owned camera (the runtime handles sharding, subscriptions, the
latest-frame buffer and round-robin):

1. **rate limit** – at most ``max_rate_per_camera`` analysed frames per second;
2. **person gate** – with ``gate_on_person`` only frames shortly after the detector
   reported a person on that camera (``latest:detections:<camera>``) are analysed;
3. detect, quality-gate and encode faces (:mod:`services.faces.engine`);
4. match against the gallery and publish one ``face`` record per accepted face to the
   ``faces`` stream;
5. publish a ``face_recognized`` event (with a frame snapshot) when a known person
   appears on a camera: again only after they were unseen there for ``debounce_s``.

Frames skipped by steps 1-2 and faces rejected by the quality gate are counted in
Prometheus and in the per-camera stats hash ``<prefix>faces_stats``.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
import uuid
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import cv2

from services.faces import metrics
from services.faces.config import FacesConfig
from services.faces.engine import FaceEngine, get_engine
from services.faces.gallery import Gallery
from shared.keys import STREAM_DETECTIONS, STREAM_FACES, Keys
from shared.logs import BurstLimiter
from shared.worker import Frame, Processor

if TYPE_CHECKING:
    from shared.worker import WorkerRuntime

log = logging.getLogger(__name__)

UNKNOWN = "unknown"


def stats_key(keys: Keys) -> str:
    """Hash camera_id -> JSON :class:`FaceCameraStats` written by the owning replica."""
    return keys.k("faces_stats")


@dataclass
class FaceCameraStats:
    frames_analysed: int = 0
    frames_gated: int = 0  # person gate closed: detection work saved
    frames_rate_limited: int = 0
    frames_invalid: int = 0
    faces_detected: int = 0
    faces_recognised: int = 0
    faces_unknown: int = 0
    faces_rejected: Counter = field(default_factory=Counter)
    events: int = 0
    detect_ms_total: float = 0.0
    encode_ms_total: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["faces_rejected"] = dict(self.faces_rejected)
        d["detect_ms_total"] = round(self.detect_ms_total, 1)
        d["encode_ms_total"] = round(self.encode_ms_total, 1)
        return d


class FacesProcessor(Processor):
    service = "faces"
    max_batch = 4  # dlib takes one image at a time; a batch is just a round-robin slice

    def __init__(self, config: FacesConfig, engine: FaceEngine | None = None) -> None:
        self.config = config
        self.snapshot_ttl_s = config.snapshot_ttl_s
        self.engine = engine
        self.runtime: WorkerRuntime | None = None
        self.gallery: Gallery | None = None
        self.stats: dict[str, FaceCameraStats] = {}
        self._last_analysed: dict[str, float] = {}  # camera -> monotonic time
        self._last_seen: dict[tuple[str, str], float] = {}  # (camera, name) -> capture s
        self._last_stats_write = 0.0
        self._owned_changed: frozenset[str] | None = None
        self._stats_lock = threading.Lock()
        self._burst = BurstLimiter()
        self._hint = BurstLimiter(600.0)

    # ------------------------------------------------------------- lifecycle
    def setup(self, runtime: WorkerRuntime) -> None:
        self.runtime = runtime
        if self.engine is None:
            self.engine = get_engine()
        self.gallery = Gallery(runtime.redis, runtime.keys, self.config)

    def on_cameras_changed(self, owned: frozenset[str]) -> None:
        # Called from the membership thread: the processing thread prunes its state.
        self._owned_changed = owned

    def _prune(self, owned: frozenset[str]) -> None:
        for cam in [c for c in self._last_analysed if c not in owned]:
            del self._last_analysed[cam]
        for key in [k for k in self._last_seen if k[0] not in owned]:
            del self._last_seen[key]
        with self._stats_lock:
            for cam in [c for c in self.stats if c not in owned]:
                del self.stats[cam]

    def camera_stats(self, camera_id: str) -> FaceCameraStats:
        st = self.stats.get(camera_id)
        if st is None:
            with self._stats_lock:
                st = self.stats.setdefault(camera_id, FaceCameraStats())
        return st

    # ------------------------------------------------------------ processing
    def process_batch(self, frames: list[Frame]) -> None:
        owned, self._owned_changed = self._owned_changed, None
        if owned is not None:
            self._prune(owned)
        for frame in frames:
            self.process_frame(frame)
        self._maybe_write_stats()

    def process_frame(self, frame: Frame) -> None:
        assert self.runtime is not None and self.engine is not None and self.gallery is not None
        cam = frame.camera_id
        st = self.camera_stats(cam)
        now = time.monotonic()
        rate = self.config.max_rate_per_camera
        last = self._last_analysed.get(cam)
        if rate > 0 and last is not None and now - last < 1.0 / rate:
            st.frames_rate_limited += 1
            metrics.FRAMES_GATED.labels(cam, "rate_limited").inc()
            return
        if self.config.gate_on_person and not self.person_recent(cam, frame.header.ts // 1_000_000):
            st.frames_gated += 1
            metrics.FRAMES_GATED.labels(cam, "no_person").inc()
            return
        bgr = frame.image()
        if bgr is None:
            st.frames_invalid += 1
            self.runtime.count_invalid("bad_jpeg", cam)
            return
        self._last_analysed[cam] = now
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        analysis = self.engine.analyze(rgb, self.config)
        st.frames_analysed += 1
        st.detect_ms_total += analysis.detect_ms
        st.encode_ms_total += analysis.encode_ms
        metrics.FRAMES_ANALYSED.labels(cam).inc()
        metrics.DETECT_SECONDS.observe(analysis.detect_ms / 1000)
        st.faces_detected += len(analysis.faces)
        metrics.FACES_DETECTED.labels(cam).inc(len(analysis.faces))
        for face in analysis.rejected:
            st.faces_rejected[face.reject_reason] += 1
            metrics.FACES_REJECTED.labels(cam, face.reject_reason).inc()
        accepted = [f for f in analysis.accepted if f.encoding is not None]
        if not accepted:
            return
        per_face_s = analysis.encode_ms / 1000 / len(accepted)
        for _ in accepted:
            metrics.ENCODE_SECONDS.observe(per_face_s)
        matches = self.gallery.match([f.encoding for f in accepted])
        h, w = rgb.shape[:2]
        ts_ms = frame.header.ts // 1_000_000
        for face, (name, distance) in zip(accepted, matches, strict=True):
            box = face.normalised_box(w, h)
            record = {
                "type": "face",
                "camera_id": cam,
                "ts": ts_ms,
                "name": name or UNKNOWN,
                "distance": round(distance, 4) if math.isfinite(distance) else None,
                "box": box,
                "size_px": face.size_px,
                "sharpness": face.sharpness,
                "score": face.score,
            }
            self.runtime.publish_result(STREAM_FACES, record)
            if name is None:
                st.faces_unknown += 1
                metrics.FACES_UNKNOWN.labels(cam).inc()
                continue
            st.faces_recognised += 1
            metrics.FACES_RECOGNISED.labels(cam).inc()
            seen_s = frame.capture_time
            if self._appeared(cam, name, seen_s):
                self._publish_event(frame, name, distance, box)
                st.events += 1
            # Only now (the event is written or queued by the runtime): a publish that
            # raised leaves the debounce untouched, so the next sighting announces again.
            self._mark_seen(cam, name, seen_s)

    def person_recent(self, camera_id: str, frame_ts_ms: int) -> bool:
        """True when the detector's latest record for the camera shows a gate class
        no more than ``person_recent_s`` before the frame was captured."""
        assert self.runtime is not None
        raw = self.runtime.redis.get(self.runtime.keys.latest(STREAM_DETECTIONS, camera_id))
        if raw is None:
            ok, _ = self._hint.should_log(camera_id)
            if ok:
                log.info(
                    "no detector record for this camera yet: faces are not looked for until "
                    "the detector reports a person (faces.gate_on_person=false disables the gate)",
                    extra={"camera_id": camera_id},
                )
            return False
        try:
            record = json.loads(raw)
            det_ts = record["ts"]
            objects = record.get("objects") or []
            if isinstance(det_ts, bool) or not isinstance(det_ts, (int, float)):
                raise TypeError("ts")
            if not isinstance(objects, list):
                raise TypeError("objects")
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            ok, suppressed = self._burst.should_log("bad_detection_record")
            if ok:
                log.warning(
                    "unreadable detector record; gate stays closed",
                    extra={"camera_id": camera_id, "error": repr(exc), "suppressed": suppressed},
                )
            return False
        if frame_ts_ms - det_ts > self.config.person_recent_s * 1000:
            return False
        classes = self.config.gate_classes
        return any(isinstance(o, dict) and o.get("class") in classes for o in objects)

    def _appeared(self, camera_id: str, name: str, seen_s: float) -> bool:
        """Debounce: True when ``name`` was not seen on the camera for ``debounce_s``."""
        last = self._last_seen.get((camera_id, name))
        return last is None or seen_s - last > self.config.debounce_s

    def _mark_seen(self, camera_id: str, name: str, seen_s: float) -> None:
        key = (camera_id, name)
        last = self._last_seen.get(key)
        self._last_seen[key] = seen_s if last is None else max(last, seen_s)

    def _publish_event(self, frame: Frame, name: str, distance: float, box: list[float]) -> None:
        assert self.runtime is not None
        event_id = uuid.uuid4().hex
        event = {
            "type": "face_recognized",
            "event_id": event_id,
            "camera_id": frame.camera_id,
            "ts": frame.header.ts // 1_000_000,
            "name": name,
            "distance": round(distance, 4),
            "box": box,
            "snapshot_id": f"face-{event_id}",
        }
        self.runtime.publish_event(event, snapshot=frame.jpeg)
        metrics.EVENTS.labels(frame.camera_id).inc()
        log.info(
            "face recognised",
            extra={"camera_id": frame.camera_id, "person": name, "distance": event["distance"]},
        )

    def _maybe_write_stats(self) -> None:
        assert self.runtime is not None
        now = time.monotonic()
        if now - self._last_stats_write < self.config.stats_interval_s:
            return
        self._last_stats_write = now
        owned = self.runtime.owned
        with self._stats_lock:
            items = [(cam, st) for cam, st in self.stats.items() if cam in owned]
        mapping = {
            cam: json.dumps({**st.as_dict(), "replica": self.runtime.replica_id})
            for cam, st in items
        }
        if mapping:
            self.runtime.redis.hset(stats_key(self.runtime.keys), mapping=mapping)

    def stats_snapshot(self) -> dict[str, dict[str, Any]]:
        with self._stats_lock:
            items = list(self.stats.items())
        return {cam: st.as_dict() for cam, st in items}
