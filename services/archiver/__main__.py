"""``sentri archiver`` / ``python -m services.archiver``: events stream → event store."""

from __future__ import annotations

import argparse
import logging
import time

from services.archiver.archiver import Archiver
from services.archiver.config import ArchiverConfig
from shared.config import ConfigError
from shared.eventstore import EventStore
from shared.keys import Keys
from shared.metrics import start_metrics_server
from shared.redisutil import connect, redact_url, wait_for_redis
from shared.service import (
    add_service_options,
    config_error,
    load_service_config,
    prepare_service,
    run_until_signal,
)
from shared.storage import MediaError, StorageConfig, open_media_store
from shared.storage.retention import Retention

log = logging.getLogger("services.archiver")
PROG = "sentri archiver"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Archives the Redis 'events' stream into the event store (SQLite under the "
        "state dir, or PostgreSQL via storage.database_url) through a consumer group, at least "
        "once, one row per tracked object; applies media retention (age and size).",
        epilog="Settings: YAML sections 'archiver:', 'storage:', 'redis:', 'general:' and env "
        "vars such as SENTRI_STORAGE__DATABASE_URL, SENTRI_STORAGE__MAX_BYTES, REDIS_URL.",
    )
    add_service_options(p)
    p.add_argument("--database-url", metavar="URL", help="Event store URL (storage.database_url).")
    p.add_argument("--consumer", metavar="NAME", help="Consumer name (archiver.consumer).")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        cfg = load_service_config(
            args, {"storage": StorageConfig, "archiver": ArchiverConfig},
            {"storage": {"database_url": args.database_url},
             "archiver": {"consumer": args.consumer}},
        )  # fmt: skip
        general, redis_cfg, storage, config = cfg.general, cfg.redis, cfg.storage, cfg.archiver
        prepare_service(PROG, general, redis_cfg)
    except ConfigError as exc:
        return config_error(PROG, exc)
    try:
        wait_for_redis(redis_cfg.url, timeout=30.0)
    except TimeoutError as exc:
        log.error("redis unreachable", extra={"error": str(exc)})
        return 1
    start_metrics_server(general.metrics_port)
    state_dir = general.state_dir
    try:
        media = open_media_store(storage, state_dir)
    except MediaError as exc:
        log.error("media store unavailable", extra={"error": str(exc)})
        return 1
    db_url = storage.db_url(state_dir)
    archiver = Archiver(
        connect(redis_cfg.url),
        connect(redis_cfg.url, decode=False),
        Keys(redis_cfg.prefix),
        lambda: EventStore(db_url),
        config,
        media,
    )
    last_retention = [0.0]
    retention: list[Retention] = []  # one, so its snapshot-usage cache lasts

    def retention_pass() -> None:
        now = time.monotonic()
        if archiver.store is None or now - last_retention[0] < storage.retention_interval_s:
            return
        last_retention[0] = now
        if not retention:
            retention.append(Retention(archiver.store, media, storage))
        retention[0].store = archiver.store  # reopened after a database outage
        stats = retention[0].run_once()
        if stats["segments"] or stats["events"]:
            log.info("retention pass", extra=stats)

    log.info(
        "archiver ready",
        extra={"redis": redact_url(redis_cfg.url), "consumer": config.consumer,
               "group": config.group, "media": media.kind},
    )  # fmt: skip

    def close() -> None:
        archiver.close()
        media.close()

    run_until_signal("archiver", lambda: archiver.run(on_idle=retention_pass), archiver.stop, close)
    log.info("archiver stopped", extra={"stored": archiver.stored})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
