"""The supervisor behind `sentri up` (issue 12, item 10), with real child processes:
own process groups, stop order by tier, no restart on a configuration error, a
restart limit, and children that die with their supervisor."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import psutil

from sentri_cli.services import (
    TIER_AGENT,
    TIER_GATEWAY,
    TIER_INGEST,
    TIER_REDIS,
    TIER_WORKER,
)
from sentri_cli.supervisor import Child, Supervisor
from tests.helpers import wait_for

ROOT = Path(__file__).resolve().parents[2]


def _recorder(name: str, log: Path, linger: float = 0.2) -> list[str]:
    """A child that records its SIGTERM and its exit (after ``linger`` s) in ``log``."""
    code = textwrap.dedent(f"""
        import os, signal, sys, time
        def on_term(*_):
            with open({str(log)!r}, "a") as f:
                f.write("term {name}\\n")
            time.sleep({linger})
            with open({str(log)!r}, "a") as f:
                f.write("exit {name}\\n")
            sys.exit(0)
        signal.signal(signal.SIGTERM, on_term)
        with open({str(log)!r}, "a") as f:
            f.write("up {name}\\n")
        while True:
            time.sleep(1)
    """)
    return [sys.executable, "-c", code]


def test_stop_order_is_agent_workers_gateway_ingest_redis_last(tmp_path) -> None:
    log = tmp_path / "order.log"
    tiers = {"redis": TIER_REDIS, "ingest": TIER_INGEST, "gateway": TIER_GATEWAY,
             "detector": TIER_WORKER, "faces": TIER_WORKER, "edge-demo": TIER_AGENT}  # fmt: skip
    sup = Supervisor([Child(n, _recorder(n, log), None, t) for n, t in tiers.items()])
    sup.start_all()
    try:
        wait_for(lambda: log.exists() and log.read_text().count("up ") == 6, 30, what="all up")
        pgids = {os.getpgid(c.proc.pid) for c in sup.children}
        # Each child leads its own process group, none shares the terminal's (ours).
        assert pgids == {c.proc.pid for c in sup.children}
        assert os.getpgid(0) not in pgids
    finally:
        sup.stop_all(timeout=10)
    events = [ln.split() for ln in log.read_text().splitlines() if not ln.startswith("up")]
    # Every child of a tier has exited before the next (lower) tier gets its SIGTERM.
    for i, (what, name) in enumerate(events):
        if what == "term":
            assert all(
                ("exit", other) in [tuple(e) for e in events[:i]]
                for other, t in tiers.items()
                if t > tiers[name]
            ), events
    terms = [n for w, n in events if w == "term"]
    assert terms[0] == "edge-demo" and set(terms[1:3]) == {"detector", "faces"}
    assert terms[3:] == ["gateway", "ingest", "redis"]
    assert sup.stopped[-1] == "redis"


def test_configuration_error_is_not_restarted() -> None:
    bad = Child(
        "analyst", [sys.executable, "-c", "import sys; sys.exit(2)"], None, first_backoff=0.05
    )
    sup = Supervisor([bad], poll_s=0.02)
    sup.start_all()
    try:
        sup.run()  # returns by itself: the supervisor gives up
    finally:
        sup.stop_all(timeout=5)
    assert sup.exit_code == 2 and bad.restarts == 0
    assert "analyst exited with a configuration error" in (sup.failure or "")


def test_restarts_back_off_and_stop_at_the_limit() -> None:
    crash = Child("crasher", [sys.executable, "-c", "import sys; sys.exit(3)"], None,
                  first_backoff=0.05, max_backoff=0.2)  # fmt: skip
    steady = Child("steady", [sys.executable, "-c", "import time; time.sleep(60)"], None)
    sup = Supervisor([crash, steady], max_restarts=3, poll_s=0.02)
    sup.start_all()
    try:
        sup.run()
    finally:
        sup.stop_all(timeout=5)
    assert sup.exit_code == 1 and "crasher keeps exiting" in (sup.failure or "")
    assert crash.restarts == 3 and crash.history[:4] == [3, 3, 3, 3]
    assert steady.restarts == 0


def test_a_healthy_run_resets_the_restart_count() -> None:
    # Exits after running "long enough" never reach the limit.
    crash = Child("flaky", [sys.executable, "-c", "import time; time.sleep(0.3)"], None,
                  first_backoff=0.01, max_backoff=0.01)  # fmt: skip
    sup = Supervisor([crash], max_restarts=1, healthy_after_s=0.2, poll_s=0.02)
    sup.start_all()
    try:
        wait_for(lambda: (sup.poll_once(), crash.restarts >= 3)[1], 30, interval=0.02,
                 what="three restarts")  # fmt: skip
        assert sup.failure is None
    finally:
        sup.stop_all(timeout=5)


def test_stop_leaves_no_grandchildren(tmp_path) -> None:
    pidfile = tmp_path / "grandchild.pid"
    code = (
        "import subprocess, sys, time\n"
        f"p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'])\n"
        f"open({str(pidfile)!r}, 'w').write(str(p.pid))\n"
        "time.sleep(120)\n"
    )
    sup = Supervisor([Child("parent", [sys.executable, "-c", code], None)])
    sup.start_all()
    try:
        gpid = int(wait_for(lambda: pidfile.exists() and pidfile.read_text(), 30, what="pid"))
    finally:
        sup.stop_all(timeout=5)
    wait_for(lambda: not psutil.pid_exists(gpid) or psutil.Process(gpid).status() == "zombie",
             10, what="grandchild gone")  # fmt: skip


def test_children_die_with_a_killed_supervisor(tmp_path) -> None:
    """kill -9 of the supervisor: its children get the parent-death signal."""
    code = textwrap.dedent("""
        import sys, time
        from sentri_cli.supervisor import Child, Supervisor
        sup = Supervisor([Child("sleeper", [sys.executable, "-c", "import time; time.sleep(120)"])])
        sup.start_all()
        print(sup.children[0].proc.pid, flush=True)
        time.sleep(120)
    """)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    outer = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                             env=env, cwd=ROOT)  # fmt: skip
    try:
        child = int(outer.stdout.readline())
        assert psutil.pid_exists(child)
        outer.send_signal(signal.SIGKILL)
        outer.wait(10)
        wait_for(lambda: not psutil.pid_exists(child) or psutil.Process(child).status() == "zombie",
                 10, what="child gone after its supervisor was killed")  # fmt: skip
    finally:
        if outer.poll() is None:
            outer.kill()
        outer.stdout.close()
