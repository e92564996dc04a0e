"""Structured logging: one line per record, key=value (logfmt) or JSON.

Use ``log.info("frame dropped", extra={"camera_id": cam, "reason": r})``; the
extras become fields.  :class:`BurstLimiter` logs bad input once per burst.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time

_STD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}


def _fmt_value(v: object) -> str:
    s = str(v)
    if not s or any(c in s for c in ' "=\n'):
        return json.dumps(s)
    return s


class LogfmtFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(record.created))
        parts = [
            f"ts={ts}.{int(record.msecs):03d}",
            f"level={record.levelname.lower()}",
            f"service={self.service}",
            f"logger={record.name}",
            f"msg={_fmt_value(record.getMessage())}",
        ]
        for k, v in record.__dict__.items():
            if k not in _STD and not k.startswith("_"):
                parts.append(f"{k}={_fmt_value(v)}")
        if record.exc_info:
            parts.append(f"exc={_fmt_value(self.formatException(record.exc_info))}")
        return " ".join(parts)


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        d = {
            "ts": record.created,
            "level": record.levelname.lower(),
            "service": self.service,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for k, v in record.__dict__.items():
            if k not in _STD and not k.startswith("_"):
                d[k] = v if isinstance(v, (int, float, bool, type(None))) else str(v)
        if record.exc_info:
            d["exc"] = self.formatException(record.exc_info)
        return json.dumps(d)


def setup_logging(service: str, level: str = "INFO", fmt: str = "logfmt") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service) if fmt == "json" else LogfmtFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("urllib3", "httpx", "httpcore", "asyncio", "PIL", "google_genai"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level)))


class BurstLimiter:
    """Allow one log line per key per ``interval`` seconds; count the suppressed ones."""

    def __init__(self, interval: float = 10.0) -> None:
        self.interval = interval
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}
        self._lock = threading.Lock()

    def should_log(self, key: str) -> tuple[bool, int]:
        """Returns (log now?, how many were suppressed since the last line)."""
        now = time.monotonic()
        with self._lock:
            last = self._last.get(key)
            if last is None or now - last >= self.interval:
                self._last[key] = now
                return True, self._suppressed.pop(key, 0)
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return False, 0
