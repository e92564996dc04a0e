"""What keeps the analyst from overrunning the model API (and the bill).

* :class:`TokenBucket` – steady rate with a burst, one global and one per camera.
* :class:`CircuitBreaker` – after N consecutive failures stop calling for a
  cool-down, then let one trial request through (half-open).
* :class:`DailyBudget` – requests per UTC day, counted in Redis so every replica
  shares it.
* :func:`backoff_delay`, :func:`parse_retry_after`, :func:`retry_info_delay` – how
  long to wait before a retry.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import math
import random
import re
import threading
import time
from collections.abc import Callable
from typing import Any

import redis

from shared.keys import Keys

Clock = Callable[[], float]


class TokenBucket:
    """``rate_per_s`` tokens per second, holding at most ``burst``; starts full."""

    def __init__(self, rate_per_s: float, burst: int, clock: Clock = time.monotonic) -> None:
        if rate_per_s <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self.rate = rate_per_s
        self.burst = float(burst)
        self._clock = clock
        self._tokens = float(burst)
        self._stamp = clock()
        self._lock = threading.Lock()

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now

    def try_acquire(self) -> bool:
        with self._lock:
            self._refill()
            if self._tokens >= 1.0:
                self._tokens -= 1.0
                return True
            return False

    def refund(self) -> None:
        """Give back a token taken for a request that was then not made."""
        with self._lock:
            self._tokens = min(self.burst, self._tokens + 1.0)

    @property
    def tokens(self) -> float:
        with self._lock:
            self._refill()
            return self._tokens


class CameraBuckets:
    """One :class:`TokenBucket` per camera, created on first use."""

    def __init__(self, rate_per_s: float, burst: int, clock: Clock = time.monotonic) -> None:
        self.rate, self.burst, self._clock = rate_per_s, burst, clock
        self._buckets: dict[str, TokenBucket] = {}
        self._lock = threading.Lock()

    def get(self, camera_id: str) -> TokenBucket:
        with self._lock:
            bucket = self._buckets.get(camera_id)
            if bucket is None:
                bucket = self._buckets[camera_id] = TokenBucket(self.rate, self.burst, self._clock)
            return bucket

    def forget(self, keep: set[str] | frozenset[str]) -> None:
        with self._lock:
            for cam in [c for c in self._buckets if c not in keep]:
                del self._buckets[cam]


class CircuitBreaker:
    """closed → (``threshold`` consecutive failures) → open → (``cooldown_s``) → half-open.

    Half-open admits a single trial request: its success closes the circuit, its
    failure opens it again for another cool-down.
    """

    CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"
    GAUGE = {CLOSED: 0, OPEN: 1, HALF_OPEN: 2}

    def __init__(
        self,
        threshold: int,
        cooldown_s: float,
        clock: Clock = time.monotonic,
        on_change: Callable[[str], None] | None = None,
    ) -> None:
        self.threshold = threshold
        self.cooldown_s = cooldown_s
        self._clock = clock
        self._on_change = on_change
        self._state = self.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._trial_in_flight = False
        self._lock = threading.Lock()

    def _set(self, state: str) -> None:
        if state != self._state:
            self._state = state
            if self._on_change is not None:
                self._on_change(state)

    @property
    def state(self) -> str:
        with self._lock:
            if self._state == self.OPEN and self._clock() - self._opened_at >= self.cooldown_s:
                self._set(self.HALF_OPEN)
            return self._state

    def allow(self) -> bool:
        """May a request be made now?  In half-open this reserves the one trial."""
        with self._lock:
            if self._state == self.OPEN:
                if self._clock() - self._opened_at < self.cooldown_s:
                    return False
                self._set(self.HALF_OPEN)
            if self._state == self.HALF_OPEN:
                if self._trial_in_flight:
                    return False
                self._trial_in_flight = True
            return True

    def cancel(self) -> None:
        """The allowed request was not made after all (release a half-open trial)."""
        with self._lock:
            self._trial_in_flight = False

    def record_success(self) -> None:
        with self._lock:
            self._failures = 0
            self._trial_in_flight = False
            self._set(self.CLOSED)

    def record_failure(self) -> None:
        with self._lock:
            self._trial_in_flight = False
            self._failures += 1
            if self._state == self.HALF_OPEN or self._failures >= self.threshold:
                self._opened_at = self._clock()
                self._set(self.OPEN)

    @property
    def consecutive_failures(self) -> int:
        with self._lock:
            return self._failures


class DailyBudget:
    """At most ``limit`` requests per UTC day across replicas (``limit`` 0 = unlimited).

    The counter lives at ``<prefix>analyst:budget:<YYYY-MM-DD>`` and expires two days
    later.  :meth:`try_spend` increments first and compares, so concurrent replicas
    can never overspend together.
    """

    def __init__(
        self,
        r: redis.Redis,
        keys: Keys,
        limit: int,
        today: Callable[[], str] | None = None,
    ) -> None:
        self.r, self.keys, self.limit = r, keys, limit
        self._today = today or (lambda: dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d"))

    def key(self, day: str | None = None) -> str:
        return self.keys.analyst_budget(day or self._today())

    def try_spend(self) -> bool:
        if self.limit <= 0:
            return True
        key = self.key()
        pipe = self.r.pipeline(transaction=True)
        pipe.incr(key)
        pipe.expire(key, 2 * 86400)
        used = int(pipe.execute()[0])
        return used <= self.limit

    def used(self) -> int:
        raw = self.r.get(self.key())
        return int(raw) if raw else 0

    def remaining(self) -> int:
        """Requests left today; -1 when unlimited."""
        if self.limit <= 0:
            return -1
        return max(0, self.limit - self.used())


def backoff_delay(
    retry: int, base_s: float, max_s: float, rng: Callable[[], float] = random.random
) -> float:
    """Exponential backoff with "equal jitter": half fixed, half random.

    ``retry`` counts from 0 (the first retry waits between base/2 and base).
    """
    ceiling = min(max_s, base_s * (2**retry))
    return ceiling / 2 + ceiling / 2 * rng()


def parse_retry_after(value: Any, now: float | None = None) -> float | None:
    """Seconds from a Retry-After header: delta-seconds (decimals tolerated) or an
    HTTP-date.  None for absent or garbage values; never negative."""
    if value is None:
        return None
    text = str(value).strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None:
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=dt.timezone.utc)
        now = time.time() if now is None else now
        return max(0.0, when.timestamp() - now)
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)s\s*$")


def retry_info_delay(details: Any) -> float | None:
    """``retryDelay`` of a google.rpc.RetryInfo in an API error body (e.g. ``"17s"``)."""
    if not isinstance(details, dict):
        return None
    error = details.get("error", details)
    items = error.get("details") if isinstance(error, dict) else None
    if not isinstance(items, list):
        return None
    for item in items:
        if isinstance(item, dict) and str(item.get("@type", "")).endswith("RetryInfo"):
            m = _DURATION.match(str(item.get("retryDelay", "")))
            if m:
                return float(m.group(1))
    return None
