"""What every service process's command line shares: options, settings, signals.

``sentri archiver``, ``notifier``, ``recorder`` and ``analyst`` take the same
``--config``/``--redis-url``/``--metrics-port``/``--log-level`` options (workers also
``--ingest-pub``/``--replica-id``), load their sections in one go, refuse to start
without Redis, and stop cleanly on SIGTERM/SIGINT.  Worker processes then hand over
to :func:`shared.worker.serve_worker`; the stream consumers (archiver, notifier) to
:func:`run_until_signal`.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel

from shared.config import (
    ConfigError,
    GeneralConfig,
    RedisConfig,
    RootConfig,
    WorkerConfig,
    load_config,
)
from shared.logs import setup_logging

log = logging.getLogger(__name__)

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def add_service_options(p: argparse.ArgumentParser, *, worker: bool = False) -> None:
    """The options every service takes (``worker``: also the fan-out and replica name)."""
    p.add_argument("--config", metavar="FILE", help="YAML config file (or SENTRI_CONFIG).")
    p.add_argument("--redis-url", metavar="URL", help="Redis URL (or REDIS_URL).")
    if worker:
        p.add_argument(
            "--ingest-pub",
            metavar="ENDPOINT",
            help="Ingest fan-out endpoint, e.g. tcp://host:5557.",
        )
        p.add_argument("--replica-id", metavar="NAME", help="Replica name (default hostname-pid).")
    p.add_argument("--metrics-port", type=int, metavar="PORT", help="Prometheus port (0 = off).")
    p.add_argument("--log-level", choices=LOG_LEVELS)


def load_service_config(
    args: argparse.Namespace,
    sections: dict[str, type[BaseModel]],
    overrides: dict[str, dict[str, Any] | None] | None = None,
    env: dict[str, str] | None = None,
) -> RootConfig:
    """``general``, ``redis`` (+ ``worker`` when the parser has the worker options) and
    ``sections``, with the common options applied.  Raises :class:`ConfigError`."""
    models: dict[str, type[BaseModel]] = {"general": GeneralConfig, "redis": RedisConfig}
    common: dict[str, dict[str, Any] | None] = {
        "general": {"log_level": args.log_level, "metrics_port": args.metrics_port},
        "redis": {"url": args.redis_url},
    }
    if hasattr(args, "ingest_pub"):
        models["worker"] = WorkerConfig
        common["worker"] = {"ingest_pub": args.ingest_pub, "replica_id": args.replica_id}
    models.update(sections)
    return load_config(
        models, config_file=args.config, env=env, overrides={**common, **(overrides or {})}
    )


def prepare_service(prog: str, general: GeneralConfig, redis_cfg: RedisConfig) -> None:
    """Refuse to start without Redis (:class:`ConfigError`); set up logging."""
    if not redis_cfg.url:
        raise ConfigError(
            "redis.url is required: pass --redis-url or set REDIS_URL "
            "(`sentri up` starts a private Redis)"
        )
    setup_logging(prog.removeprefix("sentri "), general.log_level, general.log_format)


def config_error(prog: str, exc: ConfigError) -> int:
    """One line on stderr, exit code 2."""
    print(f"{prog}: {exc}", file=sys.stderr)
    return 2


def run_until_signal(
    name: str, run: Callable[[], None], stop: Callable[[], None], close: Callable[[], None]
) -> int:
    """Run ``run()`` until it returns; SIGTERM/SIGINT call ``stop()``; ``close()`` always."""

    def on_signal(signum: int, _frame: object) -> None:
        log.info("stopping", extra={"service": name, "signal": signal.Signals(signum).name})
        stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        run()
    finally:
        close()
    return 0
