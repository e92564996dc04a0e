"""``sentri faces``: run the face recognition worker or manage the gallery.

    sentri faces [run]                       serve (default)
    sentri faces add NAME photo.jpg [...]    enrol photos of a person
    sentri faces list [--json]               people in the gallery
    sentri faces delete NAME
    sentri faces rename OLD NEW
    sentri faces bench [--frames N]          time detection + encoding on a test frame

Exit codes: 0 success, 1 the operation failed (bad photo, unknown person, Redis
unreachable), 2 usage or configuration error.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import redis

from shared.config import (
    ConfigError,
    GeneralConfig,
    RedisConfig,
    WorkerConfig,
    load_section,
)
from shared.keys import Keys
from shared.logs import setup_logging
from shared.redisutil import connect, redact_url

log = logging.getLogger("services.faces")

COMMANDS = ("run", "add", "list", "delete", "rename", "bench")
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def _common(parser: argparse.ArgumentParser, *, suppress: bool) -> None:
    default: Any = argparse.SUPPRESS if suppress else None
    parser.add_argument(
        "--config",
        metavar="FILE",
        default=default,
        help="YAML config (sections faces:, worker:, redis:, general:)",
    )
    parser.add_argument(
        "--redis-url",
        metavar="URL",
        default=default,
        help="Redis URL (default: REDIS_URL / redis.url)",
    )
    parser.add_argument(
        "--log-level",
        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
        default=default,
        help="log level (default: general.log_level for run, WARNING for gallery commands)",
    )


def _person_name(value: str) -> str:
    """argparse type: a valid gallery name (the same rule as the API and the gallery)."""
    from services.faces.gallery import GalleryError, validate_name

    try:
        return validate_name(value)
    except GalleryError as exc:
        raise argparse.ArgumentTypeError(exc.message) from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sentri faces",
        description=(
            "Face recognition worker: finds faces in the frames of the cameras this\n"
            "replica owns, matches them against the gallery and publishes `face` records\n"
            "and `face_recognized` events to Redis. Without a command it runs the worker."
        ),
        epilog=(
            "examples:\n"
            "  sentri faces                                 run the worker\n"
            "  sentri faces add 'Ada Lovelace' ada1.jpg ada2.jpg\n"
            "  sentri faces list --json\n"
            "  sentri faces rename 'Ada Lovelace' Ada\n\n"
            "exit codes: 0 ok, 1 the operation failed, 2 usage or configuration error.\n"
            "configuration: the `faces:` section of --config or SENTRI_FACES__<FIELD> env\n"
            "vars (e.g. SENTRI_FACES__TOLERANCE=0.5); worker wiring in `worker:`\n"
            "(SENTRI_WORKER__INGEST_PUB); Redis from REDIS_URL or --redis-url."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _common(parser, suppress=False)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = sub.add_parser("run", help="run the worker (default)")
    _common(run, suppress=True)
    run.add_argument(
        "--ingest-pub", metavar="ENDPOINT", help="ingest fan-out endpoint (worker.ingest_pub)"
    )
    run.add_argument("--replica-id", metavar="ID", help="replica name (worker.replica_id)")
    run.add_argument(
        "--metrics-port", type=int, metavar="PORT", help="Prometheus port (general.metrics_port)"
    )

    add = sub.add_parser("add", help="enrol a person from one or more photos")
    _common(add, suppress=True)
    add.add_argument(
        "name",
        type=_person_name,
        help="person's name (1-64 letters, digits, _ and inner spaces . , ' -)",
    )
    add.add_argument("photos", nargs="+", type=Path, help="photos showing the person's face")

    ls = sub.add_parser("list", help="list enrolled people")
    _common(ls, suppress=True)
    ls.add_argument("--json", action="store_true", help="print JSON")

    rm = sub.add_parser("delete", help="remove a person")
    _common(rm, suppress=True)
    rm.add_argument("name")

    mv = sub.add_parser("rename", help="rename a person")
    _common(mv, suppress=True)
    mv.add_argument("old")
    mv.add_argument("new", type=_person_name)

    bench = sub.add_parser("bench", help="time detection + encoding (no Redis needed)")
    _common(bench, suppress=True)
    bench.add_argument("--frames", type=int, default=20, help="frames to time (default 20)")
    bench.add_argument("--image", type=Path, help="frame to use (default: a 640x480 test scene)")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not any(a in COMMANDS for a in argv) and not any(a in ("-h", "--help") for a in argv):
        argv = ["run", *argv]
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # usage errors (a bad name, ...) print their message, exit 2
        if not exc.code:
            raise  # --help
        return int(exc.code)
    command = args.command or "run"
    try:
        return _dispatch(command, args)
    except ConfigError as exc:
        print(f"sentri faces: {exc}", file=sys.stderr)
        return EXIT_USAGE


def _dispatch(command: str, args: argparse.Namespace) -> int:
    from services.faces.config import FacesConfig

    general = load_section(GeneralConfig, "general", config_file=args.config)
    faces_config = load_section(FacesConfig, "faces", config_file=args.config)
    level = args.log_level or (general.log_level if command == "run" else "WARNING")
    setup_logging("faces", level, general.log_format)
    if command == "bench":
        from services.faces.bench import run_bench

        return run_bench(faces_config, frames=args.frames, image=args.image)
    redis_config = load_section(
        RedisConfig, "redis", config_file=args.config, overrides={"url": args.redis_url}
    )
    if not redis_config.url:
        print("sentri faces: no Redis: set REDIS_URL or pass --redis-url", file=sys.stderr)
        return EXIT_USAGE
    if command == "run":
        worker_config = load_section(
            WorkerConfig,
            "worker",
            config_file=args.config,
            overrides={"ingest_pub": args.ingest_pub, "replica_id": args.replica_id},
        )
        if args.metrics_port is not None:
            general = general.model_copy(update={"metrics_port": args.metrics_port})
        return run_worker(general, redis_config, worker_config, faces_config)
    return _gallery_command(command, args, redis_config, faces_config)


# --------------------------------------------------------------------- gallery CLI


def _gallery_command(
    command: str, args: argparse.Namespace, redis_config: RedisConfig, config: Any
) -> int:
    from services.faces.gallery import Gallery, GalleryError

    assert redis_config.url
    r = connect(redis_config.url, timeout=5.0)
    gallery = Gallery(r, Keys(redis_config.prefix), config)
    try:
        if command == "add":
            images = []
            for path in args.photos:
                try:
                    images.append(path.read_bytes())
                except OSError as exc:
                    print(f"sentri faces: cannot read {path}: {exc.strerror}", file=sys.stderr)
                    return EXIT_FAILED
            info = gallery.enroll(args.name, images)
            print(
                f"enrolled {info['name']!r}: {info['added']} photo(s) added, "
                f"{info['encodings']} encoding(s) stored"
            )
        elif command == "list":
            people = gallery.list()
            if args.json:
                print(json.dumps(people, indent=2))
            elif not people:
                print("the gallery is empty (add someone: sentri faces add NAME photo.jpg)")
            else:
                width = max(4, *(len(p["name"]) for p in people))
                print(f"{'NAME':<{width}}  ENCODINGS  UPDATED")
                for p in people:
                    updated = time.strftime("%Y-%m-%d %H:%M", time.localtime(p["updated"] or 0))
                    print(f"{p['name']:<{width}}  {p['encodings']:>9}  {updated}")
        elif command == "delete":
            if not gallery.delete(args.name):
                print(f"sentri faces: no person named {args.name!r}", file=sys.stderr)
                return EXIT_FAILED
            print(f"deleted {args.name!r}")
        elif command == "rename":
            info = gallery.rename(args.old, args.new)
            print(f"renamed {args.old!r} to {info['name']!r}")
    except GalleryError as exc:
        print(f"sentri faces: {exc.message}", file=sys.stderr)
        return EXIT_FAILED
    except redis.RedisError as exc:
        print(
            f"sentri faces: Redis at {redact_url(redis_config.url)} failed: {exc}",
            file=sys.stderr,
        )
        return EXIT_FAILED
    finally:
        r.close()
    return EXIT_OK


# ------------------------------------------------------------------------- worker


def run_worker(
    general: GeneralConfig,
    redis_config: RedisConfig,
    worker_config: WorkerConfig,
    faces_config: Any,
) -> int:
    """Serve until SIGTERM/SIGINT; 0 on a requested stop, 1 on failure."""
    from services.faces.processor import FacesProcessor
    from shared.worker import WorkerRuntime, serve_worker

    processor = FacesProcessor(faces_config)
    runtime = WorkerRuntime(
        processor,
        redis_config=redis_config,
        worker_config=worker_config,
        default_enabled=faces_config.process_by_default,
    )
    code = serve_worker(
        runtime,
        name="faces worker",
        metrics_port=general.metrics_port,
        ready_fields=lambda: {
            "model": faces_config.model,
            "gate_on_person": faces_config.gate_on_person,
        },
    )
    return EXIT_OK if code == 0 else EXIT_FAILED


if __name__ == "__main__":
    raise SystemExit(main())
