"""How workers write what they found: results, events and snapshots.

One policy for every worker (detector, faces, analyst), used through
:class:`shared.worker.WorkerRuntime`:

* **Results** (``detections``, ``faces``: one record per frame) are superseded by
  the next frame.  :meth:`WorkerRuntime.publish_result` writes one; when Redis
  refuses it the record is counted (``sentri_worker_publish_failures_total``) and
  dropped, never retried.
* **Events** are not superseded.  :class:`EventPublisher` (``WorkerRuntime.publish_event``)
  writes them in order; one Redis refuses waits in a bounded queue (``worker.max_pending_events``
  events / ``worker.max_pending_event_bytes`` bytes) and is published, still in
  order, before any newer one once Redis accepts writes again.  Events pushed out
  of a full queue are counted (``sentri_worker_events_dropped_total``) and logged.
* **Snapshots** (the JPEG an event points at) go through :class:`SnapshotSink`, the
  ONE place that knows where snapshots live.  Today: a Redis string with a TTL
  (``keys.snapshot(id)``).  Moving snapshots to a media store means replacing this
  class, nothing else.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis
from prometheus_client import Counter, Gauge

from shared.keys import STREAM_EVENTS, Keys
from shared.logs import BurstLimiter

log = logging.getLogger(__name__)

PUBLISH_FAILURES = Counter(
    "sentri_worker_publish_failures_total",
    "Writes Redis refused (results are dropped, events retried), by stream.",
    ["service", "stream"],
)
EVENTS_PUBLISHED = Counter(
    "sentri_worker_events_published_total", "Events written to their stream.", ["service", "type"]
)
EVENTS_DROPPED = Counter(
    "sentri_worker_events_dropped_total",
    "Events lost because the retry queue was full (Redis refused writes for long).",
    ["service"],
)
EVENTS_PENDING = Gauge(
    "sentri_worker_events_pending", "Events waiting for Redis to accept writes.", ["service"]
)


class SnapshotSink:
    """Where event snapshots (JPEG bytes) are stored: the one place to swap.

    Today a Redis string ``keys.snapshot(id)`` expiring after ``ttl_s``; the gateway
    serves it at ``GET /api/snapshots/{id}``.  Raises ``redis.RedisError`` when the
    write is refused (the event publisher then retries the event later).
    """

    def __init__(self, r: redis.Redis, keys: Keys, ttl_s: int) -> None:
        self.r, self.keys, self.ttl_s = r, keys, ttl_s

    @staticmethod
    def new_id() -> str:
        return uuid.uuid4().hex

    def store_snapshot(self, snapshot_id: str, jpeg: bytes) -> None:
        self.r.set(self.keys.snapshot(snapshot_id), jpeg, ex=self.ttl_s)

    def touch_snapshot(self, snapshot_id: str) -> None:
        """A newer event points at this snapshot: keep it for another ``ttl_s``."""
        self.r.expire(self.keys.snapshot(snapshot_id), self.ttl_s)


@dataclass(slots=True)
class PendingEvent:
    record: dict[str, Any]
    snapshot: bytes | None
    stream: str
    #: A result record the event announces, written first; its stream entry id goes
    #: into ``record[result_id_field]`` (the analyst's ``analysis`` -> ``analysis_id``).
    result: tuple[str, dict[str, Any]] | None = None
    result_id_field: str | None = None
    result_id: str | None = None

    @property
    def size(self) -> int:
        return 512 + (len(self.snapshot) if self.snapshot else 0)


#: ``publish(stream, record, latest=...) -> entry id`` (``WorkerRuntime.publish``).
PublishFn = Callable[..., str]


class EventPublisher:
    """Ordered, bounded, retried event publishing (see the module docstring)."""

    def __init__(
        self,
        service: str,
        publish: PublishFn,
        snapshots: SnapshotSink,
        *,
        max_events: int = 10_000,
        max_bytes: int = 64 * 1024 * 1024,
    ) -> None:
        self.service, self._publish, self.snapshots = service, publish, snapshots
        self.max_events, self.max_bytes = max_events, max_bytes
        self._queue: deque[PendingEvent] = deque()
        self._bytes = 0
        self._lock = threading.Lock()
        self._burst = BurstLimiter()
        self.dropped = 0

    @property
    def pending(self) -> int:
        return len(self._queue)

    def publish_event(
        self,
        record: dict[str, Any],
        snapshot: bytes | None = None,
        *,
        stream: str = STREAM_EVENTS,
        result: tuple[str, dict[str, Any]] | None = None,
        result_id_field: str | None = None,
    ) -> bool:
        """Queue ``record`` behind any event Redis refused earlier and flush in order.

        ``snapshot``: JPEG stored through :class:`SnapshotSink` before the event is
        written; ``record["snapshot_id"]`` is filled in now (a new id) unless the caller
        set one.  An event that names a ``snapshot_id`` without bytes refreshes that
        snapshot's retention.  Returns True when everything queued (this event
        included) is written, False when some wait for Redis: the event is never
        lost silently, only pushed out of a full queue (counted).  Never raises
        ``redis.RedisError``.
        """
        if snapshot is not None and not record.get("snapshot_id"):
            record["snapshot_id"] = self.snapshots.new_id()
        item = PendingEvent(record, snapshot, stream, result, result_id_field)
        with self._lock:
            self._queue.append(item)
            self._bytes += item.size
            done = self._flush_locked()
            self._trim_locked()
            EVENTS_PENDING.labels(self.service).set(len(self._queue))
            return done

    def flush(self) -> bool:
        """Retry what waits (the runtime calls this every heartbeat)."""
        with self._lock:
            if not self._queue:
                return True
            done = self._flush_locked()
            EVENTS_PENDING.labels(self.service).set(len(self._queue))
            return done

    def _flush_locked(self) -> bool:
        while self._queue:
            item = self._queue[0]
            try:
                self._write(item)
            except redis.RedisError as exc:
                PUBLISH_FAILURES.labels(self.service, item.stream).inc()
                ok, suppressed = self._burst.should_log("publish_event")
                if ok:
                    log.warning(
                        "could not publish event; will retry in order",
                        extra={"service": self.service, "camera_id": item.record.get("camera_id"),
                               "type": item.record.get("type"), "error": str(exc),
                               "queued": len(self._queue), "suppressed": suppressed},
                    )  # fmt: skip
                return False
            except Exception:
                # A record that can never be written (a bug, e.g. not JSON): it must not
                # block every later event.  Dropped, counted, logged with its trace.
                log.exception(
                    "event cannot be published; dropped",
                    extra={"service": self.service, "type": item.record.get("type")},
                )
                EVENTS_DROPPED.labels(self.service).inc()
                self.dropped += 1
            else:
                EVENTS_PUBLISHED.labels(self.service, str(item.record.get("type", ""))).inc()
            self._queue.popleft()
            self._bytes -= item.size
        return True

    def _write(self, item: PendingEvent) -> None:
        rec = item.record
        sid = rec.get("snapshot_id")
        if item.snapshot is not None and sid:
            self.snapshots.store_snapshot(sid, item.snapshot)
            self._bytes -= len(item.snapshot)
            item.snapshot = None  # stored: a retry does not store it again
        elif sid:
            self.snapshots.touch_snapshot(sid)
        if item.result is not None and item.result_id is None:
            stream, result = item.result
            item.result_id = self._publish(stream, result, latest=True)
            if item.result_id_field:
                rec[item.result_id_field] = item.result_id
        self._publish(item.stream, rec, latest=True)

    def _trim_locked(self) -> None:
        while len(self._queue) > self.max_events or (
            self._bytes > self.max_bytes and len(self._queue) > 1
        ):
            gone = self._queue.popleft()
            self._bytes -= gone.size
            self.dropped += 1
            EVENTS_DROPPED.labels(self.service).inc()
            ok, suppressed = self._burst.should_log("event_dropped")
            if ok:
                log.error(
                    "event retry queue full: oldest event lost",
                    extra={"service": self.service, "camera_id": gone.record.get("camera_id"),
                           "type": gone.record.get("type"), "suppressed": suppressed},
                )  # fmt: skip
