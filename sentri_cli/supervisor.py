"""The process supervisor behind ``sentri up``.

* Every child runs in its own session and process group, so a Ctrl-C in the terminal
  reaches only the supervisor, which then stops the children itself, in order.
* Every child gets a parent-death signal (``prctl(PR_SET_PDEATHSIG, SIGTERM)``): if the
  supervisor dies, even by ``kill -9``, its children get SIGTERM and do not linger.
* A child that dies is restarted after an exponential backoff (per child: first delay,
  doubled up to a cap).  A child that keeps dying (``max_restarts`` exits in a row,
  each within ``healthy_after_s`` of its start) or that exits with a configuration
  error (exit code 2) ends the supervisor with a clear message and a non-zero code.
* Stop: tier by tier, highest first (see :mod:`sentri_cli.services`); SIGTERM to the
  whole process group, SIGKILL to whatever is left after the timeout.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from sentri_cli.services import TIER_WORKER

log = logging.getLogger("sentri.up")

#: Exit code of a service that refused its configuration: restarting cannot help.
EXIT_CONFIG = 2
PR_SET_PDEATHSIG = 1

_libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
#: prctl exists on Linux only; elsewhere children just lack the parent-death signal.
_prctl = getattr(_libc, "prctl", None) if sys.platform.startswith("linux") else None


def _die_with_parent(parent_pid: int) -> Callable[[], None]:
    """preexec_fn: SIGTERM this child when the supervisor (the forking thread) dies."""

    def preexec() -> None:
        if _prctl is not None:
            _prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent_pid:  # the parent died before prctl took effect
            os.kill(os.getpid(), signal.SIGTERM)

    return preexec


@dataclass
class Child:
    name: str
    args: list[str]
    env: dict[str, str] | None = None
    tier: int = TIER_WORKER
    first_backoff: float = 1.0
    max_backoff: float = 30.0
    proc: subprocess.Popen | None = None
    restarts: int = 0
    started_at: float = 0.0
    next_start: float = 0.0
    backoff: float = 0.0
    #: Consecutive exits that came soon after a start (reset once it ran long enough).
    failures: int = 0
    history: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.backoff = self.backoff or self.first_backoff

    def start(self) -> None:
        # Must be called from the supervisor's main thread: PDEATHSIG follows the
        # thread that forked.
        self.proc = subprocess.Popen(
            self.args,
            env=self.env,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=_die_with_parent(os.getpid()),  # noqa: PLW1509 - prctl needs it
        )
        self.started_at = time.monotonic()
        log.info("started", extra={"child": self.name, "pid": self.proc.pid})

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal_group(self, sig: signal.Signals) -> None:
        """Signal the child's whole process group (it is the group's leader)."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, sig)


class Supervisor:
    """Runs children, restarts the ones that die, stops them all in tier order."""

    def __init__(
        self,
        children: list[Child],
        *,
        max_restarts: int = 5,
        healthy_after_s: float = 60.0,
        poll_s: float = 0.2,
    ) -> None:
        self.children = children
        self.max_restarts = max_restarts
        self.healthy_after_s = healthy_after_s
        self.poll_s = poll_s
        self.stopping = threading.Event()
        self.failure: str | None = None
        self.exit_code = 0
        #: Names in the order their stop completed (tests and logs).
        self.stopped: list[str] = []

    def add(self, child: Child, *, start: bool = True) -> Child:
        self.children.append(child)
        if start:
            child.start()
        return child

    def start_all(self) -> None:
        for c in sorted(self.children, key=lambda c: c.tier):
            if c.proc is None:
                c.start()

    def state(self) -> dict[str, dict[str, int | None]]:
        """Each child's pid (None while it waits for a restart) and restart count."""
        return {
            c.name: {"pid": c.proc.pid if c.running() else None, "restarts": c.restarts}
            for c in self.children
        }

    def fail(self, message: str, code: int) -> None:
        if self.failure is None:
            self.failure, self.exit_code = message, code
            log.error(message)
        self.stopping.set()

    def poll_once(self) -> None:
        now = time.monotonic()
        for c in self.children:
            if self.stopping.is_set():
                return
            if c.proc is None:
                if now >= c.next_start:
                    c.restarts += 1
                    log.warning("restarting", extra={"child": c.name, "restarts": c.restarts})
                    c.start()
                continue
            code = c.proc.poll()
            if code is None:
                continue
            c.signal_group(signal.SIGKILL)  # whatever the dead child left in its group
            c.history.append(code)
            ran_for = now - c.started_at
            c.proc = None
            if code == EXIT_CONFIG:
                self.fail(
                    f"{c.name} exited with a configuration error (exit code {EXIT_CONFIG}); "
                    "fix the setting named in its log above. Not restarting.",
                    EXIT_CONFIG,
                )
                return
            if ran_for >= self.healthy_after_s:
                c.failures, c.backoff = 0, c.first_backoff
            c.failures += 1
            if c.failures > self.max_restarts:
                self.fail(
                    f"{c.name} keeps exiting (last exit code {code}; {c.failures} exits in a "
                    f"row, each within {self.healthy_after_s:g} s of its start); giving up.",
                    1,
                )
                return
            log.error(
                "child exited; restarting after backoff",
                extra={"child": c.name, "code": code, "backoff_s": c.backoff},
            )
            c.next_start = now + c.backoff
            c.backoff = min(c.max_backoff, c.backoff * 2)

    def run(self, on_tick: Callable[[], None] | None = None) -> None:
        while not self.stopping.wait(self.poll_s):
            self.poll_once()
            if on_tick is not None and not self.stopping.is_set():
                on_tick()

    def stop_all(self, timeout: float = 10.0) -> None:
        """Stop tier by tier, highest first; each tier gets ``timeout`` s after SIGTERM."""
        self.stopping.set()
        for tier in sorted({c.tier for c in self.children}, reverse=True):
            group = [c for c in self.children if c.tier == tier]
            for c in group:
                if c.running():
                    log.info("stopping", extra={"child": c.name})
                    c.signal_group(signal.SIGCONT)  # a stopped child must see its SIGTERM
                    c.signal_group(signal.SIGTERM)
            deadline = time.monotonic() + timeout
            for c in group:
                if c.proc is not None:
                    try:
                        c.proc.wait(max(0.1, deadline - time.monotonic()))
                    except subprocess.TimeoutExpired:
                        log.warning("child did not stop in time; killing", extra={"child": c.name})
                        c.signal_group(signal.SIGKILL)
                        c.proc.wait(5)
                    c.signal_group(signal.SIGKILL)  # leftovers in its group
                    log.info("stopped", extra={"child": c.name, "code": c.proc.returncode})
                    c.history.append(c.proc.returncode)
                    c.proc = None
                self.stopped.append(c.name)
