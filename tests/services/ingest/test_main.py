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
from tests.helpers import wait_for

from .emulators import Agent

ROOT = Path(__file__).resolve().parents[3]


def test_module_entry_point_serves_and_stops_on_sigterm(
    redis_url, prefix, keys, r, tmp_path, port_factory
):
    metrics_port = port_factory()
    cfg = tmp_path / "sentri.yaml"
    cfg.write_text(f'redis:\n  prefix: "{prefix}"\ngeneral:\n  metrics_port: {metrics_port}\n')
    env = {**os.environ, "REDIS_URL": redis_url, "PYTHONPATH": str(ROOT)}
    env.pop("SENTRI_CONFIG", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "services.ingest", "--config", str(cfg),
         "--frame-port", "0", "--control-port", "0", "--pub-port", "0"],
        cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True)
    reader.start()
    ctx = zmq.Context()
    try:
        ready = wait_for(
            lambda: next((ln for ln in lines if "ingest ready" in ln), None) or proc.poll(),
            timeout=20, what="ready log line",
        )  # fmt: skip
        assert isinstance(ready, str), f"exited early: {''.join(lines)}"
        ports = {k: int(v) for k, v in re.findall(r"(\w+_port)=(\d+)", ready)}
        agent = Agent(ctx, "edge1", control_port=ports["control_port"],
                      frame_port=ports["frame_port"])  # fmt: skip
        agent.register()
        wait_for(lambda: registry.get_client(r, keys, "edge1"), what="registered via the CLI")
        agent.close()
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as resp:
            text = resp.read().decode()
        assert "sentri_ingest_clients_connected 1.0" in text
        assert 'sentri_ingest_control_messages_total{type="register"} 1.0' in text

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
        reader.join(5)
        assert any("ingest stopped" in ln for ln in lines), "".join(lines)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        ctx.destroy(linger=0)


def test_help_lists_subcommands_and_options(capsys):
    from services.ingest.__main__ import main

    try:
        main(["--help"])
    except SystemExit as exc:
        assert exc.code == 0
    out = capsys.readouterr().out
    for word in ("--config", "--redis-url", "run", "cleanup", "SENTRI_INGEST__"):
        assert word in out
