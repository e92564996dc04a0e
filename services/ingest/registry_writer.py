"""Ordered, retried registry writes off the socket thread.

The control loop must never wait on Redis (frames keep flowing while Redis is
down), so registry writes are queued here and applied in order by one thread.
A write that fails with a Redis error is retried with backoff until it succeeds;
the backlog is bounded, the oldest writes are dropped (and counted) when full.
Writes submitted with a ``key`` (heartbeats) replace a still-queued write with the
same key, so an outage costs one queued heartbeat per agent, not one per second.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable

import redis

from services.ingest import metrics as m
from shared.logs import BurstLimiter

log = logging.getLogger(__name__)

Write = Callable[[], object]


class RegistryWriter:
    def __init__(
        self,
        *,
        max_backlog: int = 10_000,
        retry_min_s: float = 0.1,
        retry_max_s: float = 1.0,
        burst: BurstLimiter | None = None,
    ) -> None:
        self._queue: deque[list] = deque()  # [key, what, write]
        self._pending: dict[str, list] = {}
        self._max_backlog = max_backlog
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._busy = False
        self._retry_min_s = retry_min_s
        self._retry_max_s = retry_max_s
        self._burst = burst or BurstLimiter()
        self._thread: threading.Thread | None = None
        self.errors = 0
        self.dropped = 0
        self.applied = 0

    @property
    def backlog(self) -> int:
        with self._cond:
            return len(self._queue) + (1 if self._busy else 0)

    def queued(self) -> list[str]:
        """The names of the writes waiting, oldest first, without the one in flight
        (the head of the queue while a write is running or being retried)."""
        with self._cond:
            waiting = list(self._queue)[1:] if self._busy else list(self._queue)
            return [item[1] for item in waiting]

    def submit(self, what: str, write: Write, *, key: str | None = None) -> None:
        """Queue one write; ``what`` names it in logs; ``key`` makes it replaceable."""
        with self._cond:
            if key is not None and key in self._pending:
                self._pending[key][2] = write  # newer data, same place in the order
                return
            if len(self._queue) >= self._max_backlog:
                self._forget(self._queue.popleft())
                self.dropped += 1
                m.REGISTRY_DROPPED.inc()
                ok, suppressed = self._burst.should_log("registry_backlog_full")
                if ok:
                    log.warning(
                        "registry backlog full, dropping oldest write",
                        extra={"suppressed": suppressed},
                    )
            item = [key, what, write]
            self._queue.append(item)
            if key is not None:
                self._pending[key] = item
            m.REGISTRY_BACKLOG.set(len(self._queue))
            self._cond.notify()

    def _forget(self, item: list) -> None:
        if item[0] is not None and self._pending.get(item[0]) is item:
            del self._pending[item[0]]

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="ingest-registry", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)

    def wait_idle(self, timeout: float) -> bool:
        """Block until every queued write is applied (tests, shutdown)."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._queue and not self._busy, timeout)

    def _loop(self) -> None:
        delay = self._retry_min_s
        while not self._stop.is_set():
            with self._cond:
                while not self._queue and not self._stop.is_set():
                    self._cond.wait(0.5)
                if self._stop.is_set():
                    return
                item = self._queue[0]
                _key, what, write = item
                self._forget(item)  # from here on a new write with this key queues anew
                self._busy = True
            try:
                write()
            except redis.RedisError as exc:
                self.errors += 1
                m.REGISTRY_ERRORS.inc()
                ok, suppressed = self._burst.should_log("registry_redis_error")
                if ok:
                    log.warning(
                        "registry write failed, retrying",
                        extra={"write": what, "error": str(exc), "suppressed": suppressed},
                    )
                with self._cond:
                    self._busy = False
                    key = item[0]
                    if key is not None:
                        newer = self._pending.get(key)
                        if newer is not None and newer is not item:
                            # Queued while this one was in flight: its newer data takes
                            # the failed write's place, so a key never waits twice.
                            item[2] = newer[2]
                            for i, queued in enumerate(self._queue):  # by identity
                                if queued is newer:
                                    del self._queue[i]
                                    break
                        self._pending[key] = item  # newer writes may replace it again
                self._stop.wait(delay)
                delay = min(delay * 2, self._retry_max_s)
                continue
            except Exception:
                log.exception("registry write failed permanently", extra={"write": what})
            delay = self._retry_min_s
            with self._cond:
                # The head is still ours unless the backlog overflowed meanwhile.
                if self._queue and self._queue[0] is item:
                    self._queue.popleft()
                self._busy = False
                self.applied += 1
                m.REGISTRY_BACKLOG.set(len(self._queue))
                self._cond.notify_all()
