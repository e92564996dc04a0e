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
Prometheus and in the runtime's per-camera statistics (``WorkerRuntime.count``:
``counters`` of ``worker_stats:faces``), like every worker's.
"""

from __future__ import annotations

import json
import logging
import math
import time
import uuid
from typing import TYPE_CHECKING

import cv2

from services.faces import metrics
from services.faces.config import FacesConfig
from services.faces.engine import FaceEngine, get_engine
from services.faces.gallery import Gallery
from shared.keys import STREAM_DETECTIONS, STREAM_FACES
from shared.logs import BurstLimiter
from shared.worker import Frame, Processor

if TYPE_CHECKING:
    from shared.worker import WorkerRuntime

log = logging.getLogger(__name__)

UNKNOWN = "unknown"


class FacesProcessor(Processor):
    service = "faces"
    max_batch = 4  # dlib takes one image at a time; a batch is just a round-robin slice

    def __init__(self, config: FacesConfig, engine: FaceEngine | None = None) -> None:
        self.config = config
        self.snapshot_ttl_s = config.snapshot_ttl_s
        self.engine = engine
        self.runtime: WorkerRuntime | None = None
        self.gallery: Gallery | None = None
        self._last_analysed: dict[str, float] = {}  # camera -> monotonic time
        self._last_seen: dict[tuple[str, str], float] = {}  # (camera, name) -> capture s
        self._owned_changed: frozenset[str] | None = None
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

    # ------------------------------------------------------------ processing
    def process_batch(self, frames: list[Frame]) -> None:
        owned, self._owned_changed = self._owned_changed, None
        if owned is not None:
            self._prune(owned)
        for frame in frames:
            self.process_frame(frame)

    def process_frame(self, frame: Frame) -> None:
        assert self.runtime is not None and self.engine is not None and self.gallery is not None
        cam = frame.camera_id
        count = self.runtime.count
        now = time.monotonic()
        rate = self.config.max_rate_per_camera
        last = self._last_analysed.get(cam)
        if rate > 0 and last is not None and now - last < 1.0 / rate:
            count(cam, "frames_rate_limited")
            metrics.FRAMES_GATED.labels(cam, "rate_limited").inc()
            return
        if self.config.gate_on_person and not self.person_recent(cam, frame.ts_ms):
            count(cam, "frames_gated")  # person gate closed: detection work saved
            metrics.FRAMES_GATED.labels(cam, "no_person").inc()
            return
        bgr = frame.image()  # capped, checked and counted by the runtime
        if bgr is None:
            count(cam, "frames_invalid")
            return
        self._last_analysed[cam] = now
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        analysis = self.engine.analyze(rgb, self.config)
        count(cam, "frames_analysed")
        count(cam, "detect_ms_total", round(analysis.detect_ms, 1))
        count(cam, "encode_ms_total", round(analysis.encode_ms, 1))
        metrics.FRAMES_ANALYSED.labels(cam).inc()
        metrics.DETECT_SECONDS.observe(analysis.detect_ms / 1000)
        count(cam, "faces_detected", len(analysis.faces))
        metrics.FACES_DETECTED.labels(cam).inc(len(analysis.faces))
        for face in analysis.rejected:
            count(cam, f"faces_rejected:{face.reject_reason}")
            metrics.FACES_REJECTED.labels(cam, face.reject_reason).inc()
        accepted = [f for f in analysis.accepted if f.encoding is not None]
        if not accepted:
            return
        per_face_s = analysis.encode_ms / 1000 / len(accepted)
        for _ in accepted:
            metrics.ENCODE_SECONDS.observe(per_face_s)
        matches = self.gallery.match([f.encoding for f in accepted])
        h, w = rgb.shape[:2]
        ts_ms = frame.ts_ms
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
                count(cam, "faces_unknown")
                metrics.FACES_UNKNOWN.labels(cam).inc()
                continue
            count(cam, "faces_recognised")
            metrics.FACES_RECOGNISED.labels(cam).inc()
            seen_s = frame.rx_time  # the cluster's clock: an agent's cannot steer it
            if self._appeared(cam, name, seen_s):
                self._publish_event(frame, name, distance, box)
                count(cam, "events")
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
            "ts": frame.ts_ms,
            "capture_ts": frame.capture_ts_ms,
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
