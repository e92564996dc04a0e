"""Running one analysis: context, limits, provider call with retries, fallback, publish.

The policy for a remote provider (Gemini), in order:

1. circuit breaker open → offline summary (``fallback_reason="circuit_open"``);
2. no token in the global or the camera's bucket → offline (``rate_limited``);
3. daily budget spent (checked before every attempt) → offline (``budget_exhausted``);
4. call; on 429/5xx/timeouts/connection errors retry up to ``max_retries`` times,
   waiting the server's Retry-After (header, else RetryInfo in the body) or an
   exponential backoff with jitter; a Retry-After beyond ``retry_after_max_s`` is
   not waited for;
5. a call that finally fails (or answers malformed JSON) is recorded with ``error``
   set, counts towards the breaker, and carries the offline summary so the operator
   still sees what the detectors saw.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis

from services.analyst import metrics as m
from services.analyst.config import AnalystConfig
from services.analyst.jobs import AnalysisJob
from services.analyst.limits import (
    CameraBuckets,
    CircuitBreaker,
    DailyBudget,
    TokenBucket,
    backoff_delay,
)
from services.analyst.prompt import AnalysisRequest, ImageError, build_prompt, build_request
from services.analyst.providers import Provider, ProviderError, ProviderResult
from services.analyst.providers.offline import offline_summary
from services.analyst.scene import SceneContext, build_context, parse_record
from shared.keys import STREAM_ANALYSIS, STREAM_DETECTIONS, STREAM_FACES, Keys
from shared.logs import BurstLimiter
from shared.redisutil import now_ms, parse_entry

log = logging.getLogger(__name__)

#: ``WorkerRuntime.publish_event``: the runtime's ordered, retried event publishing.
PublishEvent = Callable[..., bool]

#: Newest ``faces`` stream entries scanned for the camera's recent faces.
FACE_SCAN = 200


@dataclass(slots=True)
class Outcome:
    result: ProviderResult
    provider: str
    error: str | None = None
    fallback_reason: str | None = None
    attempts: int = 0


class Analyzer:
    """Turns an :class:`AnalysisJob` into a published ``analysis`` record and event."""

    def __init__(
        self,
        config: AnalystConfig,
        provider: Provider,
        *,
        r: redis.Redis,
        keys: Keys,
        publish_event: PublishEvent,
        stop: threading.Event,
        count_invalid: Callable[[str, str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.provider = provider
        self.r = r
        self.keys = keys
        self.publish_event = publish_event
        self.stop = stop
        self.count_invalid = count_invalid
        self._burst = BurstLimiter()
        self.breaker = CircuitBreaker(
            config.breaker_failures, config.breaker_cooldown_s, clock, self._breaker_changed
        )
        self.global_bucket = TokenBucket(
            config.global_rate_per_min / 60, config.global_burst, clock
        )
        self.camera_buckets = CameraBuckets(
            config.camera_rate_per_min / 60, config.camera_burst, clock
        )
        self.budget = DailyBudget(r, keys, config.daily_budget)
        m.BREAKER_STATE.set(0)
        self._update_budget_gauge()

    # ----------------------------------------------------------------- public
    def run(self, job: AnalysisJob) -> dict[str, Any]:
        """Analyse, publish, and return the published record."""
        t0 = time.perf_counter()
        ctx = self._context(job)
        request, image_error = self._request(ctx, job)
        if image_error:
            outcome = Outcome(offline_summary(ctx, "frame not decodable"), "offline", image_error)
        elif not self.provider.remote:
            outcome = Outcome(self.provider.analyse(request), self.provider.name)
        else:
            outcome = self._remote(request)
        latency_ms = round((time.perf_counter() - t0) * 1000, 1)
        m.ANALYSIS_SECONDS.labels(outcome.provider).observe(latency_ms / 1000)
        m.ANALYSES.labels(outcome.provider, job.trigger).inc()
        record = self._record(job, ctx, request, outcome, latency_ms)
        self._publish(record)
        return record

    # -------------------------------------------------------------- internals
    def _context(self, job: AnalysisJob) -> SceneContext:
        cam = job.camera_id
        faces: list[dict[str, Any]] = []
        try:
            pipe = self.r.pipeline(transaction=False)
            pipe.get(self.keys.latest(STREAM_DETECTIONS, cam))
            # One record per face, all cameras interleaved: scan the newest entries.
            pipe.xrevrange(self.keys.stream(STREAM_FACES), count=FACE_SCAN)
            det_raw, face_entries = pipe.execute()
            faces = [parse_entry(i, f) for i, f in face_entries]
        except redis.RedisError as exc:
            self._log_once("redis_read", "cannot read detections; analysing without", exc)
            det_raw = None
        return build_context(
            cam,
            parse_record(det_raw),
            faces,
            trigger=job.trigger,
            event=job.event,
            max_age_s=self.config.activity_max_age_s,
        )

    def _request(self, ctx: SceneContext, job: AnalysisJob) -> tuple[AnalysisRequest, str | None]:
        frame = job.frame
        captured = frame.rx_time if frame is not None else None  # the cluster clock
        if frame is not None and frame.dimensions() is None:
            # Refused by the runtime's pixel cap / header check (already counted).
            prompt = build_prompt(ctx, captured_at=captured)
            return AnalysisRequest(ctx, prompt, None, None), f"image: {frame.invalid}"
        try:
            req = build_request(
                ctx,
                frame.jpeg if frame is not None else None,
                max_side=self.config.max_image_side,
                quality=self.config.jpeg_quality,
                captured_at=captured,
            )
            return req, None
        except ImageError as exc:
            if self.count_invalid is not None:
                self.count_invalid("bad_jpeg", str(exc))
            prompt = build_prompt(ctx, captured_at=captured)
            return AnalysisRequest(ctx, prompt, None, None), f"image: {exc}"

    def _fallback(
        self, ctx: SceneContext, reason: str, error: str | None = None, attempts: int = 0
    ) -> Outcome:
        m.FALLBACKS.labels(reason).inc()
        note = {
            "circuit_open": f"{self.provider.name} paused after repeated failures",
            "rate_limited": "request rate limit reached",
            "budget_exhausted": "daily request budget used up",
            "budget_unavailable": "request budget could not be checked",
            "model_error": f"{self.provider.name} request failed",
        }.get(reason, reason)
        return Outcome(offline_summary(ctx, note), "offline", error, reason, attempts)

    def _remote(self, request: AnalysisRequest) -> Outcome:
        ctx = request.context
        name = self.provider.name
        if not self.breaker.allow():
            return self._fallback(ctx, "circuit_open")
        if not self.global_bucket.try_acquire():
            self.breaker.cancel()
            m.THROTTLED.labels("global").inc()
            return self._fallback(ctx, "rate_limited")
        if not self.camera_buckets.get(ctx.camera_id).try_acquire():
            self.global_bucket.refund()
            self.breaker.cancel()
            m.THROTTLED.labels("camera").inc()
            return self._fallback(ctx, "rate_limited")

        attempt = 0
        while True:
            try:
                spend_ok = self.budget.try_spend()
            except redis.RedisError as exc:
                self._log_once("budget", "cannot check the daily budget", exc)
                self.breaker.cancel()
                return self._fallback(ctx, "budget_unavailable", attempts=attempt)
            self._update_budget_gauge()
            if not spend_ok:
                self.breaker.cancel()
                return self._fallback(ctx, "budget_exhausted", attempts=attempt)
            attempt += 1
            t0 = time.perf_counter()
            try:
                result = self.provider.analyse(request)
            except ProviderError as exc:
                m.REQUESTS.labels(name, exc.outcome).inc()
                m.REQUEST_SECONDS.labels(name).observe(time.perf_counter() - t0)
                delay = self._retry_delay(exc, attempt)
                if delay is not None:
                    m.RETRIES.inc()
                    log.info(
                        "model request failed; retrying",
                        extra={
                            "camera_id": ctx.camera_id,
                            "outcome": exc.outcome,
                            "status": exc.status,
                            "attempt": attempt,
                            "delay_s": round(delay, 3),
                            "retry_after": exc.retry_after,
                        },
                    )
                    if self.stop.wait(delay):
                        self.breaker.cancel()
                        return self._fallback(ctx, "model_error", "shutting down", attempt)
                    continue
                self.breaker.record_failure()
                self._log_once(
                    f"fail:{exc.outcome}",
                    "model request failed",
                    exc,
                    camera_id=ctx.camera_id,
                    attempts=attempt,
                )
                return self._fallback(ctx, "model_error", f"{name} {exc}", attempt)
            except Exception as exc:  # a provider bug must not kill the worker thread
                m.REQUESTS.labels(name, "internal_error").inc()
                self.breaker.record_failure()
                log.exception("provider raised unexpectedly", extra={"camera_id": ctx.camera_id})
                return self._fallback(
                    ctx, "model_error", f"{name} internal error: {type(exc).__name__}", attempt
                )
            m.REQUESTS.labels(name, "success").inc()
            m.REQUEST_SECONDS.labels(name).observe(time.perf_counter() - t0)
            for kind, n in result.usage.items():
                m.TOKENS.labels(kind).inc(n)
            self.breaker.record_success()
            return Outcome(result, name, attempts=attempt)

    def _retry_delay(self, exc: ProviderError, attempt: int) -> float | None:
        """Seconds to wait before retrying, or None to give up now."""
        if not exc.retryable or attempt > self.config.max_retries or self.stop.is_set():
            return None
        if exc.retry_after is not None:
            if exc.retry_after > self.config.retry_after_max_s:
                return None
            return exc.retry_after
        return backoff_delay(attempt - 1, self.config.backoff_base_s, self.config.backoff_max_s)

    def _record(
        self,
        job: AnalysisJob,
        ctx: SceneContext,
        request: AnalysisRequest,
        outcome: Outcome,
        latency_ms: float,
    ) -> dict[str, Any]:
        res = outcome.result
        frame = job.frame
        return {
            "type": "analysis",
            "camera_id": job.camera_id,
            "ts": now_ms(),
            "trigger": job.trigger,
            "provider": outcome.provider,
            "model": res.model,
            "latency_ms": latency_ms,
            "summary": res.summary,
            "notable_objects": res.notable_objects,
            "threat_level": res.threat_level,
            "suggested_action": res.suggested_action,
            "error": outcome.error,
            "fallback_reason": outcome.fallback_reason,
            "attempts": outcome.attempts,
            # The event's own id (detector/faces write event_id), else its stream entry id.
            "trigger_event_id": (job.event or {}).get("event_id") or (job.event or {}).get("id"),
            "frame_seq": frame.header.seq if frame is not None else None,
            "frame_ts": frame.ts_ms if frame is not None else None,
            "image_size": list(request.image_size) if request.image_size else None,
            "object_counts": dict(ctx.counts),
            "names": ctx.names,
            "usage": res.usage or None,
        }

    def _publish(self, record: dict[str, Any]) -> None:
        """The analysis record and its ``analysis`` event, through the runtime's event
        publisher: what Redis refuses waits in its bounded queue (in order) instead of
        throwing away an analysis that was paid for."""
        event = {
            "type": "analysis",
            "event_id": uuid.uuid4().hex,
            "camera_id": record["camera_id"],
            "ts": record["ts"],
            "provider": record["provider"],
            "summary": record["summary"],
            "threat_level": record["threat_level"],
            "trigger": record["trigger"],
            "analysis_id": None,  # the analysis record's stream entry id, set when written
        }
        written = self.publish_event(
            event, result=(STREAM_ANALYSIS, record), result_id_field="analysis_id"
        )
        if not written:
            m.PUBLISH_ERRORS.inc()
        log.info(
            "analysis published" if written else "analysis queued until Redis accepts writes",
            extra={
                "camera_id": record["camera_id"],
                "trigger": record["trigger"],
                "provider": record["provider"],
                "threat_level": record["threat_level"],
                "latency_ms": record["latency_ms"],
                "error": record["error"],
                "fallback_reason": record["fallback_reason"],
            },
        )

    def _breaker_changed(self, state: str) -> None:
        m.BREAKER_STATE.set(CircuitBreaker.GAUGE[state])
        level = logging.WARNING if state == CircuitBreaker.OPEN else logging.INFO
        log.log(
            level,
            "circuit breaker state changed",
            extra={"state": state, "provider": self.provider.name},
        )

    def _update_budget_gauge(self) -> None:
        try:
            m.BUDGET_REMAINING.set(self.budget.remaining())
        except redis.RedisError as exc:  # the gauge keeps its last value
            log.debug("cannot read the daily budget", extra={"error": str(exc)})

    def _log_once(self, key: str, msg: str, exc: BaseException, **extra: Any) -> None:
        ok, suppressed = self._burst.should_log(key)
        if ok:
            log.warning(msg, extra={"error": str(exc), "suppressed": suppressed, **extra})
