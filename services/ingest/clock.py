"""Agent clock offsets, estimated from the frames themselves.

For every frame ingest knows two clocks: the agent's capture time (``header.ts``)
and its own receive time.  ``receive - capture`` is the agent's clock offset plus
the frame's transit and encode time; its minimum over a window is the best
estimate of the offset (the fastest frame carries the least delay).  Positive: the
agent's clock is behind ingest's; negative: ahead.

The window is two half-window buckets, so the estimate follows a clock that is
stepped (NTP correction) within one window, in O(1) memory per client.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass


@dataclass
class _Window:
    cur: int | None = None
    prev: int | None = None
    started: int = 0


class ClockOffsets:
    """Per-client offset estimates in nanoseconds (thread-safe)."""

    def __init__(self, window_s: float = 30.0) -> None:
        self.half_ns = int(window_s * 1e9 / 2)
        self._clients: dict[str, _Window] = {}
        self._lock = threading.Lock()

    def observe(self, client_id: str, rx_ns: int, ts_ns: int) -> None:
        delta = rx_ns - ts_ns
        with self._lock:
            w = self._clients.get(client_id)
            if w is None:
                w = self._clients[client_id] = _Window(started=rx_ns)
            if rx_ns - w.started >= self.half_ns:
                w.prev, w.cur, w.started = w.cur, None, rx_ns
            if w.cur is None or delta < w.cur:
                w.cur = delta

    def offset_s(self, client_id: str) -> float | None:
        with self._lock:
            w = self._clients.get(client_id)
            if w is None:
                return None
            vals = [v for v in (w.cur, w.prev) if v is not None]
        return min(vals) / 1e9 if vals else None

    def snapshot(self) -> dict[str, float]:
        with self._lock:
            ids = list(self._clients)
        out = {}
        for cid in ids:
            off = self.offset_s(cid)
            if off is not None:
                out[cid] = off
        return out

    def forget(self, client_id: str) -> None:
        with self._lock:
            self._clients.pop(client_id, None)
