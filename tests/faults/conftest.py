"""Fixtures of the fault-injection suite (``make test-faults``).

Each test starts the real processes it needs on free loopback ports and records the
recovery time it measured; the figures are written to
``test-artifacts/faults/recovery.json`` at the end of the session.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.faults.procs import Proc


@pytest.fixture(scope="session")
def recovery_times(artifacts_dir: Path) -> Iterator[dict[str, float]]:
    times: dict[str, float] = {}
    yield times
    if times:
        out = artifacts_dir / "faults"
        out.mkdir(exist_ok=True)
        path = out / "recovery.json"
        old = json.loads(path.read_text()) if path.exists() else {}
        old.update(
            {
                k: {"seconds": v, "measured_at": time.strftime("%FT%TZ", time.gmtime())}
                for k, v in times.items()
            }
        )
        path.write_text(json.dumps(old, indent=2, sort_keys=True) + "\n")


@pytest.fixture
def record_recovery(recovery_times, record_property) -> Callable[[str, float], None]:
    """Store a measured recovery time (seconds) under a name."""

    def record(name: str, value: float) -> None:
        recovery_times[name] = round(value, 2)
        record_property(name, round(value, 2))
        print(f"[faults] {name}: {value:.2f} s")

    return record


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Callable[..., Proc]]:
    """Factory of child processes, all stopped at the end (logs kept in tmp_path)."""
    started: list[Proc] = []

    def make(name: str, args: list[str], env: dict[str, str]) -> Proc:
        p = Proc(name, args, env, tmp_path).start()
        started.append(p)
        return p

    yield make
    for p in reversed(started):
        p.stop()
