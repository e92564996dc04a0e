"""`sentri up` wires CURVE by itself: ingest's key pair, the demo agent's key pair
approved for client id "demo", the agent started with ingest's public key; and the
banner tells how a remote agent joins. `--insecure` runs plaintext."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import threading

import msgpack
import pytest
import zmq

from sentri_cli.up import remote_agent_hint
from shared.security import AgentKeyStore, fingerprint
from tests.helpers import wait_for

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.parametrize("insecure", [False, True], ids=["curve", "insecure"])
def test_sentri_up_demo_wires_agent_keys(insecure, redis_url, prefix, keys, r, port_factory,
                                         tmp_path) -> None:  # fmt: skip
    fp, cp, pp = port_factory(), port_factory(), port_factory()
    state = tmp_path / "state"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SENTRI_", "REDIS_URL"))}
    env.update(
        PYTHONPATH=ROOT, REDIS_URL=redis_url, SENTRI_REDIS__PREFIX=f'"{prefix}"',
        SENTRI_INGEST__FRAME_PORT=str(fp), SENTRI_INGEST__CONTROL_PORT=str(cp),
        SENTRI_INGEST__PUB_PORT=str(pp),
    )  # fmt: skip
    args = [sys.executable, "-m", "sentri_cli.main", "up", "--only", "ingest", "--demo",
            "--demo-source", "demo:bus", "--state-dir", str(state)]  # fmt: skip
    proc = subprocess.Popen(
        args + (["--insecure"] if insecure else []), env=env, cwd=ROOT, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.setsockopt(zmq.LINGER, 0)
    sub.connect(f"tcp://127.0.0.1:{pp}")
    try:

        def demo_frame() -> bool:
            assert proc.poll() is None, "".join(lines)
            while sub.poll(100):
                _topic, header, _jpeg = sub.recv_multipart()
                if msgpack.unpackb(header)["camera_id"] == "demo/demo-bus":
                    return True
            return False

        wait_for(demo_frame, 45, interval=0, what="demo frames through ingest")
        output = "".join(lines)
        keys_dir = state / "keys"
        if insecure:
            assert not keys_dir.exists()
            assert "INSECURE" in output and "--server-key" not in output
            assert "security=insecure" in output
            assert AgentKeyStore(r, keys).list() == []
        else:
            assert "security=curve" in output
            agent_public = (keys_dir / "edge.public").read_text().strip()
            assert stat.S_IMODE((keys_dir / "edge.secret").stat().st_mode) == 0o600
            assert stat.S_IMODE((keys_dir / "ingest.secret").stat().st_mode) == 0o600
            store = AgentKeyStore(r, keys)
            [rec] = store.list()
            assert (rec["key"], rec["status"], rec["client_id"]) == (
                agent_public,
                "approved",
                "demo",
            )
            assert store.key_for_client("demo") == agent_public  # bound on its first register
            # the banner: how a remote agent joins
            assert f"--server-key {keys_dir}/ingest.public" in output
            # as --server-key=KEY: a z85 key may start with '-', which argparse would
            # take for an option in the two-word form
            ingest_public = (keys_dir / "ingest.public").read_text().strip()
            assert f"--server-key='{ingest_public}'" in output
            assert "approve its fingerprint in the dashboard" in output
            assert fingerprint(agent_public) in output  # logged when approved
    finally:
        sub.close(0)
        ctx.term()
        proc.send_signal(signal.SIGINT)
        try:
            code = proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = None
        reader.join(5)
    assert code == 0, "".join(lines)[-3000:]


def test_remote_agent_hint(tmp_path) -> None:
    (tmp_path / "ingest.public").write_text("k" * 40 + "\n")
    hint = remote_agent_hint(False, "0.0.0.0", 5555, 5556, tmp_path, "http://127.0.0.1:5002")
    assert f"sentri-edge --server HOST --server-key {tmp_path}/ingest.public" in hint
    assert "'" + "k" * 40 + "'" in hint and "http://127.0.0.1:5002 (Agents)" in hint
    assert "BIND_HOST" not in hint
    local = remote_agent_hint(False, "127.0.0.1", 6000, 6001, tmp_path, "x")
    assert "SENTRI_INGEST__BIND_HOST=0.0.0.0" in local
    assert "--frame-endpoint tcp://HOST:6000 --control-endpoint tcp://HOST:6001" in local
    plain = remote_agent_hint(True, "0.0.0.0", 5555, 5556, tmp_path, "x")
    assert "INSECURE" in plain and "--server-key" not in plain


def test_sentri_up_gives_each_service_its_own_metrics_port(redis_url, prefix, port_factory,
                                                           tmp_path) -> None:  # fmt: skip
    import socket
    import urllib.request

    def two_free_ports() -> int:
        """A base port where base and base + 1 can both be bound now (as `sentri up`
        checks them: a port an outgoing connection holds is not free either)."""
        for _ in range(50):
            base = port_factory()
            socks = [socket.socket(), socket.socket()]
            try:
                for i, sock in enumerate(socks):
                    sock.bind(("0.0.0.0", base + i))
                return base
            except OSError:
                continue
            finally:
                for sock in socks:
                    sock.close()
        pytest.fail("no two consecutive free ports in 50 tries")

    base = two_free_ports()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SENTRI_", "REDIS_URL"))}
    env.update(
        PYTHONPATH=ROOT, REDIS_URL=redis_url, SENTRI_REDIS__PREFIX=f'"{prefix}"',
        SENTRI_INGEST__FRAME_PORT=str(port_factory()), SENTRI_INGEST__CONTROL_PORT=str(port_factory()),
        SENTRI_INGEST__PUB_PORT=str(port_factory()), SENTRI_GENERAL__METRICS_PORT=str(base),
    )  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, "-m", "sentri_cli.main", "up", "--only", "ingest", "--only", "analyst",
         "--state-dir", str(tmp_path / "state")],
        env=env, cwd=ROOT, stdout=(tmp_path / "up.log").open("wb"), stderr=subprocess.STDOUT,
    )  # fmt: skip

    def metrics(port: int) -> str:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:
                return resp.read().decode()
        except OSError:
            return ""

    try:
        try:
            assert "sentri_ingest" in wait_for(lambda: metrics(base), 45, what="ingest metrics")
            assert "sentri_analyst" in wait_for(
                lambda: metrics(base + 1), 45, what="analyst metrics"
            )
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{(tmp_path / 'up.log').read_text()[-3000:]}") from None
        assert proc.poll() is None
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(30)
