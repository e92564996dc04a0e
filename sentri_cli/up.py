"""``sentri up``: the whole system on one machine, supervised.

Starts Redis (``REDIS_URL`` if given, else a private ``redis-server`` with a random
password, data in the state dir), then ingest, every installed worker, the gateway
and, with ``--demo``, an edge agent streaming demo cameras.  A child that dies is
reported and restarted with exponential backoff; Ctrl-C stops everything.

Agents talk to ingest with CURVE unless ``--insecure``: ingest's key pair lives in
``<state_dir>/keys`` (made here if missing); the demo agent's key pair is made beside
it and approved for client id ``demo`` before the agent starts.
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

import redis

from shared.config import (
    ConfigError,
    GeneralConfig,
    IngestConfig,
    RedisConfig,
    load_section,
)
from shared.keys import Keys
from shared.logs import setup_logging
from shared.redisutil import EmbeddedRedis, connect, redact_url, wait_for_redis
from shared.security import AgentKeyStore, fingerprint, load_or_create_keypair

log = logging.getLogger("sentri.up")

DEMO_SOURCES = ("demo:bus", "demo:zidane", "demo:astronaut")
DEMO_CLIENT_ID = "demo"
#: Key pair names in <state_dir>/keys: ingest's, and the local (demo) agent's, which
#: is also sentri-edge's default when its state dir is this one.
INGEST_KEY, AGENT_KEY = "ingest", "edge"

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
    p.add_argument("--insecure", action="store_true",
                   help="agents talk to ingest in plaintext, unauthenticated (default: CURVE "
                        "encryption with approved agent keys)")  # fmt: skip
    return p


def wire_demo_agent_keys(keys_dir: Path, redis_url: str, prefix: str, client_id: str) -> list[str]:
    """Make the local agent's key pair, approve it for ``client_id`` in Redis, and
    return the agent flags that use it with ingest's public key."""
    public, _ = load_or_create_keypair(keys_dir, AGENT_KEY)
    r = connect(redis_url, timeout=5.0)
    try:
        AgentKeyStore(r, Keys(prefix)).approve(public, client_id=client_id, decided_by="sentri up")
    finally:
        r.close()
    log.info(
        "demo agent key approved",
        extra={"client_id": client_id, "fingerprint": fingerprint(public)},
    )
    return ["--server-key", str(keys_dir / f"{INGEST_KEY}.public"), "--key-dir", str(keys_dir)]


def remote_agent_hint(
    insecure: bool, bind_host: str, frame_port: int, control_port: int, keys_dir: Path,
    dashboard: str,
) -> str:  # fmt: skip
    """The banner lines telling how an agent on another machine joins."""
    if (frame_port, control_port) == (5555, 5556):
        target = "--server HOST"
    else:
        target = (f"--frame-endpoint tcp://HOST:{frame_port} "
                  f"--control-endpoint tcp://HOST:{control_port}")  # fmt: skip
    lines = []
    if bind_host in ("127.0.0.1", "localhost", "::1"):
        lines.append(f"  Ingest listens on {bind_host} only; for agents on other machines set "
                     "SENTRI_INGEST__BIND_HOST=0.0.0.0 (or ingest.bind_host).")  # fmt: skip
    if insecure:
        lines.append("  INSECURE: agents connect in plaintext, unauthenticated (--insecure).")
        lines.append(f"  Remote agent: sentri-edge {target}")
        return "\n".join(lines)
    public = (keys_dir / f"{INGEST_KEY}.public").read_text().strip()
    lines += [
        f"  Remote agent: sentri-edge {target} --server-key {keys_dir}/ingest.public",
        f"    (copy that file to the camera machine, or pass the key itself: '{public}')",
        f"    then approve its fingerprint in the dashboard: {dashboard} (Agents)",
    ]
    return "\n".join(lines)


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
    insecure = args.insecure or ingest_cfg.insecure
    keys_dir = state_dir / "keys"
    if not insecure:  # the same pair ingest loads: made now so the banner can show it
        load_or_create_keypair(keys_dir, INGEST_KEY)

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
        extra = ["--insecure"] if svc == "ingest" and args.insecure else []
        child_env = env
        if general.metrics_port:
            # One host, several services: each gets its own metrics port from the base.
            child_env = {
                **env,
                "SENTRI_GENERAL__METRICS_PORT": str(general.metrics_port + len(children)),
            }
        children.append(Child(svc, [py, "-m", f"services.{svc}", *extra], child_env))
    if args.demo:
        sources = args.demo_source or list(DEMO_SOURCES)
        agent_args = [py, "-m", "edge_agent", "--client-id", DEMO_CLIENT_ID,
                      "--frame-endpoint", f"tcp://{host}:{ingest_cfg.frame_port}",
                      "--control-endpoint", f"tcp://{host}:{ingest_cfg.control_port}"]  # fmt: skip
        if not insecure:
            try:
                agent_args += wire_demo_agent_keys(
                    keys_dir, redis_url, redis_cfg.prefix, DEMO_CLIENT_ID
                )
            except redis.RedisError as exc:
                print(f"sentri up: cannot approve the demo agent's key: {exc}", file=sys.stderr)
                if embedded is not None:
                    embedded.stop()
                return 1
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
    dashboard = f"http://127.0.0.1:{gw_port}"
    hint = remote_agent_hint(insecure, ingest_cfg.bind_host, ingest_cfg.frame_port,
                             ingest_cfg.control_port, keys_dir, dashboard)  # fmt: skip
    print(
        "\n  Sentri is starting: "
        + ", ".join(c.name for c in children)
        + f"\n  Dashboard: {dashboard}  (admin password: printed by the gateway on"
        f" first start, also in {state_dir}/admin-password.txt)\n{hint}\n"
        "  Ctrl-C stops everything.\n",
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
