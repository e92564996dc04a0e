"""The detector's :class:`~shared.worker.Processor`: batch inference, tracking, records.

The worker runtime (``shared.worker``) owns sharding, subscriptions, the latest-frame
buffer and round-robin batching; this module only turns a batch of frames into
``detections`` records and ``events`` (see :mod:`services.detector.records`).
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import redis

from services.detector import metrics
from services.detector.backends import Backend, create_backend
from services.detector.config import DetectorConfig
from services.detector.detections import Detections, box_iou
from services.detector.models import resolve_model
from services.detector.records import detection_record, event_record
from services.detector.regions import Region, merge_detections, plan_regions
from services.detector.scheduling import Decision, MotionScheduler
from services.detector.tracking import CameraTracker, TrackEvent, TrackState
from shared.keys import STREAM_DETECTIONS
from shared.publishing import SnapshotSink
from shared.rules import RulesRuntime
from shared.worker import Frame, Processor, WorkerRuntime

log = logging.getLogger(__name__)

SERVICE = "detector"
#: A stationary track whose last box lies at least this much inside a crop is left to
#: the model; otherwise it is carried (the crops did not look at it).
CARRY_COVERED = 0.9
#: ... or that a detection of the frame overlaps this much (IoU).
CARRY_IOU = 0.3


def load_backend(config: DetectorConfig, state_dir: str | Path) -> Backend:
    """Resolve the weights, load the configured backend and warm it up (logged)."""
    t0 = time.monotonic()
    log.info(
        "loading model %s",
        config.model,
        extra={"model": config.model, "backend": config.backend.type, "device": config.device},
    )
    model = resolve_model(config.model, state_dir)
    backend = create_backend(config, model, Path(state_dir))
    try:
        backend.load()
        backend.warmup()
    except Exception as exc:
        cached = backend.cached_export
        if cached is None or not cached.exists():
            raise
        # A cached export that does not load (truncated by a crash or a full disk)
        # must not crash-loop the detector: throw it away and export again, once.
        log.warning(
            "cached model export is corrupt; deleting it and exporting again",
            extra={"path": str(cached), "error": str(exc)[:300]},
        )
        with contextlib.suppress(Exception):  # half loaded: release what it holds
            backend.close()
        shutil.rmtree(cached) if cached.is_dir() else cached.unlink()
        backend = create_backend(config, model, Path(state_dir))
        backend.load()
        backend.warmup()
    took = time.monotonic() - t0
    metrics.MODEL_LOAD_SECONDS.set(took)
    log.info(
        "model ready in %.1f s, backend=%s",
        took,
        backend.type_name,
        extra={
            "model": model.label,
            "path": str(model.path),
            "fallback": model.fallback,
            "classes": len(backend.names),
            "threads": config.resolved_threads(),
        },
    )
    return backend


@dataclass(slots=True)
class _Job:
    """One frame the model runs on: full frame (``regions`` None) or crops."""

    frame: Frame
    image: np.ndarray
    t: float  # the frame clock (scheduling.frame_clock)
    regions: list[Region] | None
    #: Stationary tracks the crops were not aimed at (carried if no crop covers them).
    stationary: list[TrackState] = field(default_factory=list)
    det: Detections = field(default_factory=Detections.empty)


class DetectorProcessor(Processor):
    """YOLO detection + per-camera tracking on this replica's cameras."""

    service = SERVICE

    def __init__(
        self,
        config: DetectorConfig,
        state_dir: str | Path,
        *,
        backend: Backend | None = None,
    ) -> None:
        self.config = config
        self.state_dir = Path(state_dir)
        self.backend = backend
        self._own_backend = backend is None
        self.max_batch = config.max_batch or 64  # narrowed in setup() once the backend is known
        self.trackers: dict[str, CameraTracker] = {}
        self.snapshot_ttl_s = config.snapshot_ttl_s
        self.max_pixels = config.max_pixels
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._sweeper: threading.Thread | None = None
        self.runtime: WorkerRuntime | None = None
        self.rules: RulesRuntime | None = None  # zones/lines (shared.rules), set in setup()
        # Run the model below the report threshold so ByteTrack's second association
        # can keep tracks alive through weak detections; report only confident ones.
        self.infer_conf = min(config.confidence, config.tracker.low_thresh)
        self.scheduler = MotionScheduler(config)
        #: Frame clock of each camera's last full-frame detection (stationary re-check).
        self._last_full: dict[str, float] = {}

    # ------------------------------------------------------------------ lifecycle
    def setup(self, runtime: WorkerRuntime) -> None:
        self.runtime = runtime
        self.rules = RulesRuntime(runtime.redis, runtime.keys, runtime.publish_event)
        if self.backend is None:
            self.backend = load_backend(self.config, self.state_dir)
        self.labels = self.backend.label_map
        self.allowed = self.labels.allowed_raw_ids(self.config.classes)
        unknown = set(self.config.classes) - self.labels.names
        if unknown:
            log.warning(
                "configured classes unknown to the model are ignored",
                extra={"unknown": ",".join(sorted(unknown)), "model": self.backend.model.label},
            )
        # Import the tracker now, not on the first frame (it pulls in ultralytics).
        from ultralytics.trackers.byte_tracker import BYTETracker  # noqa: F401

        wanted = self.config.max_batch or self.backend.preferred_batch
        self.max_batch = max(1, min(wanted, self.backend.max_batch))
        runtime.batch_size = max(1, min(runtime.config.max_batch, self.max_batch))
        self._sweeper = threading.Thread(
            target=self._sweep_loop, name="detector-sweep", daemon=True
        )
        self._sweeper.start()

    def close(self) -> None:
        self._stop.set()
        if self._sweeper is not None:
            self._sweeper.join(5)
        with self._lock:
            for cam in list(self.trackers):
                self._drop_camera(cam, "shutdown")
        if self._own_backend and self.backend is not None:
            self.backend.close()

    def on_cameras_changed(self, owned: frozenset[str]) -> None:
        with self._lock:
            gone = [c for c in self.trackers if c not in owned]
            if not gone:
                return
            disabled = self._disabled(gone)
            for cam in gone:
                self._drop_camera(cam, "disabled" if cam in disabled else "handover")

    # ------------------------------------------------------------------ frames
    def process_batch(self, frames: list[Frame]) -> list[Frame]:
        """Detect on the frames that need it; returns the frames passed over as static.

        The runtime counts returned frames as ``skipped_static``, not as processed.
        """
        runtime, backend = self.runtime, self.backend
        assert runtime is not None and backend is not None, "setup() not called"
        owned = runtime.owned
        cfg = self.config
        passed: list[Frame] = []
        jobs: list[_Job] = []
        with self._lock:
            for f in frames:
                if f.camera_id not in owned:
                    continue  # in flight while the camera moved away
                if f.dimensions() is None:
                    continue  # refused before any decode, counted by the runtime
                tracker = self._tracker(f.camera_id)
                tracker.note_frame()
                t = f.rx_time
                decision = self.scheduler.decide(
                    f, tracks_unsettled=tracker.unsettled(t, cfg.motion_hold_s), t=t
                )
                if not decision.detect:
                    passed.append(f)
                    metrics.FRAMES_SKIPPED_STATIC.labels(f.camera_id).inc()
                    continue
                metrics.DETECT_DECISIONS.labels(decision.reason).inc()
                img = f.image()  # capped, checked and counted by the runtime
                if img is None:
                    continue
                jobs.append(self._job(f, img, t, decision, tracker))
        if not jobs:
            return passed
        t0 = time.perf_counter()
        self._infer(backend, jobs)
        took = time.perf_counter() - t0
        metrics.INFERENCE_SECONDS.labels(backend.type_name).observe(took)
        metrics.BATCH_SIZE.observe(len(jobs))
        with self._lock:
            owned = runtime.owned  # re-read: the camera may have moved during inference
            for job in jobs:
                if job.frame.camera_id not in owned:
                    continue
                h, w = job.image.shape[:2]
                self._handle(job, w, h, took * 1000, len(jobs))
            metrics.ACTIVE_TRACKS.set(sum(len(t.tracks) for t in self.trackers.values()))
        return passed

    def _tracker(self, cam: str) -> CameraTracker:
        tracker = self.trackers.get(cam)
        if tracker is None:
            tracker = self.trackers[cam] = CameraTracker(cam, self.config.tracker)
        return tracker

    def _job(
        self, f: Frame, img: np.ndarray, t: float, decision: Decision, tracker: CameraTracker
    ) -> _Job:
        """The model's work on one frame: crops, or the full frame (regions None).

        Keyframes always look at the whole frame; so does a frame whose motion only the
        agent saw (the central check could not say where), and a camera whose last full
        frame is ``idle_interval_s`` old (its stationary tracks are re-checked).  Crops
        aim at the motion and the tracks that move or are unsettled; stationary tracks
        outside every crop are carried (see :meth:`_carry`), as Frigate does.
        """
        cfg = self.config
        cam = f.camera_id
        motion = decision.motion
        regions = None
        stationary = tracker.stationary(t, cfg.motion_hold_s)
        recheck = stationary and t - self._last_full.get(cam, -np.inf) >= cfg.idle_interval_s
        claimed = decision.header_motion
        if (
            cfg.regions
            and motion is not None
            and decision.reason in ("motion", "tracks")
            and not recheck
            and not (claimed is not None and claimed >= cfg.motion_threshold > motion.score)
        ):
            h, w = img.shape[:2]
            still = {st.track_id for st in stationary}
            aimed = [st for st in tracker.tracks.values() if st.track_id not in still]
            regions = plan_regions(
                np.concatenate([motion.boxes, tracker.boxes(aimed)]),
                w,
                h,
                min_side=cfg.region_imgsz,
                max_area=cfg.region_max_area,
                max_regions=cfg.max_regions,
            )
        if regions is None:
            self._last_full[cam] = t
            return _Job(f, img, t, None)
        return _Job(f, img, t, regions, stationary)

    def _carry(self, job: _Job, det: Detections) -> Detections:
        """``det`` plus the last box of each stationary track no crop covered.

        The model did not look there, so the track is not missed: it keeps its last box
        and confidence until the next full frame (at most ``idle_interval_s`` away).
        A track mostly inside a crop, or overlapped by a detection, is left to the model
        (seen, or really missed).
        """
        carried = []
        overlap = (
            box_iou(det.xyxy, np.array([st.last_box for st in job.stationary], np.float32))
            if len(det)
            else None
        )
        for i, st in enumerate(job.stationary):
            if overlap is not None and overlap[:, i].max() >= CARRY_IOU:
                continue
            x1, y1, x2, y2 = st.last_box
            area = max((x2 - x1) * (y2 - y1), 1e-6)
            covered = max(
                (
                    max(0.0, min(x2, r.x0 + r.side) - max(x1, r.x0))
                    * max(0.0, min(y2, r.y0 + r.side) - max(y1, r.y0))
                    / area
                    for r in job.regions or ()
                ),
                default=0.0,
            )
            if covered < CARRY_COVERED:
                carried.append(st)
        if not carried:
            return det
        extra = Detections(
            np.array([st.last_box for st in carried], np.float32),
            np.array([st.last_confidence for st in carried], np.float32),
            np.array([st.class_id for st in carried], np.int64),
            attributes=[dict(st.best_attributes) for st in carried],
        )
        metrics.TRACKS_CARRIED.inc(len(carried))
        return Detections(
            np.concatenate([det.xyxy, extra.xyxy]),
            np.concatenate([det.confidence, extra.confidence]),
            np.concatenate([det.class_id, extra.class_id]),
            attributes=[*det.attributes, *extra.attributes],
        )

    def _infer(self, backend: Backend, jobs: list[_Job]) -> None:
        """Fill ``job.det``: full frames in one call, all region crops in another."""
        full = [j for j in jobs if j.regions is None]
        cropped = [j for j in jobs if j.regions is not None]
        if full:
            for job, det in zip(
                full, backend.infer([j.image for j in full], conf=self.infer_conf), strict=True
            ):
                job.det = det
            metrics.INFERENCE_MODE.labels("full").inc(len(full))
        if cropped:
            crops = [(j, r) for j in cropped for r in j.regions or ()]
            dets = backend.infer(
                [r.crop(j.image) for j, r in crops],
                conf=self.infer_conf,
                imgsz=self.config.region_imgsz,
            )
            parts: dict[int, list] = {}
            for (job, region), det in zip(crops, dets, strict=True):
                parts.setdefault(id(job), []).append((region, det))
            for job in cropped:
                h, w = job.image.shape[:2]
                job.det = merge_detections(parts.get(id(job), []), w, h, self.config.iou)
            metrics.INFERENCE_MODE.labels("region").inc(len(cropped))

    def _handle(self, job: _Job, w: int, h: int, inference_ms: float, batch: int) -> None:
        assert self.runtime is not None and self.backend is not None
        frame = job.frame
        det = self.labels.apply(job.det, self.allowed)
        if self.labels.merges_classes:
            # One person seen as both "Normal" and "Fall" is one person: one track,
            # the more confident posture (two tracks would flicker in and out).
            det = det.nms(self.config.iou)
        if job.stationary:
            det = self._carry(job, det)
        tracker = self._tracker(frame.camera_id)
        det, events = tracker.update(
            det, width=w, height=h, ts_ms=frame.ts_ms, jpeg=frame.jpeg, now=job.t
        )
        reported = det[det.confidence >= self.config.confidence].top_k(self.config.max_objects)
        record = detection_record(
            frame,
            reported,
            self.labels,
            width=w,
            height=h,
            model=self.backend.model.label,
            backend=self.backend.type_name,
            replica=self.runtime.replica_id,
            inference_ms=inference_ms,
            batch=batch,
        )
        record["regions"] = len(job.regions) if job.regions else 0
        self.rules.apply(record)  # tags objects with zones, publishes zone/line events
        if self.runtime.publish_result(STREAM_DETECTIONS, record) is None:
            metrics.PUBLISH_FAILURES.labels(STREAM_DETECTIONS).inc()
        for obj in record["objects"]:
            metrics.OBJECTS.labels(obj["class"]).inc()
        self._emit(events)

    # ------------------------------------------------------------------ events
    def _emit(self, events: list[TrackEvent]) -> None:
        """Hand events to the runtime's ordered, retried publisher (with snapshots)."""
        runtime = self.runtime
        assert runtime is not None
        for ev in events:
            st = ev.track
            snapshot = None
            if ev.needs_snapshot and st.best_jpeg:
                st.snapshot_id, st.snapshot_confidence = SnapshotSink.new_id(), st.best_confidence
                snapshot = st.best_jpeg
            runtime.publish_event(event_record(ev, self.labels, st.snapshot_id), snapshot=snapshot)
            metrics.EVENTS.labels(ev.type).inc()
            log.info(
                ev.type,
                extra={
                    "camera_id": ev.camera_id,
                    "track_id": st.track_id,
                    "class": self.labels.name_of(st.class_id),
                    "event_id": ev.event_id,
                },
            )

    def _drop_camera(self, cam: str, reason: str) -> None:
        self.scheduler.forget(cam)
        self._last_full.pop(cam, None)
        tracker = self.trackers.pop(cam, None)
        if tracker is None:
            return
        self._emit(tracker.close(reason))
        if self.rules is not None:
            self.rules.close_camera(cam, reason)
        log.info("camera state reset", extra={"camera_id": cam, "reason": reason})

    def _disabled(self, cameras: list[str]) -> set[str]:
        runtime = self.runtime
        assert runtime is not None
        try:
            flags = runtime.redis.hmget(runtime.keys.processing(SERVICE), cameras)
        except redis.RedisError:
            return set()
        return {c for c, f in zip(cameras, flags, strict=True) if f in ("0", b"0")}

    def _sweep_loop(self) -> None:
        """Close tracks of cameras that stopped sending frames.

        "Sending" is judged by the runtime's receive counter, not by processing: under
        overload a camera's frames may be processed seconds apart while it still sends.
        """
        interval = min(1.0, self.config.tracker.lost_after_s / 2)
        received: dict[str, int] = {}
        while not self._stop.wait(interval):
            try:
                stats = self.runtime.stats if self.runtime is not None else {}
                with self._lock:
                    for cam, tracker in list(self.trackers.items()):
                        st = stats.get(cam)
                        if st is not None and st.received != received.get(cam):
                            received[cam] = st.received
                            tracker.note_frame()
                        self._emit(tracker.expire())
                    self.rules.tick()  # zones of cameras that stopped sending
            except Exception:
                log.exception("track sweep failed")
