"""The archiver loop: ``events`` stream → event store, at least once.

A batch is acknowledged only after the database committed it; the upsert by
``event_id`` makes a redelivery harmless.  While the database is down the batch is
kept and retried with backoff: upstream is never blocked (the stream itself is the
buffer, bounded by ``redis.events_maxlen``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import redis
from prometheus_client import Counter, Gauge
from sqlalchemy.exc import SQLAlchemyError

from services.archiver.config import ArchiverConfig
from shared.events import EventConsumer
from shared.eventstore import EventStore
from shared.keys import Keys
from shared.logs import BurstLimiter
from shared.storage import MediaError, MediaStore, snapshot_key

log = logging.getLogger(__name__)

ARCHIVED = Counter(
    "sentri_archiver_events_total", "Events read from the stream, by result.", ["result"]
)
DB_ERRORS = Counter("sentri_archiver_db_errors_total", "Failed event-store writes (retried).")
BACKLOG = Gauge("sentri_archiver_held_events", "Events read but not yet stored (DB down).")
SNAPSHOTS = Counter(
    "sentri_archiver_snapshots_total", "Snapshots copied from Redis to the media store, by result.",
    ["result"],
)  # fmt: skip


class Archiver:
    def __init__(
        self,
        r: redis.Redis,
        rb: redis.Redis,
        keys: Keys,
        open_store: Callable[[], EventStore],
        config: ArchiverConfig,
        media: MediaStore | None = None,
    ) -> None:
        self.r, self.rb, self.keys = r, rb, keys
        self.open_store = open_store
        self.config = config
        self.media = media
        self.store: EventStore | None = None
        self.consumer: EventConsumer | None = None
        self.held: list[dict[str, Any]] = []
        self.stop_event = threading.Event()
        self._burst = BurstLimiter()
        self._failures = 0
        self._last_claim = 0.0
        self.stored = 0

    # ------------------------------------------------------------------ steps
    def _ensure(self) -> bool:
        if self.consumer is None:
            self.consumer = EventConsumer(
                self.r, self.keys, self.config.group, self.config.consumer
            )
        if self.store is None:
            self.store = self.open_store()
            log.info("event store open", extra={"url": _redact(self.store.url)})
        return True

    def step(self) -> int:
        """One read-store-ack round; returns how many events were stored."""
        self._ensure()
        assert self.consumer is not None and self.store is not None
        if not self.held:
            now = time.monotonic()
            if now - self._last_claim > self.config.claim_idle_s / 2:
                self._last_claim = now
                self.held = self.consumer.claim_stale(
                    int(self.config.claim_idle_s * 1000), self.config.batch
                )
            if not self.held:
                self.held = self.consumer.read(self.config.batch, self.config.block_ms)
        if not self.held:
            return 0
        BACKLOG.set(len(self.held))
        if self.config.copy_snapshots and self.media is not None:
            self._copy_snapshots(self.held)
        new = self.store.apply_events(self.held)
        self.consumer.ack(*[e["id"] for e in self.held])
        ARCHIVED.labels("new").inc(new)
        ARCHIVED.labels("duplicate").inc(len(self.held) - new)
        self.stored += new
        self.held = []
        BACKLOG.set(0)
        return new

    def _copy_snapshots(self, entries: list[dict[str, Any]]) -> None:
        assert self.media is not None
        for e in entries:
            sid, cam = e.get("snapshot_id"), e.get("camera_id")
            if not (isinstance(sid, str) and sid and isinstance(cam, str) and cam):
                continue
            try:
                key = snapshot_key(sid)
                if self.media.size(key) is not None:
                    continue
                data = self.rb.get(self.keys.snapshot(sid))
                if not data:
                    continue  # already in the media store only, or expired
                self.media.put(key, data, "image/jpeg")
                SNAPSHOTS.labels("copied").inc()
            except (MediaError, ValueError) as exc:
                SNAPSHOTS.labels("failed").inc()
                self._log_once("snapshot", "snapshot not copied", exc, camera_id=cam)

    def run(self, on_idle: Callable[[], None] | None = None) -> None:
        while not self.stop_event.is_set():
            try:
                self.step()
                self._failures = 0
            except (SQLAlchemyError, OSError) as exc:
                DB_ERRORS.inc()
                self._failures += 1
                self._log_once("db", "event store unavailable; holding batch", exc,
                               held=len(self.held))  # fmt: skip
                if self.store is not None and self._failures > 3:
                    self.store.close()  # reconnect from scratch next time
                    self.store = None
                self.stop_event.wait(
                    min(self.config.retry_max_s, 0.25 * 2 ** min(self._failures, 8))
                )
            except redis.RedisError as exc:
                self._failures += 1
                self._log_once("redis", "redis unavailable", exc)
                self.consumer = None
                self.stop_event.wait(
                    min(self.config.retry_max_s, 0.25 * 2 ** min(self._failures, 8))
                )
            if on_idle is not None:
                try:
                    on_idle()
                except Exception:  # noqa: BLE001 - retention must never stop archiving
                    log.exception("retention pass failed")

    def stop(self) -> None:
        self.stop_event.set()

    def close(self) -> None:
        if self.store is not None:
            self.store.close()

    def _log_once(self, key: str, msg: str, exc: BaseException, **extra: Any) -> None:
        ok, suppressed = self._burst.should_log(key)
        if ok:
            log.warning(msg, extra={"error": str(exc)[:300], "suppressed": suppressed, **extra})


def _redact(url: str) -> str:
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url
