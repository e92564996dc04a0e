"""``sentri status``: the clients and cameras in the registry, as a table."""

from __future__ import annotations

import argparse
import sys
import time

import redis

from sentri_cli.runtime import (
    RUNTIME_FILE,
    RuntimeUnavailable,
    add_redis_options,
    read_runtime,
    redis_from_args,
    up_summary,
)
from shared.config import ConfigError, IngestConfig, load_section
from shared.keys import Keys
from shared.redisutil import connect
from shared.registry import list_clients


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="sentri status",
        description="The clients and cameras in the registry (and the local `sentri up`), "
        "as a table.",
    )
    add_redis_options(p)
    args = p.parse_args(argv)
    try:
        ic = load_section(IngestConfig, "ingest", config_file=args.config)
        url, prefix, source, state_dir = redis_from_args(args)
    except (ConfigError, RuntimeUnavailable) as exc:
        print(f"sentri status: {exc}", file=sys.stderr)
        return 2
    try:
        clients = list_clients(connect(url), Keys(prefix), stale_after=ic.stale_after_s,
                               offline_after=ic.offline_after_s)  # fmt: skip
    except redis.RedisError as exc:
        print(f"sentri status: cannot reach Redis: {exc}", file=sys.stderr)
        return 1
    if source == RUNTIME_FILE:
        print(up_summary(read_runtime(state_dir)))
    if not clients:
        print("No clients registered. Start an agent: sentri-edge --server HOST --source demo:bus")
        return 0
    now = time.time()
    for c in clients:
        age = now - c.get("last_seen", 0)
        print(
            f"{c['client_id']:<24} {c['status']:<8} last seen {age:5.1f}s ago  {c.get('hostname', '')}"
        )
        for cam in c["cameras"]:
            res = f"{cam.get('width', '?')}x{cam.get('height', '?')}"
            print(
                f"  {cam['camera_id']:<32} {res:>10} {cam.get('fps_in', 0):5.1f} fps in"
                f"  {'streaming' if cam.get('streaming') else 'paused'}"
            )
    return 0
