"""Reading trigger events from the ``events`` stream in a background thread.

Every replica reads every new event (plain XREAD, no consumer group: an analysis is
wanted by whichever replica owns the camera, and only that one acts).  Reading starts
at the stream's last entry when the listener starts (the same as ``$``, but resolved
once so no event is lost between start-up and the first blocking read) and follows
entry ids from then on, so a Redis reconnect does not skip events.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import redis

from services.analyst import metrics as m
from shared.keys import STREAM_EVENTS, Keys
from shared.logs import BurstLimiter
from shared.redisutil import connect, parse_entry

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
        self._stream = keys.stream(STREAM_EVENTS)
        self._on_event = on_event
        self._block_ms = block_ms
        self._batch = batch
        self._stop = threading.Event()
        self.ready = threading.Event()
        self._burst = BurstLimiter()
        self._thread = threading.Thread(target=self._run, name="analyst-events", daemon=True)
        self.last_id: str | None = None

    def start(self) -> EventListener:
        self._thread.start()
        return self

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        self._thread.join(timeout)
        self._r.close()

    def _start_id(self) -> str:
        newest = self._r.xrevrange(self._stream, count=1)
        return newest[0][0] if newest else "0-0"

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                if self.last_id is None:
                    self.last_id = self._start_id()
                    self.ready.set()
                resp = self._r.xread(
                    {self._stream: self.last_id}, count=self._batch, block=self._block_ms
                )
            except redis.RedisError as exc:
                ok, suppressed = self._burst.should_log("redis")
                if ok:
                    log.warning(
                        "cannot read events; retrying",
                        extra={"error": str(exc), "suppressed": suppressed},
                    )
                self._stop.wait(1.0)
                continue
            for _stream, entries in resp or ():
                for entry_id, fields in entries:
                    self.last_id = entry_id
                    try:
                        record = parse_entry(entry_id, fields)
                    except Exception as exc:  # a foreign writer's garbage must not stop us
                        m.EVENTS_SEEN.labels("invalid").inc()
                        ok, _ = self._burst.should_log("invalid")
                        if ok:
                            log.warning("unreadable event", extra={"error": str(exc)})
                        continue
                    try:
                        self._on_event(record)
                    except Exception:
                        ok, suppressed = self._burst.should_log("handler")
                        if ok:
                            log.exception(
                                "event handler failed",
                                extra={"event_id": entry_id, "suppressed": suppressed},
                            )
