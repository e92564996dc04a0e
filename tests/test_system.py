"""`sentri up --demo` as a user runs it: one command brings up Redis, ingest, every
worker, the gateway and a demo agent; the API shows the demo cameras and real
detections; Ctrl-C stops everything.  The agent talks to ingest with CURVE (the
default): `sentri up` made both key pairs and approved the demo agent's key."""

from __future__ import annotations

import json
import os
import secrets
import signal
import stat
import subprocess
import sys

import httpx
import psutil
import pytest

from tests.helpers import wait_for

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

pytestmark = pytest.mark.slow


# auto: ingest binds loopback, so the fan-out is plaintext; on: workers and the gateway's
# live view subscribe with CURVE, with keys they registered in Redis by themselves.
@pytest.mark.parametrize("fanout_curve", ["auto", "on"])
def test_sentri_up_demo_end_to_end(tmp_path, port_factory, fanout_curve) -> None:
    fp, cp, pp, gp = (port_factory() for _ in range(4))
    password = secrets.token_urlsafe(16)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SENTRI_", "REDIS_URL"))}
    env.update(
        PYTHONPATH=ROOT,
        SENTRI_INGEST__FRAME_PORT=str(fp),
        SENTRI_INGEST__CONTROL_PORT=str(cp),
        SENTRI_INGEST__PUB_PORT=str(pp),
        SENTRI_INGEST__FANOUT_CURVE=fanout_curve,
        SENTRI_GATEWAY__ADMIN_PASSWORD=password,
        SENTRI_GATEWAY__PASSWORD_HASH_TIME_COST="1",
        # The fastest detector set-up for a test: no ONNX export on first start.
        SENTRI_DETECTOR__BACKEND__TYPE="torch",
        SENTRI_DETECTOR__IMGSZ="320",
    )
    log = open(tmp_path / "up.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sentri_cli.main",
            "up",
            "--demo",
            "--state-dir",
            str(tmp_path / "state"),
            "--gateway-port",
            str(gp),
        ],  # fmt: skip
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=ROOT,  # fmt: skip
    )
    base = f"http://127.0.0.1:{gp}"
    try:

        def healthy() -> bool:
            try:
                return httpx.get(f"{base}/healthz", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(healthy, 90, interval=0.5, what="gateway /healthz")
        children = psutil.Process(proc.pid).children(recursive=True)
        names = " ".join(" ".join(c.cmdline()) for c in children)
        for part in ("services.ingest", "services.detector", "services.faces", "services.analyst",
                     "services.recorder", "services.archiver", "services.gateway", "edge_agent",
                     "redis-server"):  # fmt: skip
            assert part in names, f"{part} not running under sentri up"
        # Every direct child leads its own process group: Ctrl-C in the terminal reaches
        # only `sentri up`, which then stops them in order.
        direct = psutil.Process(proc.pid).children()
        assert all(os.getpgid(c.pid) == c.pid != os.getpgid(proc.pid) for c in direct)

        # The runtime file: 0600, the Redis URL, found by `sentri status` without flags.
        runtime = tmp_path / "state" / "runtime.json"
        assert stat.S_IMODE(runtime.stat().st_mode) == 0o600
        info = json.loads(runtime.read_text())
        assert info["pid"] == proc.pid and info["gateway"]["port"] == gp
        status_env = {**env, "SENTRI_STATE_DIR": str(tmp_path / "state")}

        client = httpx.Client(base_url=base, timeout=10)
        assert client.get("/api/distributed/clients").status_code == 401  # no anonymous access
        r = client.post("/api/auth/login", json={"username": "admin", "password": password})
        assert r.status_code == 200, r.text

        def demo_online():
            body = client.get("/api/distributed/clients").json()
            demo = [c for c in body["clients"] if c["client_id"] == "demo"]
            return (
                demo and demo[0]["status"] == "online" and len(demo[0]["cameras"]) == 3 and demo[0]
            )

        demo = wait_for(demo_online, 60, interval=0.5, what="demo agent with 3 cameras")
        assert {c["camera_id"] for c in demo["cameras"]} == {
            "demo/demo-bus", "demo/demo-zidane", "demo/demo-astronaut"}  # fmt: skip

        def people_on_bus():
            latest = client.get("/api/detections", params={"camera_id": "demo/demo-bus"}).json()[
                "latest"
            ]
            rec = latest.get("demo/demo-bus")
            return rec and sum(o["class"] == "person" for o in rec["objects"]) >= 2 and rec

        wait_for(people_on_bus, 150, interval=1.0, what="person detections on the bus camera")
        # The gateway's live view gets frames through the fan-out too.
        snap = wait_for(
            lambda: (s := client.get("/api/cameras/demo/demo-bus/snapshot.jpg")).status_code
            == 200 and s,
            30, interval=1.0, what="a live frame at the gateway",
        )  # fmt: skip
        assert snap.content[:2] == b"\xff\xd8", snap.text[:200]
        # Encrypted and authenticated: the one agent key is approved and bound to "demo".
        agent_public = (tmp_path / "state" / "keys" / "edge.public").read_text().strip()
        agent_keys = client.get("/api/agents/keys").json()
        assert [(k["key"], k["status"], k["client_ids"]) for k in agent_keys] == [
            (agent_public, "approved", ["demo"])
        ]
        wait_for(lambda: client.get("/api/events", params={"type": "object_entered"}).json()["events"],
                 60, interval=1.0, what="an object_entered event")  # fmt: skip
        status = subprocess.run([sys.executable, "-m", "sentri_cli.main", "status"], env=status_env,
                                cwd=ROOT, capture_output=True, text=True, timeout=60)  # fmt: skip
        assert status.returncode == 0 and "demo/demo-bus" in status.stdout, status.stderr
        children = psutil.Process(proc.pid).children(recursive=True)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            code = proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = None
        log.close()
    output = (tmp_path / "up.log").read_text()
    assert code == 0, output[-3000:]
    assert "security=curve" in output and "--server-key" in output
    assert f"fanout={'curve' if fanout_curve == 'on' else 'plaintext'}" in output, output[-3000:]
    # Stopped in order (agent, workers, gateway, ingest, Redis last), nothing left over.
    assert (
        "order=edge-demo,detector,faces,analyst,recorder,archiver,notifier,gateway,ingest,redis"
        in output
    ), output[-3000:]
    assert not runtime.exists(), "runtime.json left behind after a clean stop"
    assert not [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
