"""The analyst's plug-in for the shared worker runtime.

The frame path (:meth:`AnalystProcessor.process_batch`) only remembers each camera's
latest frame and decides whether an analysis is due; the API calls run on a small
pool of worker threads fed by a :class:`LatestJobQueue` (one pending job per camera,
newest wins), so a slow or dead model never holds up frames.

An analysis is due when

* a trigger event arrives (``object_entered`` of a trigger class, ``face_recognized``)
  for a camera this replica owns, unless the camera was analysed less than
  ``event_cooldown_s`` ago (then it is coalesced); it uses the held frame if fresh,
  else the camera's next frame;
* or ``min_interval_s`` has passed since the camera's last analysis and its latest
  detections record is recent and holds objects ("periodic").  Never per frame.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis

from services.analyst import metrics as m
from services.analyst.analyzer import Analyzer
from services.analyst.config import AnalystConfig, OfflineProviderConfig
from services.analyst.jobs import PERIODIC, AnalysisJob, LatestJobQueue
from services.analyst.providers import MissingCredentials, Provider, build_provider
from services.analyst.providers.offline import OfflineProvider
from services.analyst.scene import has_activity, object_class, parse_record
from services.analyst.triggers import EventListener
from shared.keys import STREAM_DETECTIONS
from shared.logs import BurstLimiter
from shared.worker import Frame, Processor, WorkerRuntime

log = logging.getLogger(__name__)

#: How often (at most) a camera's activity is looked up in Redis from the frame path.
ACTIVITY_CHECK_S = 0.5
#: An event waiting for a frame is dropped after this long (camera stopped streaming).
PENDING_EVENT_TTL_S = 30.0
#: How long close() waits for analyses in flight.
SHUTDOWN_GRACE_S = 3.0


def make_provider(config: AnalystConfig) -> Provider:
    """The configured provider; Gemini without an API key degrades to offline (logged)."""
    try:
        return build_provider(config.provider, timeout_s=config.timeout_s)
    except MissingCredentials as exc:
        log.warning(
            "no API key for the analysis model; using the offline provider "
            "(summaries are labelled 'no AI model used')",
            extra={"provider": config.provider.type, "reason": str(exc)},
        )
        return OfflineProvider(OfflineProviderConfig(), timeout_s=config.timeout_s)


@dataclass(slots=True)
class _CameraState:
    frame: Frame | None = None
    frame_at: float = 0.0
    first_seen: float = 0.0
    last_submit: float | None = None  # when the last analysis was queued
    last_activity_check: float = float("-inf")
    pending: AnalysisJob | None = None

    def periodic_due(self, now: float, interval: float) -> bool:
        since = self.first_seen if self.last_submit is None else self.last_submit
        return now - since >= interval


class AnalystProcessor(Processor):
    service = "analyst"
    # Deciding is cheap: take every waiting camera's latest frame in one call.
    max_batch = 64

    def __init__(
        self,
        config: AnalystConfig,
        *,
        provider: Provider | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self._provider = provider
        self._clock = clock
        self._cams: dict[str, _CameraState] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.queue = LatestJobQueue()
        self._threads: list[threading.Thread] = []
        self.runtime: WorkerRuntime | None = None
        self.analyzer: Analyzer | None = None
        self.listener: EventListener | None = None
        self._event_types = frozenset(config.event_types)
        self._trigger_classes = frozenset(config.trigger_classes)
        self._burst = BurstLimiter()

    # ---------------------------------------------------------------- lifecycle
    @property
    def provider(self) -> Provider:
        assert self._provider is not None, "setup() not called"
        return self._provider

    def setup(self, runtime: WorkerRuntime) -> None:
        self.runtime = runtime
        if self._provider is None:
            self._provider = make_provider(self.config)
        self.analyzer = Analyzer(
            self.config,
            self._provider,
            r=runtime.redis,
            keys=runtime.keys,
            publish_event=runtime.publish_event,
            stop=self._stop,
            count_invalid=runtime.count_invalid,
            clock=self._clock,
        )
        for i in range(self.config.concurrency):
            t = threading.Thread(target=self._work, name=f"analyst-call-{i}", daemon=True)
            t.start()
            self._threads.append(t)
        assert runtime.redis_config.url
        self.listener = EventListener(runtime.redis_config.url, runtime.keys, self.on_event)
        self.listener.start()
        log.info(
            "analyst set up",
            extra={
                "provider": self._provider.name,
                "model": self._provider.model,
                "min_interval_s": self.config.min_interval_s,
                "concurrency": self.config.concurrency,
                "daily_budget": self.config.daily_budget,
            },
        )

    def close(self) -> None:
        self._stop.set()
        self.queue.close()
        if self.listener is not None:
            self.listener.stop()
        # Worker threads are daemons: wait briefly for calls in flight, never the full
        # request timeout (an orchestrator's stop grace period is short).
        deadline = time.monotonic() + SHUTDOWN_GRACE_S
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        if self._provider is not None:
            self._provider.close()

    # --------------------------------------------------------------- frame path
    def process_batch(self, frames: list[Frame]) -> None:
        now = self._clock()
        for frame in frames:
            cam = frame.camera_id
            job: AnalysisJob | None = None
            check_activity = False
            with self._lock:
                st = self._cams.get(cam)
                if st is None:
                    # First sight: the periodic clock starts now (events act at once).
                    st = self._cams[cam] = _CameraState(first_seen=now)
                st.frame, st.frame_at = frame, now
                if st.pending is not None:
                    job, st.pending = st.pending, None
                    if now - job.created > PENDING_EVENT_TTL_S:
                        m.EVENTS_SEEN.labels("expired").inc()
                        job = None
                    else:
                        job.frame = frame
                        st.last_submit = now
                elif (
                    st.periodic_due(now, self.config.min_interval_s)
                    and now - st.last_activity_check >= ACTIVITY_CHECK_S
                ):
                    st.last_activity_check = now
                    check_activity = True
            if job is None and check_activity and self._camera_active(cam):
                with self._lock:
                    st.last_submit = now
                job = AnalysisJob(cam, frame, PERIODIC)
            if job is not None:
                self._submit(job)

    def _camera_active(self, cam: str) -> bool:
        assert self.runtime is not None
        try:
            raw = self.runtime.redis.get(self.runtime.keys.latest(STREAM_DETECTIONS, cam))
        except redis.RedisError as exc:
            ok, suppressed = self._burst.should_log("redis")
            if ok:
                log.warning(
                    "cannot read detections; no periodic analysis meanwhile",
                    extra={"camera_id": cam, "error": str(exc), "suppressed": suppressed},
                )
            return False
        return has_activity(parse_record(raw), self.config.activity_max_age_s)

    def _submit(self, job: AnalysisJob) -> None:
        if self.queue.put(job):
            m.JOBS_SUPERSEDED.inc()
        m.QUEUE_DEPTH.set(len(self.queue))

    # ------------------------------------------------------------------- events
    def on_event(self, event: dict[str, Any]) -> None:
        """Handle one record from the events stream (called by the listener thread)."""
        etype = event.get("type")
        if etype not in self._event_types:
            return  # other services' events (and our own analyses): not triggers
        if etype == "object_entered" and object_class(event) not in self._trigger_classes:
            m.EVENTS_SEEN.labels("ignored_class").inc()
            return
        cam = event.get("camera_id")
        assert self.runtime is not None
        if not isinstance(cam, str) or cam not in self.runtime.owned:
            m.EVENTS_SEEN.labels("not_owned").inc()
            return
        now = self._clock()
        job = AnalysisJob(cam, None, str(etype), event)
        with self._lock:
            st = self._cams.get(cam)
            if st is None:
                st = self._cams[cam] = _CameraState(first_seen=now)
            elif st.last_submit is not None and now - st.last_submit < self.config.event_cooldown_s:
                m.EVENTS_SEEN.labels("coalesced").inc()
                return
            if st.frame is not None and now - st.frame_at <= self.config.event_frame_max_age_s:
                job.frame = st.frame
                st.last_submit = now
            else:
                st.pending = job if st.pending is None else job.merged_with(st.pending)
                job = None
        m.EVENTS_SEEN.labels("triggered" if job is not None else "waiting_frame").inc()
        if job is not None:
            self._submit(job)

    def on_cameras_changed(self, owned: frozenset[str]) -> None:
        with self._lock:
            for cam in [c for c in self._cams if c not in owned]:
                del self._cams[cam]
        self.queue.discard(owned)
        if self.analyzer is not None:
            self.analyzer.camera_buckets.forget(owned)

    # ----------------------------------------------------------------- workers
    def _work(self) -> None:
        assert self.analyzer is not None
        while not self._stop.is_set():
            job = self.queue.take(timeout=0.5)
            if job is None:
                continue
            m.QUEUE_DEPTH.set(len(self.queue))
            try:
                self.analyzer.run(job)
            except Exception:
                log.exception("analysis failed", extra={"camera_id": job.camera_id})
            finally:
                self.queue.done(job.camera_id)
