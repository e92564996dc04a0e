"""Retention: by age per camera, by size for the whole media store.

One pass (:meth:`Retention.run_once`):

1. **Age.**  Recordings older than the camera's ``recordings_retain_days`` go
   (footage that belongs to an event is kept as long as the camera's events);
   events, their tracked objects and their snapshots older than
   ``events_retain_days`` go.
2. **Size.**  While the store holds more than ``storage.max_bytes``, or the media
   filesystem has less than ``storage.min_free_percent`` free, the oldest
   continuous footage goes first; event footage only when no continuous footage is
   left.  Snapshots are never deleted for size: they are small and they are the
   record of what happened.

Every deletion is logged (one line per pass and camera) and counted.
"""

from __future__ import annotations

import logging
import time
from collections import Counter as Tally
from typing import Any

from prometheus_client import Counter, Gauge

from shared.eventstore import store as es
from shared.eventstore.store import EventStore
from shared.storage.config import StorageConfig
from shared.storage.media import BadKey, MediaError, MediaStore, snapshot_key

log = logging.getLogger(__name__)

DELETED = Counter(
    "sentri_storage_deleted_total", "Media objects deleted by retention.", ["kind", "reason"]
)
DELETED_BYTES = Counter(
    "sentri_storage_deleted_bytes_total", "Bytes deleted by retention.", ["kind", "reason"]
)
USAGE = Gauge("sentri_storage_used_bytes", "Bytes the media store holds (recordings + snapshots).")

DAY_MS = 86_400_000
BATCH = 200


class Retention:
    def __init__(self, store: EventStore, media: MediaStore, config: StorageConfig) -> None:
        self.store, self.media, self.config = store, media, config
        self._snap_bytes: int | None = None
        self._snap_measured = 0.0

    def snapshot_bytes(self, max_age_s: float = 600.0) -> int:
        now = time.monotonic()
        if self._snap_bytes is None or now - self._snap_measured > max_age_s:
            self._snap_bytes = self.media.usage("snapshots/")
            self._snap_measured = now
        return self._snap_bytes

    def usage(self) -> int:
        return es.segment_bytes(self.store) + self.snapshot_bytes()

    def run_once(self, now_ms: int | None = None) -> dict[str, Any]:
        now_ms = now_ms if now_ms is not None else time.time_ns() // 1_000_000
        stats: dict[str, Any] = {"segments": 0, "bytes": 0, "events": 0, "snapshots": 0}
        self._by_age(now_ms, stats)
        self._by_size(stats)
        USAGE.set(self.usage())
        return stats

    # ------------------------------------------------------------------- age
    def _by_age(self, now_ms: int, stats: dict[str, Any]) -> None:
        cfg = self.config
        for cam in self.store.recording_cameras():
            rec_days, ev_days = cfg.recordings_days(cam), cfg.events_days(cam)
            if rec_days > 0:
                self._drop_segments(
                    es.expired_segments(self.store, cam, now_ms - int(rec_days * DAY_MS),
                                        event_footage=False, limit=100_000),
                    "age", stats,
                )  # fmt: skip
            keep_ev = max(rec_days, ev_days) if rec_days > 0 and ev_days > 0 else 0
            if keep_ev > 0:
                self._drop_segments(
                    es.expired_segments(self.store, cam, now_ms - int(keep_ev * DAY_MS),
                                        event_footage=True, limit=100_000),
                    "age", stats,
                )  # fmt: skip
        for cam in es.event_cameras(self.store):
            days = cfg.events_days(cam)
            if days <= 0:
                continue
            while True:
                objs = es.expired_objects(self.store, cam, now_ms - int(days * DAY_MS), BATCH)
                if not objs:
                    break
                ids = [o.object_id for o in objs]
                for c, sid in es.snapshot_keys_of(self.store, ids):
                    try:
                        key = snapshot_key(sid)
                        size = self.media.size(key) or 0
                        if self.media.delete(key):
                            stats["snapshots"] += 1
                            DELETED.labels("snapshot", "age").inc()
                            DELETED_BYTES.labels("snapshot", "age").inc(size)
                            if self._snap_bytes is not None:
                                self._snap_bytes -= size
                    except (BadKey, MediaError) as exc:
                        log.warning(
                            "snapshot not deleted", extra={"camera_id": c, "error": str(exc)}
                        )
                es.delete_objects(self.store, ids)
                stats["events"] += len(ids)
                DELETED.labels("event", "age").inc(len(ids))
                log.info("events expired", extra={"camera_id": cam, "objects": len(ids),
                                                  "retain_days": days})  # fmt: skip

    # ------------------------------------------------------------------ size
    def _over(self) -> int:
        over = 0
        if self.config.max_bytes:
            over = self.usage() - self.config.max_bytes
        free = self.media.free_space()
        if free is not None and self.config.min_free_percent > 0:
            free_b, total = free
            over = max(over, int(total * self.config.min_free_percent / 100) - free_b)
        return over

    def _by_size(self, stats: dict[str, Any]) -> None:
        for event_footage in (False, True):
            over = self._over()
            while over > 0:
                segs = es.oldest_segments(self.store, event_footage=event_footage, limit=50)
                if not segs:
                    break
                take = []
                for s in segs:
                    take.append(s)
                    over -= s.bytes
                    if over <= 0:
                        break
                self._drop_segments(take, "size", stats)
                over = self._over()

    def _drop_segments(self, segs: list, reason: str, stats: dict[str, Any]) -> None:
        if not segs:
            return
        gone: list[int] = []
        per_cam: Tally[str] = Tally()
        for s in segs:
            try:
                self.media.delete(s.key)
            except (BadKey, MediaError) as exc:
                log.warning("segment not deleted", extra={"camera_id": s.camera_id,
                                                          "key": s.key, "error": str(exc)})  # fmt: skip
                continue
            gone.append(s.id)
            per_cam[s.camera_id] += 1
            kind = "event_segment" if s.event else "segment"
            DELETED.labels(kind, reason).inc()
            DELETED_BYTES.labels(kind, reason).inc(s.bytes)
            stats["segments"] += 1
            stats["bytes"] += s.bytes
        es.delete_segment_rows(self.store, gone)
        for cam, n in per_cam.items():
            log.info(
                "recordings deleted", extra={"camera_id": cam, "segments": n, "reason": reason}
            )
