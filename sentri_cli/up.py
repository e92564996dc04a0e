"""``sentri up``: the whole system on one machine, supervised.

Starts Redis (``REDIS_URL`` if given, else a private ``redis-server`` with a random
password, data in the state dir, memory bounded), then ingest, the gateway, every
installed worker and, with ``--demo``, an edge agent streaming demo cameras.  The
services are one table (:mod:`sentri_cli.services`); the supervision (own process
groups, parent-death signal, restart backoff with a limit, stop order) is
:mod:`sentri_cli.supervisor`.  The embedded Redis is a supervised child too: killed,
it is back within a second on the same port, password and data dir.

A lock on the state dir keeps a second ``sentri up`` off it, and ``runtime.json``
there tells ``sentri status``/``sentri events`` where Redis is
(:mod:`sentri_cli.runtime`).

Agents talk to ingest with CURVE unless ``--insecure``: ingest's key pair lives in
``<state_dir>/keys`` (made here if missing); the demo agent's key pair is made beside
it and approved for client id ``demo`` before the agent starts.
"""

from __future__ import annotations

import argparse
import logging
import os
import secrets
import signal
import socket
import sys
import time
from pathlib import Path

import redis

from sentri_cli.runtime import (
    StateDirBusy,
    StateDirLock,
    remove_runtime,
    write_runtime,
)
from sentri_cli.services import SERVICES, TIER_AGENT, TIER_REDIS, available
from sentri_cli.supervisor import Child, Supervisor
from services.gateway.config import GatewayConfig
from shared.config import (
    ConfigError,
    GeneralConfig,
    IngestConfig,
    RedisConfig,
    load_section,
)
from shared.keys import Keys
from shared.logs import setup_logging
from shared.redisutil import (
    EmbeddedRedis,
    connect,
    memory_bound_problems,
    redact_url,
    wait_for_redis,
)
from shared.security import AgentKeyStore, fingerprint, load_or_create_keypair

log = logging.getLogger("sentri.up")

DEMO_SOURCES = ("demo:bus", "demo:zidane", "demo:astronaut")
DEMO_CLIENT_ID = "demo"
#: Key pair names in <state_dir>/keys: ingest's, and the local (demo) agent's, which
#: is also sentri-edge's default when its state dir is this one.
INGEST_KEY, AGENT_KEY = "ingest", "edge"

__all__ = ["Child", "Supervisor", "main"]


def _restart_limit(text: str) -> int:
    n = int(text)
    if not 0 <= n <= 1000:
        raise argparse.ArgumentTypeError("must be between 0 and 1000")
    return n


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
                   help="run only these services (repeatable): " + " ".join(s.name for s in SERVICES))  # fmt: skip
    p.add_argument("--without", metavar="SVC", action="append", default=[],
                   help="skip a service (repeatable), e.g. --without faces")  # fmt: skip
    p.add_argument("--gateway-port", type=int, help="HTTP port of the gateway (default 5002)")
    p.add_argument("--log-level", default=None, help="DEBUG, INFO, WARNING or ERROR")
    p.add_argument("--max-restarts", type=_restart_limit, default=5, metavar="N",
                   help="give up (stop everything, exit 1) when a service exits N+1 times in a "
                        "row, each within 60 s of its start (default 5)")  # fmt: skip
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
        f"    (copy that file to the camera machine, or pass the key itself: "
        f"--server-key='{public}')",
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


def port_in_use(host: str, port: int) -> bool:
    """True when ``host:port`` cannot be bound (someone else listens there)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def accepts(host: str, port: int) -> bool:
    host = "127.0.0.1" if host in ("0.0.0.0", "", "*") else host
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        general = load_section(GeneralConfig, "general", config_file=args.config,
                               overrides={"state_dir": args.state_dir, "log_level": args.log_level})  # fmt: skip
        redis_cfg = load_section(RedisConfig, "redis", config_file=args.config,
                                 overrides={"url": args.redis_url})  # fmt: skip
        ingest_cfg = load_section(IngestConfig, "ingest", config_file=args.config)
        gateway_cfg = load_section(GatewayConfig, "gateway", config_file=args.config,
                                   overrides={"port": args.gateway_port})  # fmt: skip
    except ConfigError as exc:
        print(f"sentri up: {exc}", file=sys.stderr)
        return 2
    names = {s.name for s in SERVICES}
    unknown = sorted((set(args.only or []) | set(args.without)) - names)
    if unknown:
        print(f"sentri up: unknown service(s) {', '.join(unknown)} (known: "
              f"{', '.join(sorted(names))})", file=sys.stderr)  # fmt: skip
        return 2
    setup_logging("up", general.log_level, general.log_format)
    state_dir = Path(general.state_dir).expanduser().resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    try:
        lock = StateDirLock(state_dir).acquire()
    except StateDirBusy as exc:
        print(f"sentri up: {exc}", file=sys.stderr)
        return 1
    try:
        return _run(args, general, redis_cfg, ingest_cfg, gateway_cfg, state_dir)
    finally:
        lock.release()


def _run(
    args: argparse.Namespace,
    general: GeneralConfig,
    redis_cfg: RedisConfig,
    ingest_cfg: IngestConfig,
    gateway_cfg: GatewayConfig,
    state_dir: Path,
) -> int:
    insecure = args.insecure or ingest_cfg.insecure
    keys_dir = state_dir / "keys"
    if not insecure:  # the same pair ingest loads: made now so the banner can show it
        load_or_create_keypair(keys_dir, INGEST_KEY)

    services = [s for s in SERVICES if (s.name in args.only if args.only else s.default)]
    services = [s for s in services if s.name not in args.without]
    runnable = []
    for svc in services:
        if available(svc):
            runnable.append(svc)
        else:
            log.warning(
                f"not installed; skipping (pip install 'sentri[{svc.name}]')",
                extra={"service": svc.name},
            )
    names = {s.name for s in runnable}
    # One host, several services: each gets its own metrics port from the base.
    metrics_ports = (
        {svc.name: general.metrics_port + i for i, svc in enumerate(runnable)}
        if general.metrics_port
        else {}
    )

    # Ports first: a taken port fails now, clearly, not as a restart loop later.
    wanted_ports = []
    if "ingest" in names:
        wanted_ports += [(ingest_cfg.bind_host, p, f"ingest.{n}") for n, p in (
            ("frame_port", ingest_cfg.frame_port), ("control_port", ingest_cfg.control_port),
            ("pub_port", ingest_cfg.pub_port))]  # fmt: skip
    if "gateway" in names:
        wanted_ports.append((gateway_cfg.host, gateway_cfg.port, "gateway.port"))
    wanted_ports += [("0.0.0.0", p, f"metrics port of {n}") for n, p in metrics_ports.items()]
    for host, port, what in wanted_ports:
        if port and port_in_use(host, port):
            print(f"sentri up: port {port} on {host} ({what}) is already in use; stop what "
                  f"uses it or choose another port. Nothing started.", file=sys.stderr)  # fmt: skip
            return 1

    sup = Supervisor([], max_restarts=args.max_restarts)

    def on_signal(signum: int, _frame: object) -> None:
        sup.stopping.set()

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)

    wrote_runtime = False
    try:
        redis_url = redis_cfg.url
        embedded: EmbeddedRedis | None = None
        if redis_url:
            log.info("using external redis", extra={"url": redact_url(redis_url)})
            try:
                wait_for_redis(redis_url, timeout=10)
            except TimeoutError as exc:
                print(f"sentri up: {exc}", file=sys.stderr)
                return 1
            probe = connect(redis_url)
            try:
                for problem in memory_bound_problems(probe):
                    log.warning(f"external redis: {problem}; see docs/operations.md (Redis bounds)")
            except redis.RedisError as exc:
                log.warning("external redis: cannot check memory bounds", extra={"error": str(exc)})
            finally:
                probe.close()
        else:
            embedded = EmbeddedRedis(
                state_dir / "redis",
                persistent=True,
                password=_redis_password_file(state_dir),
                maxmemory=redis_cfg.maxmemory,
                maxmemory_policy=redis_cfg.maxmemory_policy,
            )
            try:
                command = embedded.command()
            except FileNotFoundError as exc:
                print(f"sentri up: {exc}", file=sys.stderr)
                return 1
            # Supervised like any service, restarted fast: the same port, password
            # and data dir every time, so every client reconnects by itself.
            sup.add(Child("redis", command, None, TIER_REDIS, first_backoff=0.2, max_backoff=2.0))
            try:
                wait_for_redis(embedded.url, timeout=15)
            except TimeoutError:
                print(f"sentri up: embedded redis-server failed to start: {embedded.log_tail()}",
                      file=sys.stderr)  # fmt: skip
                return 1
            redis_url = embedded.url
            log.info(
                "embedded redis ready",
                extra={"port": embedded.port, "dir": str(embedded.data_dir),
                       "maxmemory": embedded.maxmemory, "policy": embedded.maxmemory_policy},
            )  # fmt: skip

        host = "127.0.0.1" if ingest_cfg.bind_host in ("0.0.0.0", "*", "") else ingest_cfg.bind_host
        pub_endpoint = f"tcp://{host}:{ingest_cfg.pub_port}"
        gw_host = "127.0.0.1" if gateway_cfg.host in ("0.0.0.0", "", "::") else gateway_cfg.host
        dashboard = f"http://{gw_host}:{gateway_cfg.port}"
        runtime = {
            "pid": os.getpid(),
            "started_at": time.time(),
            "redis_url": redis_url,
            "redis_prefix": redis_cfg.prefix,
            "redis_embedded": embedded is not None,
            "redis_port": embedded.port if embedded else None,
            "ingest": {"frame_port": ingest_cfg.frame_port, "control_port": ingest_cfg.control_port,
                       "pub_port": ingest_cfg.pub_port, "bind_host": ingest_cfg.bind_host},
            "gateway": {"port": gateway_cfg.port, "url": dashboard} if "gateway" in names else None,
            "services": [s.name for s in runnable] + (["edge-demo"] if args.demo else []),
            "metrics_ports": metrics_ports,
        }  # fmt: skip
        write_runtime(state_dir, runtime)
        wrote_runtime = True

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
        for svc in runnable:
            extra = ["--insecure"] if svc.name == "ingest" and args.insecure else []
            child_env = env
            if svc.name in metrics_ports:
                child_env = {**env, "SENTRI_GENERAL__METRICS_PORT": str(metrics_ports[svc.name])}
            sup.add(Child(svc.name, [py, "-m", svc.module, *extra], child_env, svc.tier),
                    start=False)  # fmt: skip
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
                    return 1
            for src in sources:
                agent_args += ["--source", src]
            sup.add(Child("edge-demo", agent_args, env, TIER_AGENT), start=False)

        sup.start_all()
        started = ", ".join(c.name for c in sup.children)
        hint = remote_agent_hint(insecure, ingest_cfg.bind_host, ingest_cfg.frame_port,
                                 ingest_cfg.control_port, keys_dir, dashboard)  # fmt: skip
        print(f"\n  Sentri is starting: {started}", flush=True)
        banner = [False]
        published: list[object] = [None]

        def publish_state() -> None:
            # Children's pids and restart counts, for `sentri status`.
            state = sup.state()
            if state != published[0]:
                published[0] = state
                write_runtime(state_dir, {**runtime, "children": state})

        def tick() -> None:
            publish_state()
            announce()

        def announce() -> None:
            # The dashboard URL only once the gateway really answers on it.
            if banner[0] or ("gateway" in names and not accepts(gw_host, gateway_cfg.port)):
                return
            banner[0] = True
            lines = []
            if "gateway" in names:
                lines.append(f"  Dashboard: {dashboard}  (admin password: printed by the gateway "
                             f"on first start, also in {state_dir}/admin-password.txt)")  # fmt: skip
            lines += [hint, f"  Operators: sentri status / sentri events find this Redis "
                            f"through {state_dir}/runtime.json", "  Ctrl-C stops everything.\n"]  # fmt: skip
            print("\n" + "\n".join(lines), flush=True)

        publish_state()
        sup.run(on_tick=tick)
    finally:
        log.info("stopping")
        sup.stop_all()
        if wrote_runtime:
            remove_runtime(state_dir)
        log.info("stopped", extra={"order": ",".join(sup.stopped)})
    if sup.failure:
        print(f"sentri up: {sup.failure}", file=sys.stderr)
    return sup.exit_code
