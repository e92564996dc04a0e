"""`sentri up` as an operator meets it (issue 12, items 1, 10 and 19), with the real
command, a real embedded Redis and a real ingest: the state-dir lock, the runtime file
that `sentri status`/`sentri events` find without flags, the supervised Redis, clear
failures (port taken, a child's configuration error) and a clean stop."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from shared.redisutil import connect
from tests.helpers import wait_for

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def home(tmp_path) -> Path:
    return tmp_path / "home"


@pytest.fixture
def env(home, port_factory) -> dict[str, str]:
    """No flags needed: the default state dir lives under this test's HOME."""
    e = {k: v for k, v in os.environ.items() if not k.startswith(("SENTRI_", "REDIS_URL"))}
    e.update(
        HOME=str(home),
        PYTHONPATH=str(ROOT),
        SENTRI_INGEST__FRAME_PORT=str(port_factory()),
        SENTRI_INGEST__CONTROL_PORT=str(port_factory()),
        SENTRI_INGEST__PUB_PORT=str(port_factory()),
    )
    return e


def sentri(*args: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sentri_cli.main", *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)  # fmt: skip


def start_up(env: dict[str, str], log: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "sentri_cli.main", "up", *args],
        env=env, cwd=ROOT, stdout=log.open("wb"), stderr=subprocess.STDOUT,
        start_new_session=True,  # its own group, like a shell job: Ctrl-C goes to the group
    )  # fmt: skip


def redis_child(up: subprocess.Popen) -> psutil.Process | None:
    for c in psutil.Process(up.pid).children():
        if "redis-server" in " ".join(c.cmdline()):
            return c
    return None


def test_runtime_file_lock_supervised_redis_and_clean_stop(env, home, tmp_path) -> None:
    state = home / ".local" / "state" / "sentri"
    runtime = state / "runtime.json"
    up = start_up(env, tmp_path / "up.log", "--only", "ingest")
    children: list[psutil.Process] = []
    try:
        wait_for(lambda: runtime.exists() or up.poll() is not None, 60, what="runtime.json")
        assert up.poll() is None, (tmp_path / "up.log").read_text()
        assert stat.S_IMODE(runtime.stat().st_mode) == 0o600
        info = json.loads(runtime.read_text())
        assert info["pid"] == up.pid and info["redis_embedded"] is True
        assert info["ingest"]["frame_port"] == int(env["SENTRI_INGEST__FRAME_PORT"])
        r = connect(info["redis_url"])
        assert r.ping()
        assert r.config_get("maxmemory-policy")["maxmemory-policy"] == "noeviction"
        wait_for(lambda: "ingest ready" in (tmp_path / "up.log").read_text(), 60, what="ingest")
        children = psutil.Process(up.pid).children(recursive=True)
        # Ctrl-C in the terminal reaches only `sentri up`: children have their own groups.
        assert all(os.getpgid(c.pid) != os.getpgid(up.pid) for c in children)
        # The secret is not on any command line.
        assert not [c for c in children if info["redis_url"].split(":")[2].split("@")[0]
                    in " ".join(c.cmdline())]  # fmt: skip

        # Operators' tools find this Redis without flags.
        res = sentri("status", env=env)
        assert res.returncode == 0 and "No clients registered" in res.stdout, res.stderr
        assert f"sentri up (pid {up.pid})" in res.stdout and "ingest running" in res.stdout
        r.xadd("sentri:stream:events", {"type": "object_entered", "data": '{"type": "x"}'})
        res = sentri("events", "--group", "ops", env=env)
        assert res.returncode == 0 and '"type": "x"' in res.stdout, res.stderr

        # A second `sentri up` on the same state dir refuses, clearly.
        second = sentri("up", "--only", "ingest", env=env)
        assert second.returncode == 1 and "already running on state dir" in second.stderr

        # kill -9 of the embedded Redis: back on the same port, password and data dir.
        r.set("sentri:probe", "kept")
        old = redis_child(up)
        assert old is not None
        old.kill()
        old.wait(5)
        new = wait_for(lambda: (p := redis_child(up)) and p.pid != old.pid and p, 15,
                       what="redis restarted")  # fmt: skip
        wait_for(lambda: _pings(r), 15, what="redis answering on the same URL")
        assert r.get("sentri:probe") == "kept"
        # `sentri status` shows what runs under this `sentri up`, with restarts.
        wait_for(lambda: "redis running (1 restarts)" in sentri("status", env=env).stdout, 30,
                 interval=0.5, what="status showing the restart")  # fmt: skip
        children.append(new)
        assert up.poll() is None
        r.close()
    finally:
        # Ctrl-C in a terminal: SIGINT to the foreground process group, i.e. `sentri up`'s.
        os.killpg(up.pid, signal.SIGINT)
        code = up.wait(60)
    out = (tmp_path / "up.log").read_text()
    assert code == 0, out[-3000:]
    assert not runtime.exists(), "runtime file left behind after a clean stop"
    assert not [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
    assert "order=ingest,redis" in out
    assert "Traceback" not in out, out[-3000:]  # Redis outlived ingest: no failed final writes
    # Without a running `sentri up`, the tools say so.
    res = sentri("status", env=env)
    assert res.returncode == 2 and "no `sentri up` running" in res.stderr


def _pings(r) -> bool:
    try:
        return bool(r.ping())
    except Exception:  # noqa: BLE001 - not back yet
        return False


def test_gateway_port_taken_fails_at_once_without_a_dashboard_url(env, port_factory) -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", port_factory()))
    taken.listen(1)
    port = taken.getsockname()[1]
    try:
        res = sentri("up", "--only", "gateway", "--gateway-port", str(port), env=env)
    finally:
        taken.close()
    assert res.returncode == 1, res.stdout + res.stderr
    assert f"port {port} on 127.0.0.1 (gateway.port) is already in use" in res.stderr
    assert "Dashboard" not in res.stdout and "msg=restarting" not in res.stdout + res.stderr


def test_a_child_with_a_configuration_error_stops_everything(env, tmp_path) -> None:
    env = {**env, "SENTRI_ANALYST__MIN_INTERVAL_S": "-5"}
    res = sentri("up", "--only", "analyst", env=env, timeout=120)
    out = res.stdout + res.stderr
    assert res.returncode == 2, out[-3000:]
    assert "analyst exited with a configuration error (exit code 2)" in res.stderr
    assert "msg=restarting" not in out and "Dashboard" not in out
    assert not (tmp_path / "home" / ".local" / "state" / "sentri" / "runtime.json").exists()


def test_killed_supervisor_takes_its_children_along(env, home, tmp_path) -> None:
    """kill -9 of `sentri up`: Redis and ingest get the parent-death signal, the lock
    is free again, and the left-over runtime file is reported as stale."""
    runtime = home / ".local" / "state" / "sentri" / "runtime.json"
    up = start_up(env, tmp_path / "up.log", "--only", "ingest")
    try:
        wait_for(lambda: "ingest ready" in (tmp_path / "up.log").read_text() or up.poll(), 60,
                 what="ingest ready")  # fmt: skip
        assert up.poll() is None, (tmp_path / "up.log").read_text()
        children = psutil.Process(up.pid).children(recursive=True)
        assert len(children) == 2  # redis-server and ingest
    finally:
        up.kill()
        up.wait(10)
    wait_for(lambda: not [c for c in children if c.is_running()
                          and c.status() != psutil.STATUS_ZOMBIE], 15,
             what="children gone with their supervisor")  # fmt: skip
    assert runtime.exists()
    res = sentri("status", env=env)
    assert res.returncode == 2 and "stale" in res.stderr, res.stderr
    # The lock died with it: a new `sentri up` starts on the same state dir.
    again = start_up(env, tmp_path / "again.log", "--only", "ingest")
    try:
        wait_for(lambda: "ingest ready" in (tmp_path / "again.log").read_text() or again.poll(),
                 60, what="second start")  # fmt: skip
        assert again.poll() is None, (tmp_path / "again.log").read_text()
    finally:
        os.killpg(again.pid, signal.SIGINT)
        assert again.wait(60) == 0
