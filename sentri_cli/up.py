"""``sentri up``: the whole system on one machine, supervised.

Starts Redis (``REDIS_URL`` if given, else a private ``redis-server`` with a random
password, data in the state dir), then ingest, every installed worker, the gateway
and, with ``--demo``, an edge agent streaming demo cameras.  A child that dies is
reported and restarted with exponential backoff; Ctrl-C stops everything.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from shared.config import (
    ConfigError,
    GeneralConfig,
    IngestConfig,
    RedisConfig,
    load_section,
)
from shared.logs import setup_logging
from shared.redisutil import EmbeddedRedis, redact_url, wait_for_redis

log = logging.getLogger("sentri.up")

DEMO_SOURCES = ("demo:bus", "demo:zidane", "demo:astronaut")

#: Worker -> the Python modules it needs; a worker whose modules are missing is skipped.
WORKER_REQUIREMENTS = {
    "detector": ("ultralytics", "torch"),
    "faces": ("face_recognition", "dlib"),
    "analyst": (),
}


def installed(modules: tuple[str, ...]) -> bool:
    return all(importlib.util.find_spec(m) is not None for m in modules)


@dataclass
class Child:
    name: str
    args: list[str]
    env: dict[str, str]
    proc: subprocess.Popen | None = None
    restarts: int = 0
    started_at: float = 0.0
    next_start: float = 0.0
    backoff: float = 1.0
    history: list[int] = field(default_factory=list)

    def start(self) -> None:
        self.proc = subprocess.Popen(self.args, env=self.env, stdin=subprocess.DEVNULL)
        self.started_at = time.monotonic()
        log.info("started", extra={"child": self.name, "pid": self.proc.pid})


class Supervisor:
    """Runs children, restarts the ones that die (backoff 1 s → 30 s), stops all on exit."""

    def __init__(self, children: list[Child], max_backoff: float = 30.0) -> None:
        self.children = children
        self.max_backoff = max_backoff
        self.stopping = threading.Event()

    def start_all(self) -> None:
        for c in self.children:
            c.start()

    def poll_once(self) -> None:
        now = time.monotonic()
        for c in self.children:
            if c.proc is None:
                if now >= c.next_start and not self.stopping.is_set():
                    c.restarts += 1
                    log.warning("restarting", extra={"child": c.name, "restarts": c.restarts})
                    c.start()
                continue
            code = c.proc.poll()
            if code is None:
                if now - c.started_at > 60:
                    c.backoff = 1.0  # healthy for a minute: reset the backoff
                continue
            c.history.append(code)
            c.proc = None
            if self.stopping.is_set():
                continue
            log.error(
                "child exited; restarting after backoff",
                extra={"child": c.name, "code": code, "backoff_s": c.backoff},
            )
            c.next_start = now + c.backoff
            c.backoff = min(self.max_backoff, c.backoff * 2)

    def run(self) -> None:
        while not self.stopping.wait(0.5):
            self.poll_once()

    def stop_all(self, timeout: float = 10.0) -> None:
        self.stopping.set()
        # Agent first (it says bye), then gateway and workers, ingest last.
        for c in reversed(self.children):
            if c.proc and c.proc.poll() is None:
                c.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for c in self.children:
            if c.proc is None:
                continue
            try:
                c.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("child did not stop in time; killing", extra={"child": c.name})
                c.proc.kill()
                c.proc.wait(5)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="sentri up",
        description="Run the whole Sentri system on this machine: Redis, ingest, workers, "
        "gateway (dashboard on http://127.0.0.1:5002), optionally a demo edge agent.",
    )
    p.add_argument("--demo", action="store_true", help="also run an edge agent with demo cameras")
    p.add_argument("--demo-source", action="append", default=None, metavar="SRC",
                   help=f"demo agent source (repeatable; default: {' '.join(DEMO_SOURCES)})")  # fmt: skip
    p.add_argument("--config", metavar="FILE", help="YAML config file (sections per service)")
    p.add_argument("--redis-url", help="use this Redis instead of starting a private one")
    p.add_argument("--state-dir", help="keys, models, snapshots, embedded Redis data")
    p.add_argument("--only", metavar="SVC", action="append",
                   help="run only these services (repeatable): ingest detector faces analyst gateway")  # fmt: skip
    p.add_argument("--without", metavar="SVC", action="append", default=[],
                   help="skip a service (repeatable), e.g. --without faces")  # fmt: skip
    p.add_argument("--gateway-port", type=int, help="HTTP port of the gateway (default 5002)")
    p.add_argument("--log-level", default=None, help="DEBUG, INFO, WARNING or ERROR")
    return p


def _redis_password_file(state_dir: Path) -> str:
    """The embedded Redis password: random on first start, then kept (mode 0600)."""
    path = state_dir / "redis" / "password"
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        return path.read_text().strip()
    pw = secrets.token_hex(24)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(pw)
    return pw


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        general = load_section(GeneralConfig, "general", config_file=args.config,
                               overrides={"state_dir": args.state_dir, "log_level": args.log_level})  # fmt: skip
        redis_cfg = load_section(RedisConfig, "redis", config_file=args.config,
                                 overrides={"url": args.redis_url})  # fmt: skip
        ingest_cfg = load_section(IngestConfig, "ingest", config_file=args.config)
    except ConfigError as exc:
        print(f"sentri up: {exc}", file=sys.stderr)
        return 2
    setup_logging("up", general.log_level, general.log_format)
    state_dir = Path(general.state_dir).expanduser().resolve()
    state_dir.mkdir(parents=True, exist_ok=True)

    wanted = args.only or ["ingest", "detector", "faces", "analyst", "gateway"]
    wanted = [s for s in wanted if s not in args.without]

    embedded: EmbeddedRedis | None = None
    redis_url = redis_cfg.url
    if redis_url:
        log.info("using external redis", extra={"url": redact_url(redis_url)})
        try:
            wait_for_redis(redis_url, timeout=10)
        except TimeoutError as exc:
            print(f"sentri up: {exc}", file=sys.stderr)
            return 1
    else:
        embedded = EmbeddedRedis(
            state_dir / "redis", persistent=True, password=_redis_password_file(state_dir)
        )
        try:
            embedded.start()
        except (FileNotFoundError, RuntimeError) as exc:
            print(f"sentri up: {exc}", file=sys.stderr)
            return 1
        redis_url = embedded.url
        log.info(
            "embedded redis ready", extra={"port": embedded.port, "dir": str(embedded.data_dir)}
        )

    host = "127.0.0.1" if ingest_cfg.bind_host in ("0.0.0.0", "*", "") else ingest_cfg.bind_host
    pub_endpoint = f"tcp://{host}:{ingest_cfg.pub_port}"
    env = dict(os.environ)
    env.update(
        REDIS_URL=redis_url,
        SENTRI_REDIS__URL=redis_url,
        SENTRI_GENERAL__STATE_DIR=str(state_dir),
        SENTRI_WORKER__INGEST_PUB=pub_endpoint,
        SENTRI_GATEWAY__INGEST_PUB=pub_endpoint,
        YOLO_OFFLINE=env.get("YOLO_OFFLINE", "1"),
        YOLO_CONFIG_DIR=env.get("YOLO_CONFIG_DIR", str(state_dir / "ultralytics")),
        PYTHONUNBUFFERED="1",
    )
    if args.config:
        env["SENTRI_CONFIG"] = str(Path(args.config).resolve())
    if args.gateway_port:
        env["SENTRI_GATEWAY__PORT"] = str(args.gateway_port)

    py = sys.executable
    children: list[Child] = []
    for svc in ("ingest", "detector", "faces", "analyst", "gateway"):
        if svc not in wanted:
            continue
        reqs = WORKER_REQUIREMENTS.get(svc, ())
        if reqs and not installed(reqs):
            log.warning(
                f"not installed; skipping (pip install 'sentri[{svc}]')", extra={"service": svc}
            )
            continue
        children.append(Child(svc, [py, "-m", f"services.{svc}"], env))
    if args.demo:
        sources = args.demo_source or list(DEMO_SOURCES)
        agent_args = [py, "-m", "edge_agent", "--client-id", "demo",
                      "--frame-endpoint", f"tcp://{host}:{ingest_cfg.frame_port}",
                      "--control-endpoint", f"tcp://{host}:{ingest_cfg.control_port}"]  # fmt: skip
        for s in sources:
            agent_args += ["--source", s]
        children.append(Child("edge-demo", agent_args, env))

    sup = Supervisor(children)

    def on_signal(signum: int, _frame: object) -> None:
        sup.stopping.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    sup.start_all()
    gw_port = args.gateway_port or os.environ.get("SENTRI_GATEWAY__PORT", "5002")
    print(
        "\n  Sentri is starting: "
        + ", ".join(c.name for c in children)
        + f"\n  Dashboard: http://127.0.0.1:{gw_port}  (admin password: printed by the gateway on"
        f" first start, also in {state_dir}/admin-password.txt)\n  Ctrl-C stops everything.\n",
        flush=True,
    )
    try:
        sup.run()
    finally:
        log.info("stopping")
        sup.stop_all()
        if embedded is not None:
            embedded.stop()
        log.info("stopped")
    return 0
