"""Reading trigger events from the ``events`` stream in a background thread.

Every replica reads every new event (plain XREAD, no consumer group: an analysis is
wanted by whichever replica owns the camera, and only that one acts).  The reading
itself is :class:`shared.streams.StreamFollower` (from the stream's end at start-up,
then by entry id, so a Redis reconnect does not skip events).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from services.analyst import metrics as m
from shared.keys import STREAM_EVENTS, Keys
from shared.logs import BurstLimiter
from shared.redisutil import connect
from shared.streams import StreamEntry, StreamFollower

log = logging.getLogger(__name__)


class EventListener:
    """Calls ``on_event(record)`` for each new entry of the events stream."""

    def __init__(
        self,
        redis_url: str,
        keys: Keys,
        on_event: Callable[[dict[str, Any]], None],
        *,
        block_ms: int = 250,
        batch: int = 200,
    ) -> None:
        self._r = connect(redis_url)
        self._on_event = on_event
        self._stop = threading.Event()
        self._burst = BurstLimiter()
        self.follower = StreamFollower(
            self._r,
            {STREAM_EVENTS: keys.stream(STREAM_EVENTS)},
            block_ms=block_ms,
            count=batch,
            what="trigger events",
        )
        self.ready = self.follower.ready
        self._thread = threading.Thread(
            target=self.follower.run, args=(self._handle, self._stop), name="analyst-events",
            daemon=True,
        )  # fmt: skip

    def start(self) -> EventListener:
        self._thread.start()
        return self

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        self._thread.join(timeout)
        self._r.close()

    def _handle(self, entry: StreamEntry) -> None:
        try:
            record = entry.record()
        except Exception as exc:  # a foreign writer's garbage must not stop us
            m.EVENTS_SEEN.labels("invalid").inc()
            ok, _ = self._burst.should_log("invalid")
            if ok:
                log.warning("unreadable event", extra={"error": str(exc)})
            return
        self._on_event(record)
