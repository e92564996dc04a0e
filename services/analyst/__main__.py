"""``sentri analyst`` / ``python -m services.analyst``: run one analyst replica."""

from __future__ import annotations

import argparse
import logging
import sys

from pydantic import ValidationError

from services.analyst.config import AnalystConfig, GeminiProviderConfig, OfflineProviderConfig
from services.analyst.processor import AnalystProcessor
from shared.config import (
    ConfigError,
    GeneralConfig,
    RedisConfig,
    WorkerConfig,
    format_validation_error,
    load_config,
)
from shared.logs import setup_logging
from shared.worker import WorkerRuntime, serve_worker

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
    cfg = load_config(
        {"general": GeneralConfig, "redis": RedisConfig, "worker": WorkerConfig,
         "analyst": AnalystConfig},
        config_file=args.config,
        env=env,
        overrides={
            "general": {"log_level": args.log_level, "metrics_port": args.metrics_port},
            "redis": {"url": args.redis_url},
            "worker": {"ingest_pub": args.ingest_pub, "replica_id": args.replica_id},
        },
    )  # fmt: skip
    general, redis_cfg, worker, analyst = cfg.general, cfg.redis, cfg.worker, cfg.analyst
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
    processor = AnalystProcessor(analyst_cfg)
    runtime = WorkerRuntime(
        processor,
        redis_config=redis_cfg,
        worker_config=worker_cfg,
        default_enabled=analyst_cfg.process_by_default,
    )
    return serve_worker(
        runtime,
        name="analyst",
        metrics_port=general.metrics_port,
        ready_fields=lambda: {
            "provider": processor.provider.name,
            "model": processor.provider.model,
        },
        ready_timeout=5.0,
    )


if __name__ == "__main__":
    raise SystemExit(main())
