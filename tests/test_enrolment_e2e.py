"""The seed's one-liner, end to end with real processes: `sentri up` (ingest, one
worker, gateway; no demo agent), then `start_camera_client.sh --server
http://127.0.0.1:PORT --client-id cam1 --source demo:bus` and nothing else.  Its key shows as pending in
the API, an admin approves it through the API, frames of cam1/demo-bus reach the
worker.  Then ingest's key changes behind the agent's back: the agent refuses it,
says why and how to fix it, and exits 3."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading

import httpx
import psutil

from shared.security import fingerprint, write_keypair
from tests.helpers import wait_for

ROOT = os.path.dirname(os.path.abspath(__file__)).rsplit(os.sep, 1)[0]
PASSWORD = "enrol-e2e-password"


def _stop(proc: subprocess.Popen, timeout: float = 30) -> int | None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        return None


def _reader(proc: subprocess.Popen, lines: list[str]) -> threading.Thread:
    t = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    t.start()
    return t


def test_seed_one_liner_enrols_through_the_gateway(redis_url, prefix, port_factory, tmp_path):
    fp, cp, pp, gp = (port_factory() for _ in range(4))
    state = tmp_path / "state"
    base = {k: v for k, v in os.environ.items() if not k.startswith(("SENTRI_", "REDIS_URL"))}
    base["PYTHONPATH"] = ROOT
    env = {
        **base, "REDIS_URL": redis_url, "SENTRI_REDIS__PREFIX": f'"{prefix}"',
        "SENTRI_INGEST__FRAME_PORT": str(fp), "SENTRI_INGEST__CONTROL_PORT": str(cp),
        "SENTRI_INGEST__PUB_PORT": str(pp), "SENTRI_GATEWAY__ADMIN_PASSWORD": PASSWORD,
        "SENTRI_GATEWAY__PASSWORD_HASH_TIME_COST": "1",
        "SENTRI_GATEWAY__PASSWORD_HASH_MEMORY_KIB": "1024",
        "SENTRI_ANALYST__PROVIDER__TYPE": "offline",
    }  # fmt: skip
    up = subprocess.Popen(
        [sys.executable, "-m", "sentri_cli.main", "up", "--only", "ingest", "--only", "analyst",
         "--only", "gateway", "--state-dir", str(state), "--gateway-port", str(gp)],
        env=env, cwd=ROOT, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    up_lines: list[str] = []
    up_reader = _reader(up, up_lines)
    url = f"http://127.0.0.1:{gp}"
    agent: subprocess.Popen | None = None
    agent_lines: list[str] = []
    try:

        def healthy() -> bool:
            assert up.poll() is None, "".join(up_lines)[-3000:]
            try:
                return httpx.get(f"{url}/healthz", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(healthy, 90, interval=0.3, what="gateway /healthz under sentri up")
        agent_env = {
            **base, "SENTRI_PYTHON": sys.executable, "SENTRI_GENERAL__STATE_DIR": str(tmp_path / "camera-machine"),
            # short retries so the test does not wait on defaults meant for real networks
            "SENTRI_EDGE__REFUSED_RETRY_S": "0.5", "SENTRI_EDGE__KEY_RECHECK_S": "1",
            "SENTRI_EDGE__REPLY_TIMEOUT_S": "2", "SENTRI_EDGE__FPS": "5",
        }  # fmt: skip
        agent = subprocess.Popen(
            # the seed's wrapper script, as a migrating user types it
            [os.path.join(ROOT, "edge_agent", "start_camera_client.sh"), "--server", url,
             "--client-id", "cam1", "--source", "demo:bus"],
            env=agent_env, cwd=ROOT, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )  # fmt: skip
        agent_reader = _reader(agent, agent_lines)

        def printed_fingerprint() -> str | None:
            m = re.search(r"key fingerprint is ([0-9a-f:]{39})", "".join(agent_lines))
            return m.group(1) if m else None

        agent_fp = wait_for(printed_fingerprint, 60, what="the agent printing its fingerprint")
        admin = httpx.Client(
            base_url=url, timeout=10, headers={"Origin": url}
        )  # same-origin writes
        assert admin.post(
            "/api/auth/login", json={"username": "admin", "password": PASSWORD}
        ).is_success

        def pending() -> list[dict]:
            return [k for k in admin.get("/api/agents/keys").json() if k["status"] == "pending"]

        [key] = wait_for(pending, 30, what="the agent's key pending in the API")
        assert key["fingerprint"] == agent_fp  # what the admin compares before approving
        assert admin.get("/api/distributed/clients").json()["clients"] == []  # nothing got in
        assert admin.post(f"/api/agents/keys/{agent_fp}/approve").status_code == 200

        def analysed() -> dict | None:
            r = admin.get("/api/cameras/cam1/demo-bus")
            st = r.json().get("worker_stats", {}).get("analyst") if r.status_code == 200 else None
            return st if st and int(st.get("received", st.get("processed", 0))) > 0 else None

        wait_for(analysed, 60, interval=0.5, what="cam1/demo-bus frames at the analyst worker")
        assert agent.poll() is None

        # Ingest's key changes behind the agent's back (new key pair, ingest restarted).
        old = (state / "keys" / "ingest.public").read_text().strip()
        new, _ = write_keypair(state / "keys", "ingest")
        [ingest] = [p for p in psutil.Process(up.pid).children(recursive=True)
                    if "services.ingest" in " ".join(p.cmdline())]  # fmt: skip
        ingest.kill()  # sentri up restarts it, with the new key
        code = agent.wait(60)
        agent_reader.join(5)
        out = "".join(agent_lines)
        assert code == 3, out[-3000:]
        assert "REFUSING ingest" in out and fingerprint(new) in out and fingerprint(old) in out
        assert "pinned-ingest-127.0.0.1_" in out and "--server-key" in out
        assert "Traceback" not in out
    finally:
        if agent is not None:
            _stop(agent)
        code = _stop(up)
        up_reader.join(5)
    assert code == 0, "".join(up_lines)[-3000:]
