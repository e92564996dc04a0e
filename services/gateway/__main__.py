"""``python -m services.gateway`` / ``sentri gateway``: run the gateway with uvicorn."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import signal
import sys
import threading
from collections.abc import Iterator
from types import FrameType

from shared.config import ConfigError
from shared.logs import setup_logging
from shared.redisutil import redact_url

log = logging.getLogger("services.gateway")


def _server_class() -> type:  # uvicorn is imported lazily (fast --help)
    import uvicorn

    class GatewayServer(uvicorn.Server):
        """uvicorn, but SIGTERM/SIGINT end with a clean exit code 0 after the graceful
        shutdown (uvicorn re-raises the signal, which makes supervisors see -15)."""

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            if threading.current_thread() is not threading.main_thread():
                yield
                return
            sigs = (signal.SIGINT, signal.SIGTERM)
            original = {sig: signal.signal(sig, self._on_signal) for sig in sigs}
            try:
                yield
            finally:
                for sig, handler in original.items():
                    signal.signal(sig, handler)

        async def startup(self, sockets: list | None = None) -> None:
            await super().startup(sockets)
            if self.started:  # listening: say so once, clearly
                cfg = self.config
                log.info(
                    "gateway ready", extra={"url": f"http://{cfg.host}:{cfg.port}/", **self.info}
                )

        info: dict = {}

        def _on_signal(self, sig: int, frame: FrameType | None) -> None:
            log.info("stopping", extra={"signal": signal.Signals(sig).name})
            if self.should_exit and sig == signal.SIGINT:
                self.force_exit = True  # second Ctrl-C: do not wait for connections
            self.should_exit = True

    return GatewayServer


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="sentri gateway",
        description="Sentri gateway: REST API, websockets and the web dashboard. "
        "Settings come from the YAML file (section 'gateway'), SENTRI_GATEWAY__* env vars "
        "and these flags. On first start without gateway.admin_password, an admin password "
        "is generated, printed once and saved to <state_dir>/admin-password.txt.",
    )
    p.add_argument("--config", metavar="FILE", help="YAML config file (also SENTRI_CONFIG).")
    p.add_argument("--redis-url", metavar="URL", help="Redis URL (also REDIS_URL).")
    p.add_argument("--host", help="Bind address (default 127.0.0.1; 0.0.0.0 for the LAN).")
    p.add_argument("--port", type=int, help="HTTP port (default 5002).")
    p.add_argument("--ingest-pub", metavar="ENDPOINT", help="Ingest fan-out endpoint.")
    p.add_argument(
        "--metrics-port", type=_port, metavar="PORT",
        help="Also serve Prometheus /metrics without credentials on this port "
        "(general.metrics_port; 0 = off; binds gateway.metrics_host, default the --host).",
    )  # fmt: skip
    return p


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port must be 0..65535 (got {value})")
    return value


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import uvicorn

    from services.gateway.app import create_app
    from services.gateway.config import load_settings
    from shared.config import GeneralConfig, load_section

    try:
        general = load_section(GeneralConfig, "general", config_file=args.config)
        setup_logging("gateway", general.log_level, general.log_format)
        settings = load_settings(
            args.config,
            redis_url=args.redis_url,
            overrides={"host": args.host, "port": args.port, "ingest_pub": args.ingest_pub},
        )
    except ConfigError as exc:
        print(f"sentri gateway: {exc}", file=sys.stderr)
        return 2
    if args.metrics_port is not None:
        general = settings.general.model_copy(update={"metrics_port": args.metrics_port})
        settings = dataclasses.replace(settings, general=general)
    if not settings.redis.url:
        print("sentri gateway: no Redis: set REDIS_URL or --redis-url", file=sys.stderr)
        return 2
    from shared.redisutil import wait_for_redis

    try:
        wait_for_redis(settings.redis.url, timeout=15)
    except TimeoutError as exc:
        log.error("cannot start: redis unreachable", extra={"error": str(exc)})
        return 1
    cfg = settings.gateway
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=cfg.host,
        port=cfg.port,
        log_config=None,  # keep our structured logging
        access_log=False,
        ws_max_size=cfg.ws_max_message_bytes,
        proxy_headers=False,
        server_header=False,
        timeout_graceful_shutdown=5,
    )
    server = _server_class()(config)
    server.info = {"redis": redact_url(settings.redis.url), "ingest_pub": cfg.ingest_pub}
    server.run()
    log.info("gateway stopped")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
