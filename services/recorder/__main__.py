"""``sentri recorder`` / ``python -m services.recorder``: run one recorder replica."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

from services.recorder.config import RecorderConfig
from services.recorder.processor import RecorderProcessor
from shared.config import ConfigError, GeneralConfig, RedisConfig, WorkerConfig, load_section
from shared.eventstore import EventStore
from shared.logs import setup_logging
from shared.storage import MediaError, StorageConfig, open_media_store
from shared.worker import WorkerRuntime, serve_worker

log = logging.getLogger("services.recorder")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="sentri recorder",
        description="Records this replica's share of the cameras as H.264 MP4 segments (~10 s, "
        "starting on keyframes) into the media store, indexed in the event store. Modes per "
        "camera: continuous, events (pre-/post-roll around events; the default), off.",
        epilog="Settings: YAML sections 'recorder:', 'storage:', 'worker:', 'redis:', 'general:' "
        "and env vars such as SENTRI_RECORDER__MODE=continuous, SENTRI_RECORDER__PRE_ROLL_S=5, "
        "SENTRI_STORAGE__BACKEND=s3, REDIS_URL.",
    )
    p.add_argument("--config", metavar="FILE", help="YAML config file (or SENTRI_CONFIG).")
    p.add_argument("--redis-url", metavar="URL", help="Redis URL (or REDIS_URL).")
    p.add_argument("--ingest-pub", metavar="ENDPOINT", help="Ingest fan-out endpoint.")
    p.add_argument("--replica-id", metavar="NAME", help="Replica name (default hostname-pid).")
    p.add_argument("--mode", choices=("continuous", "events", "off"), help="Default mode.")
    p.add_argument("--metrics-port", type=int, metavar="PORT", help="Prometheus port (0 = off).")
    p.add_argument("--log-level", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    kw: dict[str, Any] = {"config_file": args.config}
    try:
        general = load_section(
            GeneralConfig, "general",
            overrides={"log_level": args.log_level, "metrics_port": args.metrics_port}, **kw,
        )  # fmt: skip
        redis_cfg = load_section(RedisConfig, "redis", overrides={"url": args.redis_url}, **kw)
        worker = load_section(
            WorkerConfig, "worker",
            overrides={"ingest_pub": args.ingest_pub, "replica_id": args.replica_id}, **kw,
        )  # fmt: skip
        recorder = load_section(RecorderConfig, "recorder", overrides={"mode": args.mode}, **kw)
        storage = load_section(StorageConfig, "storage", **kw)
    except ConfigError as exc:
        print(f"sentri recorder: {exc}", file=sys.stderr)
        return 2
    setup_logging("recorder", general.log_level, general.log_format)
    if not redis_cfg.url:
        log.error("redis.url is required (set REDIS_URL or --redis-url)")
        return 2
    try:
        media = open_media_store(storage, general.state_dir)
    except MediaError as exc:
        log.error("media store unavailable", extra={"error": str(exc)})
        return 1
    db_url = storage.db_url(general.state_dir)
    processor = RecorderProcessor(recorder, media, lambda: EventStore(db_url))
    runtime = WorkerRuntime(processor, redis_config=redis_cfg, worker_config=worker)
    return serve_worker(
        runtime,
        name="recorder",
        metrics_port=general.metrics_port,
        ready_fields=lambda: {"mode": recorder.mode, "media": media.kind},
    )


if __name__ == "__main__":
    raise SystemExit(main())
