"""Redis client and server bounds: no call hangs forever, memory is bounded and the
streams are never evicted (issue 12, items 1 and 2)."""

from __future__ import annotations

import signal
import socket
import threading
import time

import pytest
import redis

from shared.config import ConfigError, RedisConfig, load_section
from shared.redisutil import (
    EmbeddedRedis,
    connect,
    connect_async,
    memory_bound_problems,
    wait_for_redis,
)


def _run_bounded(fn, limit: float):
    """Run ``fn`` in a thread; fail (instead of hanging the suite) if it is not done in
    ``limit`` seconds.  Returns (result or exception, elapsed)."""
    box: dict[str, object] = {}

    def target() -> None:
        t0 = time.monotonic()
        try:
            box["result"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed back to the test
            box["result"] = exc
        box["elapsed"] = time.monotonic() - t0

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(limit)
    assert not t.is_alive(), f"call still blocked after {limit}s (no timeout honoured)"
    return box["result"], box["elapsed"]


@pytest.fixture
def silent_listener():
    """A TCP server that accepts connections and never answers a byte."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def loop() -> None:
        srv.settimeout(0.1)
        while not stop.is_set():
            try:
                accepted.append(srv.accept()[0])
            except OSError:
                continue

    t = threading.Thread(target=loop, daemon=True)
    t.start()
    yield srv.getsockname()[1]
    stop.set()
    t.join(2)
    for c in accepted:
        c.close()
    srv.close()


def test_wait_for_redis_honours_its_deadline_against_a_silent_server(silent_listener) -> None:
    url = f"redis://:pw@127.0.0.1:{silent_listener}/0"
    result, elapsed = _run_bounded(lambda: wait_for_redis(url, timeout=1), limit=15)
    assert isinstance(result, TimeoutError), result
    # The deadline is 1 s; allow generous scheduling slack on a busy box, but far less
    # than one default socket timeout times the default retries.
    assert elapsed < 4, elapsed


def test_a_call_to_a_stopped_redis_times_out(tmp_path) -> None:
    with EmbeddedRedis(tmp_path / "r") as server:
        r = connect(server.url, socket_timeout=1.0)
        assert r.ping()
        server.proc.send_signal(signal.SIGSTOP)
        try:
            result, elapsed = _run_bounded(lambda: r.set("k", "v"), limit=20)
            assert isinstance(result, redis.TimeoutError), result
            # One socket timeout, not one per retry: timeouts are not retried (the
            # command may have run; a stalled server would multiply the wait).
            assert elapsed < 3.5, elapsed
        finally:
            server.proc.send_signal(signal.SIGCONT)
        # Once Redis runs again, the same client works again by itself.
        assert r.set("k", "v") and r.get("k") == "v"
        r.close()


def test_embedded_redis_is_bounded_and_never_evicts_streams(tmp_path) -> None:
    with EmbeddedRedis(tmp_path / "r") as server:
        r = connect(server.url)
        assert r.config_get("maxmemory")["maxmemory"] == str(1024**3)
        assert r.config_get("maxmemory-policy")["maxmemory-policy"] == "noeviction"
        # Fill it: writes fail loudly with OOM, nothing already stored is evicted.
        r.config_set("maxmemory", str(int(r.info("memory")["used_memory"]) + 2_000_000))
        blob = "x" * 20_000
        written = 0
        with pytest.raises(redis.ResponseError, match="maxmemory"):
            for _ in range(10_000):
                r.xadd("s", {"data": blob})
                written += 1
        assert written > 10
        assert r.xlen("s") == written
        r.close()


def test_embedded_redis_memory_settings_are_configurable(tmp_path) -> None:
    with EmbeddedRedis(tmp_path / "r", maxmemory="64mb", maxmemory_policy="volatile-lru") as s:
        r = connect(s.url)
        assert r.config_get("maxmemory")["maxmemory"] == str(64 * 1024**2)
        assert r.config_get("maxmemory-policy")["maxmemory-policy"] == "volatile-lru"
        r.close()
    with pytest.raises(ValueError, match="evict streams"):
        EmbeddedRedis(tmp_path / "x", maxmemory_policy="allkeys-lru")


def test_config_refuses_a_policy_that_evicts_streams(monkeypatch) -> None:
    monkeypatch.setenv("SENTRI_REDIS__MAXMEMORY_POLICY", "allkeys-lru")
    with pytest.raises(ConfigError, match="maxmemory_policy"):
        load_section(RedisConfig, "redis")
    monkeypatch.setenv("SENTRI_REDIS__MAXMEMORY_POLICY", "volatile-ttl")
    monkeypatch.setenv("SENTRI_REDIS__MAXMEMORY", "2gb")
    cfg = load_section(RedisConfig, "redis")
    assert (cfg.maxmemory, cfg.maxmemory_policy) == ("2gb", "volatile-ttl")


def test_memory_bound_problems_of_an_external_server(tmp_path) -> None:
    with EmbeddedRedis(tmp_path / "r") as server:
        r = connect(server.url)
        assert memory_bound_problems(r) == []
        r.config_set("maxmemory", "0")
        r.config_set("maxmemory-policy", "allkeys-lru")
        problems = memory_bound_problems(r)
        assert any("unbounded" in p for p in problems)
        assert any("allkeys-lru can evict streams" in p for p in problems)
        r.close()


def test_async_client_call_to_a_silent_server_times_out(silent_listener) -> None:
    import asyncio

    async def ping() -> object:
        r = connect_async(f"redis://:pw@127.0.0.1:{silent_listener}/0", socket_timeout=0.5)
        try:
            return await r.ping()
        finally:
            await r.aclose()

    result, _ = _run_bounded(lambda: asyncio.run(ping()), limit=20)
    assert isinstance(result, redis.TimeoutError), result
