"""Token buckets, circuit breaker, daily budget (real Redis) and retry delays."""

from __future__ import annotations

import email.utils

import pytest

from services.analyst.limits import (
    CircuitBreaker,
    DailyBudget,
    TokenBucket,
    backoff_delay,
    parse_retry_after,
    retry_info_delay,
)


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_token_bucket_burst_then_steady_rate_and_refund():
    clock = FakeClock()
    bucket = TokenBucket(rate_per_s=0.5, burst=2, clock=clock)
    assert [bucket.try_acquire() for _ in range(3)] == [True, True, False]
    clock.t += 1.0  # half a token
    assert not bucket.try_acquire()
    clock.t += 1.0  # one token
    assert bucket.try_acquire() and not bucket.try_acquire()
    bucket.refund()
    assert bucket.try_acquire()
    clock.t += 3600  # never more than the burst
    assert [bucket.try_acquire() for _ in range(3)] == [True, True, False]


def test_breaker_opens_after_consecutive_failures_only():
    clock = FakeClock()
    states: list[str] = []
    breaker = CircuitBreaker(3, cooldown_s=10, clock=clock, on_change=states.append)
    for _ in range(2):
        assert breaker.allow()
        breaker.record_failure()
    assert breaker.allow()
    breaker.record_success()  # resets the count
    for _ in range(2):
        breaker.record_failure()
    assert breaker.state == "closed"
    breaker.record_failure()
    assert breaker.state == "open" and not breaker.allow()
    assert states == ["open"]


def test_breaker_half_open_admits_one_trial():
    clock = FakeClock()
    breaker = CircuitBreaker(1, cooldown_s=10, clock=clock)
    breaker.record_failure()
    clock.t += 9.9
    assert not breaker.allow()
    clock.t += 0.1
    assert breaker.state == "half_open"
    assert breaker.allow()  # the trial
    assert not breaker.allow()  # only one at a time
    breaker.record_failure()  # trial failed: open for another cool-down
    assert breaker.state == "open" and not breaker.allow()
    clock.t += 10
    assert breaker.allow()
    breaker.cancel()  # trial not made after all (e.g. rate limited): slot released
    assert breaker.allow()
    breaker.record_success()
    assert breaker.state == "closed" and breaker.allow() and breaker.allow()


def test_daily_budget_counts_per_utc_day_in_redis(r, keys):
    day = ["2026-11-24"]
    budget = DailyBudget(r, keys, limit=2, today=lambda: day[0])
    other_replica = DailyBudget(r, keys, limit=2, today=lambda: day[0])
    assert budget.remaining() == 2
    assert budget.try_spend() and other_replica.try_spend()
    assert not budget.try_spend() and not other_replica.try_spend()
    assert budget.remaining() == 0
    assert 0 < r.ttl(budget.key()) <= 2 * 86400
    day[0] = "2026-11-25"  # a new UTC day starts from zero
    assert budget.remaining() == 2 and budget.try_spend()
    assert DailyBudget(r, keys, limit=0).try_spend()  # 0 = unlimited
    assert DailyBudget(r, keys, limit=0).remaining() == -1


@pytest.mark.parametrize(
    "value, expected",
    [("3", 3.0), (" 0.5 ", 0.5), ("-4", 0.0), ("", None), (None, None), ("soon", None),
     ("nan", None), ("inf", None)],
)  # fmt: skip
def test_parse_retry_after_seconds(value, expected):
    assert parse_retry_after(value) == expected


def test_parse_retry_after_http_date():
    now = 1_800_000_000.0
    header = email.utils.formatdate(now + 30, usegmt=True)
    assert parse_retry_after(header, now=now) == pytest.approx(30, abs=1)
    past = email.utils.formatdate(now - 30, usegmt=True)
    assert parse_retry_after(past, now=now) == 0.0


def test_retry_info_delay_from_google_error_body():
    body = {
        "error": {
            "code": 429,
            "details": [
                {"@type": "type.googleapis.com/google.rpc.QuotaFailure"},
                {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "17s"},
            ],
        }
    }
    assert retry_info_delay(body) == 17.0
    assert (
        retry_info_delay({"error": {"details": [{"@type": "x.RetryInfo", "retryDelay": "1.5s"}]}})
        == 1.5
    )
    assert retry_info_delay({"error": {"details": "nope"}}) is None
    assert retry_info_delay("not a dict") is None


def test_backoff_grows_exponentially_with_bounded_jitter():
    lows = [backoff_delay(n, 1.0, 30.0, rng=lambda: 0.0) for n in range(7)]
    highs = [backoff_delay(n, 1.0, 30.0, rng=lambda: 1.0) for n in range(7)]
    assert lows == [0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 15.0]
    assert highs == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
