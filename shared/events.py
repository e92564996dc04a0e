"""Consuming the ``events`` stream from an integration, at least once.

The stream is ``<prefix>stream:events`` (entries written by
:func:`shared.redisutil.publish_record`: fields ``type``, ``camera_id``, ``ts``,
``data`` = the JSON record).  :class:`EventConsumer` wraps a Redis consumer group:

* ``read()`` returns new entries (XREADGROUP ``>``) after first re-delivering this
  consumer's own unacknowledged ones (after a restart with the same name);
* ``ack()`` acknowledges what was handled (XACK);
* ``claim_stale()`` takes over entries another consumer read but never
  acknowledged (it died) once they are idle for ``min_idle_ms`` (XAUTOCLAIM).

Nothing is lost when a consumer dies between reading and acknowledging.
"""

from __future__ import annotations

from typing import Any

import redis

from shared.keys import STREAM_EVENTS, Keys
from shared.redisutil import parse_entry


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
        try:
            r.xgroup_create(self.stream, group, id=start, mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def read(self, count: int = 100, block_ms: int | None = 1000) -> list[dict[str, Any]]:
        """Entries to handle; each dict has the record plus its stream ``id``."""
        if self._pending_first:
            # Our own entries delivered before a restart and never acknowledged.
            res = self.r.xreadgroup(self.group, self.consumer, {self.stream: "0"}, count=count)
            entries = res[0][1] if res else []
            if entries:
                return [parse_entry(i, f) for i, f in entries]
            self._pending_first = False
        res = self.r.xreadgroup(
            self.group, self.consumer, {self.stream: ">"}, count=count, block=block_ms
        )
        return [parse_entry(i, f) for i, f in (res[0][1] if res else [])]

    def ack(self, *ids: str) -> int:
        return int(self.r.xack(self.stream, self.group, *ids)) if ids else 0

    def claim_stale(self, min_idle_ms: int = 30_000, count: int = 100) -> list[dict[str, Any]]:
        """Take over entries other consumers left unacknowledged for ``min_idle_ms``.

        Always scans from the start: claimed entries stop being idle, so repeated
        calls do not return them again and the XAUTOCLAIM cursor is not needed."""
        res = self.r.xautoclaim(
            self.stream, self.group, self.consumer, min_idle_time=min_idle_ms, start_id="0-0",
            count=count,
        )  # fmt: skip
        entries = res[1] if len(res) > 1 else []
        return [parse_entry(i, f) for i, f in entries if f]

    def pending_count(self) -> int:
        info = self.r.xpending(self.stream, self.group)
        return int(info["pending"] if isinstance(info, dict) else info[0])
