"""``sentri notifier`` / ``python -m services.notifier``: events → MQTT and webhooks."""

from __future__ import annotations

import argparse
import logging
import sys

from services.notifier.config import SECTION, NotifierConfig
from services.notifier.service import Notifier
from shared.config import ConfigError
from shared.keys import Keys
from shared.metrics import start_metrics_server
from shared.redisutil import connect, redact_url
from shared.rules import RulesConfig, RulesStore
from shared.service import (
    add_service_options,
    config_error,
    load_service_config,
    prepare_service,
    run_until_signal,
)

log = logging.getLogger("services.notifier")
PROG = "sentri notifier"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Reads the Redis 'events' stream (consumer group, at least once, "
        "duplicates suppressed by event_id) and sends events to MQTT (with Home Assistant "
        "discovery) and to signed webhooks. Also writes the YAML 'rules:' zones and lines "
        "into Redis for cameras without rules there.",
        epilog="Settings: YAML sections 'notifier:', 'rules:', 'redis:', 'general:'; env "
        "SENTRI_NOTIFIER__MQTT__URL=mqtt://user:pass@host:1883, REDIS_URL. See docs/rules.md.",
    )
    add_service_options(p)
    p.add_argument("--mqtt-url", metavar="URL", help="Override notifier.mqtt.url.")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        loaded = load_service_config(
            args, {SECTION: NotifierConfig, "rules": RulesConfig},
            {SECTION: {"mqtt": {"url": args.mqtt_url}} if args.mqtt_url else None},
        )  # fmt: skip
        general, redis_cfg, cfg, rules_cfg = (
            loaded.general, loaded.redis, loaded.sections[SECTION], loaded.rules
        )  # fmt: skip
        prepare_service(PROG, general, redis_cfg)
    except ConfigError as exc:
        return config_error(PROG, exc)
    start_metrics_server(general.metrics_port)
    keys = Keys(redis_cfg.prefix)
    r = connect(redis_cfg.url)
    rb = connect(redis_cfg.url, decode=False)
    seeded = RulesStore(r, keys).seed(rules_cfg)
    if seeded:
        log.info("rules from the config file written to redis", extra={"cameras": seeded})

    notifier = Notifier(cfg, r, rb, keys)

    log.info(
        "notifier started",
        extra={"redis": redact_url(redis_cfg.url), "mqtt": bool(notifier.mqtt),
               "webhooks": len(cfg.webhooks), "group": cfg.group},
    )  # fmt: skip
    notifier.start()
    run_until_signal("notifier", notifier.run, notifier.stop_event.set, notifier.stop)
    log.info("notifier stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
