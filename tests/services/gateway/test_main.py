"""`python -m services.gateway`: a real process, ready line, health, clean SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading

import httpx
import pytest

from services.gateway.__main__ import main
from tests.helpers import wait_for


def test_help_lists_the_main_options(capsys):
    try:
        main(["--help"])
    except SystemExit as exc:
        assert exc.code == 0
    out = capsys.readouterr().out
    for flag in ("--config FILE", "--redis-url URL", "--host", "--port", "--metrics-port PORT"):
        assert flag in out


def test_bad_config_fails_with_the_field_named(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("gateway:\n  port: 70000\n")
    assert main(["--config", str(cfg), "--redis-url", "redis://127.0.0.1:1/0"]) == 2
    assert "gateway.port" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--metrics-port", "70000"])
    assert "port must be 0..65535" in capsys.readouterr().err


def test_process_serves_and_stops_on_sigterm(redis_url, prefix, port_factory, tmp_path):
    port = port_factory()
    metrics_port = port_factory()
    env = {
        **os.environ,
        "REDIS_URL": redis_url,
        "SENTRI_REDIS__PREFIX": prefix,
        "SENTRI_STATE_DIR": str(tmp_path),
        "SENTRI_GATEWAY__PASSWORD_HASH_MEMORY_KIB": "1024",
        "SENTRI_GATEWAY__PASSWORD_HASH_TIME_COST": "1",
        "SENTRI_GENERAL__METRICS_PORT": str(metrics_port),
    }
    env.pop("SENTRI_GATEWAY__ADMIN_PASSWORD", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "services.gateway", "--port", str(port), "--ingest-pub",
         f"tcp://127.0.0.1:{port_factory()}"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    out: list[str] = []
    err: list[str] = []
    threading.Thread(target=lambda: out.extend(proc.stdout), daemon=True).start()
    threading.Thread(target=lambda: err.extend(proc.stderr), daemon=True).start()
    try:
        wait_for(lambda: any("gateway ready" in line for line in err), 30, 0.1, "ready line")

        def healthy():
            try:
                return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(healthy, 20, 0.1, "healthz")
        # general.metrics_port: Prometheus scrapes without a token (internal network).
        scraped = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5)
        assert scraped.status_code == 200 and "sentri_gateway_http_requests_total" in scraped.text
        # The generated admin password is printed once to stdout (never to the log on stderr).
        password = wait_for(
            lambda: next((ln.split("password:")[1].split("|")[0].strip() for ln in out if "password:" in ln), None),
            10, 0.1, "banner",
        )  # fmt: skip
        assert password not in "".join(err)
        saved = (tmp_path / "admin-password.txt").read_text()
        assert password in saved
        resp = httpx.post(
            f"http://127.0.0.1:{port}/api/auth/login",
            json={"username": "admin", "password": password},
            timeout=5,
        )
        assert resp.status_code == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
