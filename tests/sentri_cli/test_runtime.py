"""The state-dir lock and the runtime file (issue 12, items 10 and 19)."""

from __future__ import annotations

import stat

import pytest

from sentri_cli.runtime import (
    RuntimeUnavailable,
    StateDirBusy,
    StateDirLock,
    read_runtime,
    remove_runtime,
    resolve_redis,
    write_runtime,
)


def test_lock_is_exclusive_and_released(tmp_path) -> None:
    lock = StateDirLock(tmp_path).acquire()
    with pytest.raises(StateDirBusy, match="already running on state dir"):
        StateDirLock(tmp_path).acquire()
    lock.release()
    StateDirLock(tmp_path).acquire().release()


def test_runtime_file_is_private_and_found_only_while_up_runs(tmp_path) -> None:
    info = {"pid": 1, "redis_url": "redis://:secret@127.0.0.1:1/0", "redis_prefix": "p:"}
    lock = StateDirLock(tmp_path).acquire()
    path = write_runtime(tmp_path, info)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert read_runtime(tmp_path)["redis_url"] == info["redis_url"]
    assert resolve_redis(None, "sentri:", tmp_path)[:2] == (info["redis_url"], "p:")
    # An explicit URL wins over the runtime file.
    assert resolve_redis("redis://x:1/0", "sentri:", tmp_path)[:2] == ("redis://x:1/0", "sentri:")
    lock.release()
    with pytest.raises(RuntimeUnavailable, match="stale"):
        read_runtime(tmp_path)  # written by a `sentri up` that is gone
    remove_runtime(tmp_path)
    with pytest.raises(RuntimeUnavailable, match="no Redis configured"):
        resolve_redis(None, "sentri:", tmp_path)
