"""Following Redis streams: the one XREAD loop every reader uses (sync and asyncio).

Who uses it: the analyst's trigger listener (events), the gateway's websocket hub
(every result stream) and ingest's command reader (commands).  Consumer groups
(at-least-once, for integrations) are :mod:`shared.events`; this is the plain
"tail -f" of one or more streams.

API::

    follower = StreamFollower(r, {"events": keys.stream("events")})   # start="$"
    follower.run(handle, stop_event)          # blocks; handle(entry) per entry
    # or, step by step:
    for entry in follower.read():              # raises redis.RedisError
        entry.name, entry.id, entry.fields     # "events", "1700000000000-0", {...}
        entry.record()                         # the parsed JSON record (+ "id")

    follower = AsyncStreamFollower(ar, {...}) # same, with ``await follower.read()``
    await follower.run(handle, stopping=lambda: self._stopping)

Semantics, the same for both:

* ``start="$"`` means "entries added after the follower starts": the stream's
  current last id is resolved ONCE, on the first read, so no entry added between
  start-up and the first blocking read is missed (``ready`` is set then).  Pass
  ``start="0"`` for the whole retained history, or a dict of ids to resume.
* Positions advance per stream with every entry handed out, so a Redis error or
  reconnect resumes exactly after the last entry seen: nothing skipped, nothing
  repeated (unless the stream was trimmed past it, then the follower goes on from
  the oldest retained entry).
* ``run`` handles errors: a Redis error is logged once per burst and retried with
  backoff (0.1 s doubling to 5 s); an exception in ``handle`` is logged with its
  trace and the loop goes on with the next entry.
* Field values are ``str``; the record's JSON (``fields["data"]``) is only parsed
  when :meth:`StreamEntry.record` is called, so a forwarder need not decode it.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import redis
import redis.asyncio as aredis

from shared.logs import BurstLimiter
from shared.redisutil import parse_entry

log = logging.getLogger(__name__)

MIN_BACKOFF_S = 0.1
MAX_BACKOFF_S = 5.0


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


@dataclass(slots=True)
class StreamEntry:
    name: str  # the name the follower was given for the stream (e.g. "events")
    id: str
    fields: dict[str, str]

    def record(self) -> dict[str, Any]:
        """The entry's JSON record plus its stream ``id`` (:func:`parse_entry`)."""
        return parse_entry(self.id, self.fields)


class _FollowerBase:
    def __init__(
        self,
        streams: Mapping[str, str] | Iterable[str],
        *,
        start: str | Mapping[str, str] = "$",
        count: int = 200,
        block_ms: int = 1000,
        what: str = "streams",
        on_error: Callable[[BaseException], None] | None = None,
    ) -> None:
        if not isinstance(streams, Mapping):
            streams = {s: s for s in streams}
        #: name -> Redis key
        self.keys: dict[str, str] = dict(streams)
        self._names = {key: name for name, key in self.keys.items()}
        if isinstance(start, str):
            self.positions = dict.fromkeys(self.keys.values(), start)
        else:
            self.positions = {self.keys[n]: start.get(n, "$") for n in self.keys}
        self.count, self.block_ms, self.what = count, block_ms, what
        #: Called with each failed read's exception (e.g. to count it in a metric).
        self.on_error = on_error
        self.ready = threading.Event()
        self._burst = BurstLimiter()
        self._backoff = MIN_BACKOFF_S

    def _entries(self, resp: Any) -> list[StreamEntry]:
        out: list[StreamEntry] = []
        for key, entries in resp or ():
            key = _s(key)
            name = self._names[key]
            for entry_id, fields in entries:
                entry_id = _s(entry_id)
                self.positions[key] = entry_id
                if not fields:  # trimmed while being read (XREAD never does this)
                    continue
                out.append(StreamEntry(name, entry_id, {_s(k): _s(v) for k, v in fields.items()}))
        return out

    def _read_failed(self, exc: BaseException) -> float:
        if self.on_error is not None:
            self.on_error(exc)
        ok, suppressed = self._burst.should_log("redis")
        if ok:
            log.warning(
                "cannot read %s; retrying",
                self.what,
                extra={"error": str(exc), "suppressed": suppressed, "streams": ",".join(self.keys)},
            )
        delay = self._backoff
        self._backoff = min(self._backoff * 2, MAX_BACKOFF_S)
        return delay

    def _handler_failed(self, entry: StreamEntry) -> None:
        ok, suppressed = self._burst.should_log("handler")
        if ok:
            log.exception(
                "stream entry handler failed",
                extra={"stream": entry.name, "entry_id": entry.id, "suppressed": suppressed},
            )


class StreamFollower(_FollowerBase):
    """Follows Redis streams with XREAD BLOCK (a sync client, one thread)."""

    def __init__(self, r: redis.Redis, streams: Mapping[str, str] | Iterable[str], **kw: Any):
        super().__init__(streams, **kw)
        self.r = r

    def _resolve(self) -> None:
        for key, pos in self.positions.items():
            if pos == "$":
                newest = self.r.xrevrange(key, count=1)
                self.positions[key] = _s(newest[0][0]) if newest else "0-0"
        self.ready.set()

    def read(self, block_ms: int | None = None) -> list[StreamEntry]:
        """The next entries (waits up to ``block_ms``); raises ``redis.RedisError``."""
        if not self.ready.is_set():
            self._resolve()
        block = self.block_ms if block_ms is None else block_ms
        resp = self.r.xread(dict(self.positions), count=self.count, block=block or None)
        self._backoff = MIN_BACKOFF_S
        return self._entries(resp)

    def run(self, handle: Callable[[StreamEntry], None], stop: threading.Event) -> None:
        """Read and ``handle`` entries until ``stop`` is set (errors: see module doc)."""
        while not stop.is_set():
            try:
                entries = self.read()
            except redis.RedisError as exc:
                if stop.is_set():
                    return
                stop.wait(self._read_failed(exc))
                continue
            for entry in entries:
                try:
                    handle(entry)
                except Exception:
                    self._handler_failed(entry)


class AsyncStreamFollower(_FollowerBase):
    """Follows Redis streams with XREAD BLOCK on an asyncio client."""

    def __init__(self, r: aredis.Redis, streams: Mapping[str, str] | Iterable[str], **kw: Any):
        super().__init__(streams, **kw)
        self.r = r

    async def _resolve(self) -> None:
        for key, pos in self.positions.items():
            if pos == "$":
                newest = await self.r.xrevrange(key, count=1)
                self.positions[key] = _s(newest[0][0]) if newest else "0-0"
        self.ready.set()

    async def read(self, block_ms: int | None = None) -> list[StreamEntry]:
        if not self.ready.is_set():
            await self._resolve()
        block = self.block_ms if block_ms is None else block_ms
        resp = await self.r.xread(dict(self.positions), count=self.count, block=block or None)
        self._backoff = MIN_BACKOFF_S
        return self._entries(resp)

    async def run(
        self,
        handle: Callable[[StreamEntry], Awaitable[None] | None],
        stopping: Callable[[], bool],
    ) -> None:
        """Read and ``handle`` entries until ``stopping()`` is true.

        redis-py's asyncio client can turn a task cancellation into a
        ``ConnectionError``: hence ``stopping``, checked before treating an error
        as an outage.  Cancellation itself propagates.
        """
        while not stopping():
            try:
                entries = await self.read()
            except asyncio.CancelledError:
                raise
            except (redis.RedisError, OSError) as exc:
                if stopping():
                    return
                await asyncio.sleep(self._read_failed(exc))
                continue
            for entry in entries:
                try:
                    res = handle(entry)
                    if res is not None:
                        await res
                except asyncio.CancelledError:
                    raise
                except Exception:
                    self._handler_failed(entry)
