"""The real entry point: `python -m services.ingest` serves, and stops on SIGTERM."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

import zmq

from shared import registry
from shared.security import AgentKeyStore, fingerprint, generate_keypair
from tests.helpers import wait_for

from .emulators import Agent

ROOT = Path(__file__).resolve().parents[3]


class IngestProcess:
    """`python -m services.ingest ...` with its stderr collected line by line."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "services.ingest", *args,
             "--frame-port", "0", "--control-port", "0", "--pub-port", "0"],
            cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        self.lines: list[str] = []
        self.reader = threading.Thread(
            target=lambda: self.lines.extend(self.proc.stderr), daemon=True
        )
        self.reader.start()

    def ready(self) -> dict[str, str]:
        line = wait_for(
            lambda: next((ln for ln in self.lines if "ingest ready" in ln), None)
            or self.proc.poll(),
            timeout=20, what="ready log line",
        )  # fmt: skip
        assert isinstance(line, str), f"exited early: {''.join(self.lines)}"
        return {k: v.strip('"') for k, v in re.findall(r'(\w+)=("[^"]*"|\S+)', line)}

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=15)
        self.reader.join(5)
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


def _env(redis_url: str, state: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SENTRI_")}
    return {**env, "REDIS_URL": redis_url, "PYTHONPATH": str(ROOT),
            "SENTRI_GENERAL__STATE_DIR": str(state)}  # fmt: skip


def test_entry_point_is_curve_by_default_and_stops_on_sigterm(
    redis_url, prefix, keys, r, tmp_path, port_factory, capsys
):
    """No flag: CURVE. The key `sentri ingest key` prints is the one served; an agent
    key listed in authorized_keys registers at once; a plaintext agent gets nothing."""
    metrics_port = port_factory()
    apub, asec = generate_keypair()
    (tmp_path / "garage.public").write_text(apub + "\n")
    cfg = tmp_path / "sentri.yaml"
    cfg.write_text(
        f'redis:\n  prefix: "{prefix}"\ngeneral:\n  metrics_port: {metrics_port}\n'
        f"ingest:\n  authorized_keys: [{tmp_path / 'garage.public'}]\n"
    )
    env = _env(redis_url, tmp_path / "state")
    ingest = IngestProcess(["--config", str(cfg)], env)
    ctx = zmq.Context()
    try:
        ready = ingest.ready()
        assert ready["security"] == "curve"
        printed = subprocess.run(
            [sys.executable, "-m", "services.ingest", "key"], cwd=ROOT, env=env,
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert printed.returncode == 0, printed.stderr
        assert printed.stdout.split()[0] == ready["server_key"]
        assert fingerprint(ready["server_key"]) in printed.stdout
        ports = {k: int(v) for k, v in ready.items() if k.endswith("_port")}

        plain = Agent(ctx, "intruder", control_port=ports["control_port"],
                      frame_port=ports["frame_port"])  # fmt: skip
        plain.send("register", cameras=[{"name": "cam1"}])
        agent = Agent(ctx, "garage", control_port=ports["control_port"],
                      frame_port=ports["frame_port"], curve=(apub, asec, ready["server_key"]))  # fmt: skip
        agent.register()
        wait_for(lambda: registry.get_client(r, keys, "garage"), what="registered via the CLI")
        assert AgentKeyStore(r, keys).key_for_client("garage") == apub
        assert plain.no_message(0.3)
        assert registry.get_client(r, keys, "intruder") is None
        agent.close()
        plain.close()
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as resp:
            text = resp.read().decode()
        assert "sentri_ingest_clients_connected 1.0" in text
        assert 'sentri_ingest_control_messages_total{type="register"} 1.0' in text

        assert ingest.stop() == 0
        assert any("ingest stopped" in ln for ln in ingest.lines), "".join(ingest.lines)
        assert not any("CURVE is OFF" in ln for ln in ingest.lines)
    finally:
        ingest.kill()
        ctx.destroy(linger=0)


def test_insecure_flag_accepts_plaintext_agents_and_warns(redis_url, prefix, keys, r, tmp_path):
    cfg = tmp_path / "sentri.yaml"
    cfg.write_text(f'redis:\n  prefix: "{prefix}"\n')
    ingest = IngestProcess(["--config", str(cfg), "--insecure"], _env(redis_url, tmp_path))
    ctx = zmq.Context()
    try:
        ready = ingest.ready()
        assert ready["security"] == "insecure"
        warning = wait_for(
            lambda: next((ln for ln in ingest.lines if "CURVE is OFF" in ln), None),
            timeout=5, what="the insecure warning",
        )  # fmt: skip
        assert "level=warning" in warning.lower(), warning
        agent = Agent(ctx, "edge1", control_port=int(ready["control_port"]),
                      frame_port=int(ready["frame_port"]))  # fmt: skip
        agent.register()
        wait_for(lambda: registry.get_client(r, keys, "edge1"), what="plaintext agent registered")
        agent.close()
        assert ingest.stop() == 0
        assert not (tmp_path / "keys").exists()  # no key pair needed, none made
    finally:
        ingest.kill()
        ctx.destroy(linger=0)


def test_a_bad_authorized_keys_entry_fails_at_start(redis_url, tmp_path, monkeypatch, capsys):
    from services.ingest.__main__ import main

    monkeypatch.setenv("SENTRI_INGEST__AUTHORIZED_KEYS", str(tmp_path / "missing.public"))
    monkeypatch.setenv("SENTRI_GENERAL__STATE_DIR", str(tmp_path))
    code = main(["--redis-url", redis_url, "--frame-port", "0", "--control-port", "0",
                 "--pub-port", "0"])  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err
    assert "ingest.authorized_keys" in err and "missing.public" in err


def test_help_lists_subcommands_and_options(capsys):
    from services.ingest.__main__ import main

    try:
        main(["--help"])
    except SystemExit as exc:
        assert exc.code == 0
    out = capsys.readouterr().out
    for word in ("--config", "--redis-url", "run", "cleanup", "key", "--insecure",
                 "--server-key", "SENTRI_INGEST__"):  # fmt: skip
        assert word in out
