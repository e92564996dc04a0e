"""``sentri status``: the clients and cameras in the registry, as a table."""

from __future__ import annotations

import argparse
import sys
import time

import redis

from shared.config import ConfigError, IngestConfig, RedisConfig, load_section
from shared.keys import Keys
from shared.redisutil import connect
from shared.registry import list_clients


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="sentri status", description=__doc__)
    p.add_argument("--config", metavar="FILE")
    p.add_argument("--redis-url")
    args = p.parse_args(argv)
    try:
        rc = load_section(
            RedisConfig, "redis", config_file=args.config, overrides={"url": args.redis_url}
        )
        ic = load_section(IngestConfig, "ingest", config_file=args.config)
    except ConfigError as exc:
        print(f"sentri status: {exc}", file=sys.stderr)
        return 2
    if not rc.url:
        print("sentri status: no Redis configured (set REDIS_URL or --redis-url)", file=sys.stderr)
        return 2
    try:
        clients = list_clients(connect(rc.url), Keys(rc.prefix), stale_after=ic.stale_after_s,
                               offline_after=ic.offline_after_s)  # fmt: skip
    except redis.RedisError as exc:
        print(f"sentri status: cannot reach Redis: {exc}", file=sys.stderr)
        return 1
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
