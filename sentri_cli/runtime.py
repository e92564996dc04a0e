"""What a running ``sentri up`` leaves in its state dir for operators' tools.

* ``<state_dir>/up.lock``: an exclusive ``flock`` held for as long as ``sentri up``
  runs; a second ``sentri up`` on the same state dir refuses to start.  The kernel
  drops the lock when the process dies, however it dies.
* ``<state_dir>/runtime.json`` (mode 0600): the Redis URL (with its password), the key
  prefix and the ports; written once Redis is ready, removed on a clean stop.  ``sentri
  status`` and ``sentri events`` read it when neither ``--redis-url`` nor
  ``REDIS_URL``/``SENTRI_REDIS__URL``/``redis.url`` is given.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
from pathlib import Path
from typing import Any

from shared.config import GeneralConfig, RedisConfig, load_section

RUNTIME_FILE = "runtime.json"
LOCK_FILE = "up.lock"


class StateDirBusy(RuntimeError):
    """Another ``sentri up`` holds the state dir's lock."""


class StateDirLock:
    """Exclusive, non-blocking ``flock`` on ``<state_dir>/up.lock`` (pid written inside)."""

    def __init__(self, state_dir: Path) -> None:
        self.path = Path(state_dir) / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> StateDirLock:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise StateDirBusy(
                f"another `sentri up` (pid {holder}) is already running on state dir "
                f"{self.path.parent}; stop it first, or use another --state-dir"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock
            self._fd = None


def is_locked(state_dir: Path) -> bool:
    """True while some ``sentri up`` holds ``<state_dir>/up.lock``."""
    try:
        fd = os.open(Path(state_dir) / LOCK_FILE, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def write_runtime(state_dir: Path, info: dict[str, Any]) -> Path:
    """Atomically write ``runtime.json`` with mode 0600 (it holds the Redis password)."""
    path = Path(state_dir) / RUNTIME_FILE
    tmp = path.with_name(f".{RUNTIME_FILE}.{os.getpid()}")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(info, f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)
    return path


def remove_runtime(state_dir: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        (Path(state_dir) / RUNTIME_FILE).unlink()


class RuntimeUnavailable(RuntimeError):
    """No usable runtime file (the message says why and what to do)."""


def read_runtime(state_dir: Path) -> dict[str, Any]:
    """The runtime file of the ``sentri up`` running on ``state_dir``."""
    path = Path(state_dir) / RUNTIME_FILE
    try:
        info = json.loads(path.read_text())
    except FileNotFoundError:
        raise RuntimeUnavailable(
            f"no Redis configured (set REDIS_URL or --redis-url) and no `sentri up` "
            f"running on state dir {state_dir} (no {RUNTIME_FILE})"
        ) from None
    except (OSError, json.JSONDecodeError) as exc:
        raise RuntimeUnavailable(f"cannot read {path}: {exc}") from None
    if not is_locked(state_dir):
        raise RuntimeUnavailable(
            f"{path} is stale: the `sentri up` that wrote it (pid {info.get('pid')}) is not "
            "running; start `sentri up`, or set REDIS_URL / --redis-url"
        )
    if not isinstance(info, dict) or not isinstance(info.get("redis_url"), str):
        raise RuntimeUnavailable(f"{path} has no redis_url")
    return info


def resolve_redis(
    url: str | None, prefix: str, state_dir: str | os.PathLike[str]
) -> tuple[str, str, str]:
    """(url, prefix, where from): an explicit URL wins, else the local ``sentri up``'s
    runtime file (its URL and its prefix go together).  Raises
    :class:`RuntimeUnavailable` when neither is there."""
    if url:
        return url, prefix, "config"
    info = read_runtime(Path(state_dir).expanduser())
    return info["redis_url"], str(info.get("redis_prefix") or prefix), RUNTIME_FILE


def add_redis_options(p: argparse.ArgumentParser) -> None:
    """``--config``, ``--redis-url`` and ``--state-dir``: how a CLI command that reads
    the cluster finds its Redis (see :func:`redis_from_args`)."""
    p.add_argument("--config", metavar="FILE")
    p.add_argument(
        "--redis-url",
        help="default: REDIS_URL, else the Redis of the `sentri up` "
        "running on the state dir (its runtime.json)",
    )
    p.add_argument(
        "--state-dir", help="state dir of the local `sentri up` (default: general.state_dir)"
    )


def redis_from_args(args: argparse.Namespace) -> tuple[str, str, str, Path]:
    """(url, prefix, where from, state dir) for the options of :func:`add_redis_options`.
    Raises ``ConfigError`` or :class:`RuntimeUnavailable` with a message for the user."""
    rc = load_section(RedisConfig, "redis", config_file=args.config,
                      overrides={"url": args.redis_url})  # fmt: skip
    general = load_section(GeneralConfig, "general", config_file=args.config,
                           overrides={"state_dir": args.state_dir})  # fmt: skip
    url, prefix, source = resolve_redis(rc.url, rc.prefix, general.state_dir)
    return url, prefix, source, Path(general.state_dir).expanduser()


def up_summary(info: dict[str, Any]) -> str:
    """One or two lines about the running ``sentri up`` (for ``sentri status``)."""
    children = info.get("children") or {}
    parts = []
    for name, st in children.items():
        state = "running" if st.get("pid") else "restarting"
        restarts = st.get("restarts") or 0
        parts.append(f"{name} {state}" + (f" ({restarts} restarts)" if restarts else ""))
    gateway = info.get("gateway") or {}
    head = f"sentri up (pid {info.get('pid')})"
    if gateway.get("url"):
        head += f", dashboard {gateway['url']}"
    return head + ("\n  " + ", ".join(parts) if parts else "")
