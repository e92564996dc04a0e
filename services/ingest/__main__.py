"""``python -m services.ingest`` / ``sentri ingest``: run the ingest service.

sentri ingest [run] [--config FILE] [--redis-url URL] [--frame-port N] [--insecure] ...
sentri ingest key
sentri ingest cleanup [--older-than SECONDS]
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path

from services.ingest.config import IngestSettings, load_settings
from services.ingest.server import IngestServer
from shared import registry
from shared.config import ConfigError
from shared.keys import Keys
from shared.logs import setup_logging
from shared.metrics import start_metrics_server
from shared.redisutil import connect
from shared.security import fingerprint, load_or_create_keypair


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sentri ingest",
        description=(
            "Sentri ingest: receives agents' frames (ZeroMQ PULL), talks to agents "
            "(ROUTER: register, heartbeat, commands), keeps the client/camera registry "
            "in Redis and fans frames out to workers (PUB)."
        ),
        epilog=(
            "Agents connect with CURVE (encrypted, authenticated): give them this ingest's "
            "public key (`sentri ingest key`), e.g. `sentri-edge --server HOST --server-key "
            "ingest.public`, then approve each agent's fingerprint in the dashboard "
            "(Agents) or list its key in ingest.authorized_keys. "
            "Settings come from the YAML file (section 'ingest:'), then env vars "
            "SENTRI_INGEST__<FIELD> (e.g. SENTRI_INGEST__FRAME_PORT=6000) and REDIS_URL, "
            "then these flags."
        ),
    )
    parser.add_argument("--config", metavar="FILE", help="YAML config file (or SENTRI_CONFIG).")
    parser.add_argument(
        "--redis-url", metavar="URL", help="Redis URL (default: REDIS_URL / redis.url)."
    )
    sub = parser.add_subparsers(dest="command", metavar="{run,cleanup,key}")
    run = sub.add_parser("run", help="Serve (the default).")
    for p, default in ((parser, None), (run, argparse.SUPPRESS)):
        # SUPPRESS: `--frame-port 1 run` must not be reset by the subcommand's default.
        p.add_argument(
            "--bind-host", metavar="ADDR", default=default,
            help="Address to bind (ingest.bind_host).",
        )  # fmt: skip
        p.add_argument(
            "--frame-port", type=int, metavar="N", default=default,
            help="PULL port for frames (0 = random free port).",
        )  # fmt: skip
        p.add_argument(
            "--control-port", type=int, metavar="N", default=default,
            help="ROUTER port for agent control.",
        )  # fmt: skip
        p.add_argument(
            "--pub-port", type=int, metavar="N", default=default,
            help="PUB port for the fan-out to workers.",
        )  # fmt: skip
        p.add_argument(
            "--insecure", action="store_true", default=default,
            help="Accept plaintext agents: no encryption, no key check (ingest.insecure). "
            "Only for a trusted network; logs a warning.",
        )  # fmt: skip
    sub.add_parser(
        "key",
        help="Print ingest's CURVE public key and fingerprint (agents need it: "
        "sentri-edge --server-key); creates the key pair in <state_dir>/keys if missing.",
    )
    cleanup = sub.add_parser(
        "cleanup", help="Remove clients without a heartbeat for a while from the registry."
    )
    cleanup.add_argument(
        "--older-than",
        type=float,
        metavar="SECONDS",
        help="Remove clients silent for longer than this (default: ingest.cleanup_after_s).",
    )
    return parser


def _cleanup(settings: IngestSettings, older_than: float | None) -> int:
    older = settings.ingest.cleanup_after_s if older_than is None else older_than
    if older < 0:
        print("error: --older-than must be >= 0", file=sys.stderr)
        return 2
    r = connect(settings.redis.url, timeout=5.0)
    try:
        removed = registry.cleanup_inactive(r, Keys(settings.redis.prefix), older, time.time())
    finally:
        r.close()
    for cid in removed:
        print(f"removed {cid}")
    print(f"{len(removed)} client(s) removed (silent for more than {older:g}s)")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    overrides = {
        "bind_host": getattr(args, "bind_host", None),
        "frame_port": getattr(args, "frame_port", None),
        "control_port": getattr(args, "control_port", None),
        "pub_port": getattr(args, "pub_port", None),
        "insecure": True if getattr(args, "insecure", None) else None,
    }
    try:
        settings = load_settings(args.config, redis_url=args.redis_url, ingest_overrides=overrides)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    keys_dir = Path(settings.general.state_dir).expanduser() / "keys"
    if args.command == "key":
        public, _ = load_or_create_keypair(keys_dir, "ingest")
        print(public)
        print(f"fingerprint {fingerprint(public)}  ({keys_dir / 'ingest.public'})")
        return 0
    if not settings.redis.url:
        print("error: redis.url is not set: pass --redis-url or set REDIS_URL", file=sys.stderr)
        return 2
    setup_logging("ingest", settings.general.log_level, settings.general.log_format)
    if args.command == "cleanup":
        return _cleanup(settings, args.older_than)

    try:
        server = IngestServer(settings.ingest, settings.redis, keys_dir=keys_dir)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if server.secure:  # before the metrics (health) endpoint: healthy implies the key exists
        load_or_create_keypair(keys_dir, "ingest")

    def _stop(signum: int, _frame: object) -> None:
        server.stop_event.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        start_metrics_server(settings.general.metrics_port)
        server.run()
    except OSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
