"""``sentri notifier`` / ``python -m services.notifier``: events → MQTT and webhooks."""

from __future__ import annotations

import argparse
import logging
import signal
import sys

from services.notifier.config import SECTION, NotifierConfig
from services.notifier.service import Notifier
from shared.config import ConfigError, GeneralConfig, RedisConfig, load_section
from shared.keys import Keys
from shared.logs import setup_logging
from shared.metrics import start_metrics_server
from shared.redisutil import connect, redact_url
from shared.rules import RulesConfig, RulesStore

log = logging.getLogger("services.notifier")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="sentri notifier",
        description="Reads the Redis 'events' stream (consumer group, at least once, "
        "duplicates suppressed by event_id) and sends events to MQTT (with Home Assistant "
        "discovery) and to signed webhooks. Also writes the YAML 'rules:' zones and lines "
        "into Redis for cameras without rules there.",
        epilog="Settings: YAML sections 'notifier:', 'rules:', 'redis:', 'general:'; env "
        "SENTRI_NOTIFIER__MQTT__URL=mqtt://user:pass@host:1883, REDIS_URL. See docs/rules.md.",
    )
    p.add_argument("--config", metavar="FILE", help="YAML config file (or SENTRI_CONFIG).")
    p.add_argument("--redis-url", metavar="URL", help="Redis URL (or REDIS_URL).")
    p.add_argument("--mqtt-url", metavar="URL", help="Override notifier.mqtt.url.")
    p.add_argument("--metrics-port", type=int, metavar="PORT", help="Prometheus port (0 = off).")
    p.add_argument("--log-level", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        general = load_section(
            GeneralConfig, "general", config_file=args.config,
            overrides={"log_level": args.log_level, "metrics_port": args.metrics_port},
        )  # fmt: skip
        redis_cfg = load_section(
            RedisConfig, "redis", config_file=args.config, overrides={"url": args.redis_url}
        )
        cfg = load_section(
            NotifierConfig, SECTION, config_file=args.config,
            overrides={"mqtt": {"url": args.mqtt_url}} if args.mqtt_url else None,
        )  # fmt: skip
        rules_cfg = load_section(RulesConfig, "rules", config_file=args.config)
    except ConfigError as exc:
        print(f"sentri notifier: {exc}", file=sys.stderr)
        return 2
    setup_logging("notifier", general.log_level, general.log_format)
    if not redis_cfg.url:
        print("sentri notifier: redis.url is required (REDIS_URL or --redis-url)", file=sys.stderr)
        return 2
    start_metrics_server(general.metrics_port)
    keys = Keys(redis_cfg.prefix)
    r = connect(redis_cfg.url)
    rb = connect(redis_cfg.url, decode=False)
    seeded = RulesStore(r, keys).seed(rules_cfg)
    if seeded:
        log.info("rules from the config file written to redis", extra={"cameras": seeded})

    notifier = Notifier(cfg, r, rb, keys)

    def on_signal(signum: int, _frame: object) -> None:
        notifier.stop_event.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    log.info(
        "notifier started",
        extra={"redis": redact_url(redis_cfg.url), "mqtt": bool(notifier.mqtt),
               "webhooks": len(cfg.webhooks), "group": cfg.group},
    )  # fmt: skip
    notifier.start()
    try:
        notifier.run()
    finally:
        notifier.stop()
        log.info("notifier stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
