from __future__ import annotations

import subprocess
import sys
import time

from sentri_cli.main import main
from sentri_cli.up import Child, Supervisor
from tests.helpers import wait_for


def test_help_lists_every_command(capsys) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for cmd in ("up", "ingest", "detector", "faces", "analyst", "gateway", "models", "status"):
        assert f"\n  {cmd}" in out


def test_unknown_command_is_a_clear_error(capsys) -> None:
    assert main(["frobnicate"]) == 2
    assert "unknown command 'frobnicate'" in capsys.readouterr().err


def test_supervisor_restarts_a_dying_child_with_backoff() -> None:
    crash = Child("crasher", [sys.executable, "-c", "import sys; sys.exit(3)"], env={},
                  max_backoff=0.4)  # fmt: skip
    steady = Child("steady", [sys.executable, "-c", "import time; time.sleep(60)"], env={})
    sup = Supervisor([crash, steady], max_restarts=100)
    sup.start_all()
    try:
        t0 = time.monotonic()
        while time.monotonic() - t0 < 3:
            sup.poll_once()
            time.sleep(0.05)
        assert crash.history and set(crash.history) == {3}
        assert 2 <= crash.restarts <= 12  # restarted, but with backoff (not a busy loop)
        assert steady.restarts == 0 and steady.proc.poll() is None
    finally:
        sup.stop_all(timeout=5)
    assert steady.proc is None or steady.proc.poll() is not None


def test_sentri_status_without_redis_is_clear() -> None:
    res = subprocess.run([sys.executable, "-m", "sentri_cli.main", "status"], capture_output=True,
                         text=True, timeout=60, env={"PATH": "/usr/bin:/bin"})  # fmt: skip
    assert res.returncode == 2 and "no Redis configured" in res.stderr


def test_wait_for_times_out() -> None:
    import pytest

    with pytest.raises(AssertionError, match="timed out"):
        wait_for(lambda: False, timeout=0.2)
