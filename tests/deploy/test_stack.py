"""The compose services' own commands and environment, run for real without Docker.

Redis runs the exact start script of the compose `redis` service; ingest, gateway
and analyst run `sentri <command>` with the compose environment, where only the
addresses are rewritten to loopback and free ports. The container health probe
(deploy/healthcheck.py) must then pass, and SIGTERM must stop each one cleanly.
"""

from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from shared.redisutil import find_redis_server
from tests.deploy.support import DUMMY_ENV, bin_path, load_compose, service_env
from tests.helpers import wait_for

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "deploy"))
import healthcheck  # noqa: E402

sys.path.pop(0)

PASSWORD = DUMMY_ENV["REDIS_PASSWORD"]


@pytest.fixture(scope="module")
def compose() -> dict:
    return load_compose()


@pytest.fixture(scope="module")
def compose_redis(compose, tmp_path_factory) -> Iterator[dict]:
    """The compose redis service's start script, on a free loopback port."""
    from shared.redisutil import free_port

    svc = compose["services"]["redis"]
    assert svc["command"][:2] == ["sh", "-c"]
    tmp = tmp_path_factory.mktemp("compose-redis")
    (tmp / "data").mkdir()
    port = free_port()
    script = (
        svc["command"][2]
        .replace("/tmp/auth.conf", str(tmp / "auth.conf"))
        .replace("--dir /data", f"--dir {tmp / 'data'}")
        .strip()
        + f" --port {port} --bind 127.0.0.1 --save ''"
    )
    env = {
        "PATH": f"{Path(find_redis_server()).parent}:/usr/bin:/bin",
        **service_env(svc),
    }
    log = (tmp / "redis.log").open("w")
    proc = subprocess.Popen(
        ["sh", "-c", script],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"redis://:{PASSWORD}@127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url, socket_connect_timeout=1)

    def up() -> bool:
        try:
            return bool(client.ping())
        except redis.ConnectionError:
            return False

    try:
        wait_for(up, timeout=15, what="compose redis")
        yield {"url": url, "port": port, "proc": proc, "dir": tmp, "client": client}
    finally:
        client.close()
        proc.terminate()
        proc.wait(timeout=15)
        log.close()


def test_redis_requires_the_password_and_appends_to_disk(compose_redis) -> None:
    # raw RESP, so no client library retries hide the answer
    with socket.create_connection(("127.0.0.1", compose_redis["port"]), timeout=5) as sock:
        sock.sendall(b"PING\r\n")
        assert sock.recv(256).startswith(b"-NOAUTH")
        sock.sendall(b"AUTH wrong-password\r\n")
        assert sock.recv(256).startswith(b"-WRONGPASS")
        sock.sendall(f"AUTH {PASSWORD}\r\nPING\r\n".encode())
        assert wait_for(lambda: b"+PONG" in (buf := sock.recv(256)) and buf, timeout=5)
    client = compose_redis["client"]
    value = next(iter(client.config_get("appendonly").values()))
    assert value in ("yes", b"yes")
    client.set("deploy-test", "1")
    assert wait_for(lambda: list((compose_redis["dir"] / "data").rglob("*.aof")), timeout=10)
    # the password sits in a 0600 file, never on the command line (`ps` shows that)
    conf = compose_redis["dir"] / "auth.conf"
    assert stat.S_IMODE(conf.stat().st_mode) == 0o600
    cmdline = Path(f"/proc/{compose_redis['proc'].pid}/cmdline").read_bytes()
    assert PASSWORD.encode() not in cmdline


#: Where the compose volumes are mounted in the containers (moved under tmp here).
CONTAINER_DIR = "/var/lib/sentri/"


def local_path(value: str, root: Path) -> str:
    """A container path under /var/lib/sentri/ moved under ``root`` (and created)."""
    if not value.startswith(CONTAINER_DIR):
        return value
    path = root / value[len(CONTAINER_DIR) :]
    (path.parent if path.suffix else path).mkdir(parents=True, exist_ok=True)  # file or dir
    return str(path)


def _service_env(compose: dict, name: str, redis_url: str, port_factory, state: Path) -> dict:
    """The compose environment of ``name`` with addresses moved to loopback free ports
    and volume paths under ``state.parent``."""
    env = service_env(compose["services"][name])
    env["REDIS_URL"] = redis_url
    rewrites = {
        "SENTRI_GENERAL__STATE_DIR": str(state),
        "SENTRI_INGEST__BIND_HOST": "127.0.0.1",
        "SENTRI_GATEWAY__HOST": "127.0.0.1",
    }
    for key in list(env):
        if key in rewrites:
            env[key] = rewrites[key]
        elif env[key].startswith(CONTAINER_DIR):
            env[key] = local_path(env[key], state.parent)
        elif key.endswith(("_PORT",)) and key.startswith("SENTRI_"):
            env[key] = str(port_factory())
        elif key.endswith("__INGEST_PUB"):
            env[key] = f"tcp://127.0.0.1:{port_factory()}"
    env.setdefault("SENTRI_GENERAL__STATE_DIR", str(state))
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("SENTRI_") and k != "REDIS_URL"},
        **env,
        "YOLO_OFFLINE": "1",
        # quoted: env values are YAML scalars and a trailing ":" would make a mapping
        "SENTRI_REDIS__PREFIX": f'"deploytest{os.getpid()}:"',
    }


@pytest.mark.parametrize("name", ["ingest", "gateway", "analyst"])
def test_service_starts_with_its_compose_env_passes_the_health_probe_and_stops(
    name, compose, compose_redis, port_factory, tmp_path
) -> None:
    env = _service_env(compose, name, compose_redis["url"], port_factory, tmp_path / "state")
    cmd = compose["services"][name]["command"]
    log = tmp_path / f"{name}.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [bin_path("sentri"), *cmd], env=env, stdout=out, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            test = compose["services"][name]["healthcheck"]["test"]
            if len(test) > 2:  # explicit URL (the gateway): same path, our port
                url = f"http://127.0.0.1:{env['SENTRI_GATEWAY__PORT']}/{test[-1].split('/', 3)[3]}"
            else:  # the image default: the metrics port from the environment
                url = healthcheck.default_url(env)

            def healthy() -> bool:
                assert proc.poll() is None, (
                    f"{name} exited {proc.returncode}:\n{log.read_text()[-3000:]}"
                )
                return healthcheck.probe(url, timeout=2) is None

            wait_for(healthy, timeout=60, interval=0.2, what=f"{name} healthy at {url}")
            probe = subprocess.run(
                [sys.executable, str(Path(healthcheck.__file__)), url],
                capture_output=True,
                timeout=30,
            )
            assert probe.returncode == 0
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            try:
                code = proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                pytest.fail(f"{name} ignored SIGTERM for 20 s:\n{log.read_text()[-3000:]}")
    # within the compose stop_grace_period; uvicorn re-raises SIGTERM after its clean
    # shutdown, so the gateway's status is -15 rather than 0
    assert code in (0, -signal.SIGTERM), (
        f"{name} exited {code} on SIGTERM:\n{log.read_text()[-3000:]}"
    )
    if name == "gateway":  # the first-start admin credential the deploy docs point to
        assert (tmp_path / "state" / "admin-password.txt").exists()


def test_demo_profile_provisions_curve_keys_and_the_agent_streams(
    compose, compose_redis, port_factory, tmp_path
) -> None:
    """The demo profile for real, without Docker: ingest with its compose env, the
    demo-keys script, then edge-demo's command; its frames reach the fan-out, so the
    agent pinned the right server key and its key was approved via authorized_keys."""
    import msgpack
    import zmq

    from shared.fanout import FanoutKeys
    from shared.keys import Keys
    from shared.security import AgentKeyStore, client_socket_options

    services = compose["services"]
    ingest_vols = {v.split(":")[1]: v.split(":")[0] for v in services["ingest"]["volumes"]}
    keys_vols = {v.split(":")[1]: v.split(":")[0] for v in services["demo-keys"]["volumes"]}
    agent_vols = {v.split(":")[1]: v.split(":")[0] for v in services["edge-demo"]["volumes"]}
    authorized = service_env(services["ingest"])["SENTRI_INGEST__AUTHORIZED_KEYS"]
    # the volumes connect the three: same named volume at the same path
    assert keys_vols[authorized] == ingest_vols[authorized] == "agent-keys"
    assert services["ingest"]["volumes"][1].endswith(":ro")  # ingest only reads them
    assert agent_vols == {"/var/lib/sentri/demo-agent": "demo-agent"}
    assert keys_vols["/var/lib/sentri/demo-agent"] == "demo-agent"
    assert keys_vols["/var/lib/sentri/state"] == ingest_vols["/var/lib/sentri/state"]
    assert services["demo-keys"]["depends_on"]["ingest"]["condition"] == "service_healthy"
    assert (services["edge-demo"]["depends_on"]["demo-keys"]["condition"]
            == "service_completed_successfully")  # fmt: skip

    root = tmp_path
    env = _service_env(compose, "ingest", compose_redis["url"], port_factory, root / "state")
    prefix = env["SENTRI_REDIS__PREFIX"].strip('"')
    env["SENTRI_REDIS__PREFIX"] = f'"{prefix}demo:"'
    env["SENTRI_INGEST__AUTHORIZED_KEYS_RESCAN_S"] = "0.2"  # the test need not wait 10 s
    procs: list[subprocess.Popen] = []
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.setsockopt(zmq.LINGER, 0)
    fanout_keys = None
    log = (tmp_path / "demo.log").open("w")
    try:
        ingest = subprocess.Popen([bin_path("sentri"), *services["ingest"]["command"]], env=env,
                                  stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)  # fmt: skip
        procs.append(ingest)
        url = healthcheck.default_url(env)
        wait_for(lambda: ingest.poll() is None and healthcheck.probe(url, timeout=2) is None,
                 timeout=60, interval=0.2, what="ingest healthy")  # fmt: skip
        # compose turns the fan-out's CURVE on: subscribe like a worker does, with a
        # key pair registered in Redis and ingest's published fan-out key
        assert service_env(services["ingest"])["SENTRI_INGEST__FANOUT_CURVE"] == "on"
        fanout_keys = FanoutKeys(compose_redis["client"], Keys(f"{prefix}demo:")).start()

        def published():  # ingest answers its health check before it publishes
            fanout_keys.refresh()
            return fanout_keys.credentials

        creds = wait_for(published, timeout=30, interval=0.2, what="ingest's fan-out key")
        client_socket_options(sub, creds.public, creds.secret, creds.server_key)
        sub.connect(f"tcp://127.0.0.1:{env['SENTRI_INGEST__PUB_PORT']}")

        # demo-keys: its own script, container paths moved under tmp_path
        script = services["demo-keys"]["command"][0].replace(CONTAINER_DIR, f"{root}/")
        keys_env = {**env, **service_env(services["demo-keys"])}
        keys_env["SENTRI_GENERAL__STATE_DIR"] = str(root / "state")
        keys_env["PATH"] = f"{Path(bin_path('sentri-edge')).parent}:{os.environ['PATH']}"
        entrypoint = services["demo-keys"]["entrypoint"]
        assert entrypoint == ["sh", "-ec"]
        done = subprocess.run([*entrypoint, script], env=keys_env, capture_output=True,
                              text=True, timeout=60)  # fmt: skip
        assert done.returncode == 0, done.stderr
        agent_public = (root / "demo-agent" / "edge.public").read_text().strip()
        assert (root / "agent-keys" / "demo.public").read_text().strip() == agent_public
        store = AgentKeyStore(compose_redis["client"], Keys(f"{prefix}demo:"))
        wait_for(lambda: store.status(agent_public) in ("approved", b"approved"), timeout=10,
                 what="demo key approved through authorized_keys")  # fmt: skip

        # edge-demo: its command, with the loopback endpoints instead of `--server ingest`
        cmd = [local_path(a, root) if a.startswith(CONTAINER_DIR) else a
               for a in services["edge-demo"]["command"]]  # fmt: skip
        at = cmd.index("--server")
        cmd[at : at + 2] = [
            "--frame-endpoint", f"tcp://127.0.0.1:{env['SENTRI_INGEST__FRAME_PORT']}",
            "--control-endpoint", f"tcp://127.0.0.1:{env['SENTRI_INGEST__CONTROL_PORT']}",
        ]  # fmt: skip
        agent = subprocess.Popen([bin_path("sentri-edge"), *cmd], env=keys_env, stdout=log,
                                 stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)  # fmt: skip
        procs.append(agent)

        def demo_frame() -> bool:
            while sub.poll(100):
                _topic, header, _jpeg = sub.recv_multipart()
                if msgpack.unpackb(header)["camera_id"].startswith("demo/"):
                    return True
            return False

        wait_for(demo_frame, timeout=30, interval=0, what="demo frames through CURVE")
    finally:
        for proc in reversed(procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        sub.close(0)
        if fanout_keys is not None:
            fanout_keys.stop()
        ctx.term()
        log.close()
