"""``sentri recorder`` / ``python -m services.recorder``: run one recorder replica."""

from __future__ import annotations

import argparse
import logging

from services.recorder.config import RecorderConfig
from services.recorder.processor import RecorderProcessor
from shared.config import ConfigError
from shared.eventstore import EventStore
from shared.service import add_service_options, config_error, load_service_config, prepare_service
from shared.storage import MediaError, StorageConfig, open_media_store
from shared.worker import WorkerRuntime, serve_worker

log = logging.getLogger("services.recorder")
PROG = "sentri recorder"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Records this replica's share of the cameras as H.264 MP4 segments (~10 s, "
        "starting on keyframes) into the media store, indexed in the event store. Modes per "
        "camera: continuous, events (pre-/post-roll around events; the default), off.",
        epilog="Settings: YAML sections 'recorder:', 'storage:', 'worker:', 'redis:', 'general:' "
        "and env vars such as SENTRI_RECORDER__MODE=continuous, SENTRI_RECORDER__PRE_ROLL_S=5, "
        "SENTRI_STORAGE__BACKEND=s3, REDIS_URL.",
    )
    add_service_options(p, worker=True)
    p.add_argument("--mode", choices=("continuous", "events", "off"), help="Default mode.")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        cfg = load_service_config(
            args, {"recorder": RecorderConfig, "storage": StorageConfig},
            {"recorder": {"mode": args.mode}},
        )  # fmt: skip
        general, recorder, storage = cfg.general, cfg.recorder, cfg.storage
        prepare_service(PROG, general, cfg.redis)
    except ConfigError as exc:
        return config_error(PROG, exc)
    try:
        media = open_media_store(storage, general.state_dir)
    except MediaError as exc:
        log.error("media store unavailable", extra={"error": str(exc)})
        return 1
    db_url = storage.db_url(general.state_dir)
    processor = RecorderProcessor(recorder, media, lambda: EventStore(db_url))
    runtime = WorkerRuntime(processor, redis_config=cfg.redis, worker_config=cfg.worker)
    return serve_worker(
        runtime,
        name="recorder",
        metrics_port=general.metrics_port,
        ready_fields=lambda: {"mode": recorder.mode, "media": media.kind},
    )


if __name__ == "__main__":
    raise SystemExit(main())
