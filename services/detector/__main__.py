"""``python -m services.detector`` / ``sentri detector``: the detection worker.

sentri detector [run] [--config FILE] [--redis-url URL] [--backend onnx] ...
sentri detector export [--format onnx] [--model yolo11n.pt] [--imgsz 640]
sentri models export ...        (same as ``detector export``)
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

from services.detector.config import SECTION, DetectorConfig
from shared.config import (
    ConfigError,
    GeneralConfig,
    RedisConfig,
    WorkerConfig,
    load_section,
)

log = logging.getLogger("services.detector")

COMMANDS = ("run", "export")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="FILE", help="YAML config (also SENTRI_CONFIG)")
    p.add_argument("--model", help="weights path or name (detector.model)")
    p.add_argument("--imgsz", type=int, help="inference size, multiple of 32 (detector.imgsz)")
    p.add_argument("--state-dir", help="model cache and state directory (general.state_dir)")
    p.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sentri detector",
        description="YOLO object detection + per-camera tracking worker. Subscribes to "
        "ingest's frame fan-out for the cameras this replica owns, publishes to the "
        "Redis 'detections' and 'events' streams. Start several replicas to scale: "
        "cameras are sharded between them.",
        epilog="Options: `sentri detector run --help`, `sentri detector export --help`. "
        "Every option is also settable in the YAML file or with environment "
        "variables SENTRI_DETECTOR__<FIELD> (e.g. SENTRI_DETECTOR__CONFIDENCE=0.4), "
        "SENTRI_WORKER__<FIELD> and REDIS_URL. `run` is the default command.",
    )
    sub = parser.add_subparsers(dest="command", metavar="{run,export}")
    run = sub.add_parser("run", help="run the worker (default)")
    _common(run)
    run.add_argument("--redis-url", metavar="URL", help="Redis URL (also REDIS_URL)")
    run.add_argument("--ingest-pub", metavar="ENDPOINT", help="ingest fan-out, tcp://host:5557")
    run.add_argument("--replica-id", help="replica name (default: detector-<host>-<pid>-<rand>)")
    run.add_argument(
        "--backend", choices=["torch", "onnx", "openvino", "auto"], help="detector.backend.type"
    )
    run.add_argument("--device", help="cpu, cuda or cuda:N (detector.device)")
    run.add_argument("--metrics-port", type=int, help="Prometheus port (general.metrics_port)")
    exp = sub.add_parser(
        "export",
        help="export the model for fast CPU inference (cached in <state_dir>/models)",
        description="Export the configured detector model (resolved like `run` does, with "
        "the same offline fallback) and print the exported path.",
    )
    _common(exp)
    exp.add_argument("--format", choices=["onnx", "openvino"], default="onnx")
    exp.add_argument("--force", action="store_true", help="re-export even if cached")
    return parser


def _load(args: argparse.Namespace) -> tuple[GeneralConfig, DetectorConfig]:
    general = load_section(
        GeneralConfig,
        "general",
        config_file=args.config,
        overrides={"state_dir": args.state_dir, "log_level": args.log_level},
    )
    overrides: dict[str, Any] = {"model": args.model, "imgsz": args.imgsz}
    if getattr(args, "backend", None):
        overrides["backend"] = {"type": args.backend}
    overrides["device"] = getattr(args, "device", None)
    detector = load_section(DetectorConfig, SECTION, config_file=args.config, overrides=overrides)
    return general, detector


def cmd_export(args: argparse.Namespace) -> int:
    from services.detector.models import export_model, models_dir, resolve_model

    general, cfg = _load(args)
    model = resolve_model(cfg.model, general.state_dir)
    path = export_model(
        model.path, imgsz=cfg.imgsz, fmt=args.format, cache_dir=models_dir(general.state_dir),
        force=args.force,
    )  # fmt: skip
    print(path)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from services.detector.backends import BackendUnavailable
    from services.detector.models import ModelUnavailable
    from services.detector.processor import DetectorProcessor
    from shared.worker import WorkerRuntime, serve_worker

    general, cfg = _load(args)
    redis_cfg = load_section(
        RedisConfig, "redis", config_file=args.config, overrides={"url": args.redis_url}
    )
    worker_cfg = load_section(
        WorkerConfig,
        "worker",
        config_file=args.config,
        overrides={"ingest_pub": args.ingest_pub, "replica_id": args.replica_id},
    )
    if not redis_cfg.url:
        log.error("no Redis: pass --redis-url or set REDIS_URL")
        return 2
    processor = DetectorProcessor(cfg, general.state_dir)
    runtime = WorkerRuntime(
        processor,
        redis_config=redis_cfg,
        worker_config=worker_cfg,
        default_enabled=cfg.process_by_default,
    )
    return serve_worker(
        runtime,
        name="detector",
        expected_errors=(BackendUnavailable, ModelUnavailable),
        metrics_port=args.metrics_port if args.metrics_port is not None else general.metrics_port,
        ready_fields=lambda: {
            "backend": cfg.backend.type,
            "model": processor.backend.model.label if processor.backend else cfg.model,
            "max_batch": runtime.batch_size,
        },
    )


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in (*COMMANDS, "-h", "--help"):
        argv = ["run", *argv]
    args = build_parser().parse_args(argv)
    from shared.logs import setup_logging

    try:
        general, _ = _load(args)
    except ConfigError as exc:
        print(f"sentri detector: {exc}", file=sys.stderr)
        return 2
    setup_logging("detector", general.log_level, general.log_format)
    from services.detector.models import prepare_ultralytics_env

    prepare_ultralytics_env(general.state_dir)
    try:
        return cmd_export(args) if args.command == "export" else cmd_run(args)
    except ConfigError as exc:
        log.error("%s", exc)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
