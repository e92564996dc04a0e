"""``sentri analyst`` / ``python -m services.analyst``: run one analyst replica."""

from __future__ import annotations

import argparse
import logging

from pydantic import ValidationError

from services.analyst.config import AnalystConfig, GeminiProviderConfig, OfflineProviderConfig
from services.analyst.processor import AnalystProcessor
from shared.config import (
    ConfigError,
    GeneralConfig,
    RedisConfig,
    WorkerConfig,
    format_validation_error,
)
from shared.service import add_service_options, config_error, load_service_config, prepare_service
from shared.worker import WorkerRuntime, serve_worker

log = logging.getLogger("services.analyst")
PROG = "sentri analyst"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
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
    add_service_options(p, worker=True)
    p.add_argument(
        "--provider", choices=("gemini", "offline"), help="Override analyst.provider.type."
    )
    p.add_argument("--model", metavar="NAME", help="Gemini model (default gemini-2.5-flash).")
    return p


def load_configs(
    args: argparse.Namespace, env: dict[str, str] | None = None
) -> tuple[GeneralConfig, RedisConfig, WorkerConfig, AnalystConfig]:
    """All sections the analyst needs (raises ConfigError naming the bad field)."""
    cfg = load_service_config(args, {"analyst": AnalystConfig}, env=env)
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
        prepare_service(PROG, general, redis_cfg)
    except ConfigError as exc:
        return config_error(PROG, exc)
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
