"""``sentri analyst`` / ``python -m services.analyst``: run one analyst replica."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from typing import Any

from pydantic import ValidationError

from services.analyst.config import AnalystConfig, GeminiProviderConfig, OfflineProviderConfig
from services.analyst.processor import AnalystProcessor
from shared.config import (
    ConfigError,
    GeneralConfig,
    RedisConfig,
    WorkerConfig,
    format_validation_error,
    load_section,
)
from shared.logs import setup_logging
from shared.metrics import start_metrics_server
from shared.redisutil import redact_url, wait_for_redis
from shared.worker import WorkerRuntime

log = logging.getLogger("services.analyst")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="sentri analyst",
        description=(
            "Scene analysis worker: describes camera scenes with Gemini (google-genai) on "
            "trigger events and periodically while there is activity, rate limited, with "
            "a circuit breaker and a daily budget. Without GEMINI_API_KEY it writes "
            "clearly labelled offline summaries from the detections. Results go to the "
            "Redis 'analysis' stream and 'analysis' events."
        ),
        epilog=(
            "Settings come from the YAML file's 'analyst:', 'worker:', 'redis:' and "
            "'general:' sections and env vars such as SENTRI_ANALYST__MIN_INTERVAL_S=10, "
            "SENTRI_ANALYST__PROVIDER__TYPE=offline, SENTRI_ANALYST__PROVIDER__MODEL=..., "
            "GEMINI_API_KEY, REDIS_URL."
        ),
    )
    p.add_argument("--config", metavar="FILE", help="YAML config file (or SENTRI_CONFIG).")
    p.add_argument("--redis-url", metavar="URL", help="Redis URL (or REDIS_URL).")
    p.add_argument(
        "--ingest-pub", metavar="ENDPOINT", help="Ingest fan-out endpoint, e.g. tcp://host:5557."
    )
    p.add_argument("--replica-id", metavar="NAME", help="Replica name (default hostname-pid).")
    p.add_argument(
        "--provider", choices=("gemini", "offline"), help="Override analyst.provider.type."
    )
    p.add_argument("--model", metavar="NAME", help="Gemini model (default gemini-2.5-flash).")
    p.add_argument("--metrics-port", type=int, metavar="PORT", help="Prometheus port (0 = off).")
    p.add_argument("--log-level", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    return p


def load_configs(
    args: argparse.Namespace, env: dict[str, str] | None = None
) -> tuple[GeneralConfig, RedisConfig, WorkerConfig, AnalystConfig]:
    """All sections the analyst needs (raises ConfigError naming the bad field)."""
    kw: dict[str, Any] = {"config_file": args.config, "env": env}
    general = load_section(
        GeneralConfig,
        "general",
        overrides={"log_level": args.log_level, "metrics_port": args.metrics_port},
        **kw,
    )
    redis_cfg = load_section(RedisConfig, "redis", overrides={"url": args.redis_url}, **kw)
    worker = load_section(
        WorkerConfig,
        "worker",
        overrides={"ingest_pub": args.ingest_pub, "replica_id": args.replica_id},
        **kw,
    )
    analyst = load_section(AnalystConfig, "analyst", **kw)
    if args.provider == "offline" and analyst.provider.type != "offline":
        analyst.provider = OfflineProviderConfig()
    elif args.provider == "gemini" and analyst.provider.type != "gemini":
        analyst.provider = GeminiProviderConfig()
    if args.model:
        if not isinstance(analyst.provider, GeminiProviderConfig):
            raise ConfigError("--model needs the gemini provider")
        try:
            analyst.provider = GeminiProviderConfig.model_validate(
                {**analyst.provider.model_dump(), "model": args.model}
            )
        except ValidationError as exc:
            raise ConfigError(format_validation_error("analyst.provider", exc)) from None
    return general, redis_cfg, worker, analyst


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        general, redis_cfg, worker_cfg, analyst_cfg = load_configs(args)
    except ConfigError as exc:
        print(f"sentri analyst: {exc}", file=sys.stderr)
        return 2
    setup_logging("analyst", general.log_level, general.log_format)
    if not redis_cfg.url:
        print(
            "sentri analyst: no Redis: pass --redis-url or set REDIS_URL "
            "(`sentri up` starts a private one)",
            file=sys.stderr,
        )
        return 2
    try:
        wait_for_redis(redis_cfg.url, timeout=30)
    except TimeoutError as exc:
        log.error("redis unreachable", extra={"error": str(exc)})
        return 1

    processor = AnalystProcessor(analyst_cfg)
    runtime = WorkerRuntime(
        processor,
        redis_config=redis_cfg,
        worker_config=worker_cfg,
        default_enabled=analyst_cfg.process_by_default,
    )

    signalled = threading.Event()

    def _on_signal(signum: int, _frame: object) -> None:
        log.info("stopping", extra={"signal": signal.Signals(signum).name})
        signalled.set()
        runtime.stop_event.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    start_metrics_server(general.metrics_port)
    runtime.start()
    if runtime.ready.wait(max(5.0, 3 * worker_cfg.heartbeat_s)):
        log.info(
            "analyst ready",
            extra={
                "replica": runtime.replica_id,
                "provider": processor.provider.name,
                "model": processor.provider.model,
                "ingest_pub": worker_cfg.ingest_pub,
                "redis": redact_url(redis_cfg.url),
                "cameras": len(runtime.owned),
            },
        )
    else:
        log.warning(
            "not ready yet (redis slow?); continuing", extra={"replica": runtime.replica_id}
        )
    while not runtime.stop_event.wait(0.5):
        pass
    runtime.stop()
    log.info("analyst stopped", extra={"replica": runtime.replica_id})
    return 0 if signalled.is_set() else 1  # not asked to stop: a runtime thread failed


if __name__ == "__main__":
    raise SystemExit(main())
