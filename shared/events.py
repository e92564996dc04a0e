"""Consuming the ``events`` stream from an integration, at least once.

The stream is ``<prefix>stream:events`` (entries written by
:func:`shared.redisutil.publish_record`: fields ``type``, ``camera_id``, ``ts``,
``data`` = the JSON record).  :class:`EventConsumer` wraps a Redis consumer group:

* ``read()`` returns new entries (XREADGROUP ``>``) after first re-delivering this
  consumer's own unacknowledged ones (after a restart with the same name);
* ``ack()`` acknowledges what was handled (XACK);
* ``claim_stale()`` takes over entries another consumer read but never
  acknowledged (it died) once they are idle for ``min_idle_ms`` (XAUTOCLAIM).

Nothing is lost when a consumer dies between reading and acknowledging, as long as
the entry is still in the stream.  The stream is capped (``redis.events_maxlen``,
approximate MAXLEN): entries older than the newest ~``events_maxlen`` are trimmed,
acknowledged or not.  That is the retention window a consumer has (docs/events.md).
An entry trimmed while it was pending (delivered, not acknowledged) is never handed
out as an empty ``{id}`` record: it is acknowledged as lost, counted in
``sentri_events_lost_total`` and logged.
"""

from __future__ import annotations

import logging
from typing import Any

import redis
from prometheus_client import Counter

from shared.keys import STREAM_EVENTS, Keys
from shared.redisutil import parse_entry

log = logging.getLogger(__name__)

EVENTS_LOST = Counter(
    "sentri_events_lost_total",
    "Stream entries trimmed (MAXLEN) while delivered but not acknowledged, by group.",
    ["group"],
)


class EventConsumer:
    def __init__(
        self,
        r: redis.Redis,
        keys: Keys,
        group: str,
        consumer: str,
        *,
        stream: str = STREAM_EVENTS,
        start: str = "0",
    ) -> None:
        """``start``: where a new group begins: ``"0"`` = whole retained history,
        ``"$"`` = only events after the group is created."""
        self.r, self.group, self.consumer = r, group, consumer
        self.stream = keys.stream(stream)
        self._pending_first = True
        #: Entries lost to trimming that this consumer found (and acknowledged).
        self.lost = 0
        try:
            r.xgroup_create(self.stream, group, id=start, mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def read(self, count: int = 100, block_ms: int | None = 1000) -> list[dict[str, Any]]:
        """Entries to handle; each dict has the record plus its stream ``id``."""
        while self._pending_first:
            # Our own entries delivered before a restart and never acknowledged.
            res = self.r.xreadgroup(self.group, self.consumer, {self.stream: "0"}, count=count)
            entries = res[0][1] if res else []
            if not entries:
                self._pending_first = False
                break
            real = [(i, f) for i, f in entries if f]
            self._lose([i for i, f in entries if not f])  # trimmed while pending
            if real:
                return [parse_entry(i, f) for i, f in real]
        res = self.r.xreadgroup(
            self.group, self.consumer, {self.stream: ">"}, count=count, block=block_ms
        )
        return [parse_entry(i, f) for i, f in (res[0][1] if res else []) if f]

    def ack(self, *ids: str) -> int:
        return int(self.r.xack(self.stream, self.group, *ids)) if ids else 0

    def claim_stale(self, min_idle_ms: int = 30_000, count: int = 100) -> list[dict[str, Any]]:
        """Take over entries other consumers left unacknowledged for ``min_idle_ms``.

        Always scans from the start: claimed entries stop being idle, so repeated
        calls do not return them again and the XAUTOCLAIM cursor is not needed.
        Pending entries the stream already trimmed are acknowledged as lost first
        (Redis 6.2's XAUTOCLAIM would return them as empty, id-less entries)."""
        self.drop_trimmed()
        res = self.r.xautoclaim(
            self.stream, self.group, self.consumer, min_idle_time=min_idle_ms, start_id="0-0",
            count=count,
        )  # fmt: skip
        entries = res[1] if len(res) > 1 else []
        return [parse_entry(i, f) for i, f in entries if i and f]

    def drop_trimmed(self, batch: int = 1000) -> int:
        """Acknowledge (as lost) every pending entry of the group that MAXLEN trimmed."""
        first = self.r.xrange(self.stream, count=1)
        upper = f"({first[0][0]}" if first else "+"
        dropped = 0
        while True:
            pend = self.r.xpending_range(self.stream, self.group, "-", upper, batch)
            ids = [p["message_id"] for p in pend]
            if not ids:
                return dropped
            self._lose(ids)
            dropped += len(ids)

    def _lose(self, ids: list[str]) -> None:
        if not ids:
            return
        self.r.xack(self.stream, self.group, *ids)
        self.lost += len(ids)
        EVENTS_LOST.labels(self.group).inc(len(ids))
        log.warning(
            "events trimmed before they were acknowledged: lost (consumer too far behind "
            "the stream's retention, redis.events_maxlen)",
            extra={"group": self.group, "consumer": self.consumer, "lost": len(ids),
                   "first": ids[0], "last": ids[-1]},
        )  # fmt: skip

    def pending_count(self) -> int:
        info = self.r.xpending(self.stream, self.group)
        return int(info["pending"] if isinstance(info, dict) else info[0])
