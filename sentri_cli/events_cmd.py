"""``sentri events``: print events as JSON lines, at least once, via a consumer group."""

from __future__ import annotations

import argparse
import json
import socket
import sys

import redis

from sentri_cli.runtime import RuntimeUnavailable, add_redis_options, redis_from_args
from shared.config import ConfigError
from shared.events import EventConsumer
from shared.keys import Keys
from shared.redisutil import connect


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="sentri events",
        description="Print Sentri events (object_entered, object_left, face_recognized, analysis) "
        "as JSON lines. With --group, read through a Redis consumer group and acknowledge each "
        "event after printing it (at-least-once: a restarted consumer gets what it missed).",
    )
    add_redis_options(p)
    p.add_argument("--group", help="consumer group name (e.g. your integration's name)")
    p.add_argument("--consumer", default=socket.gethostname(), help="consumer name in the group")
    p.add_argument("--from-now", action="store_true", help="a new group starts at new events only")
    p.add_argument("--follow", "-f", action="store_true", help="keep waiting for new events")
    p.add_argument("--type", action="append", help="only these event types (repeatable)")
    args = p.parse_args(argv)
    try:
        url, prefix, _source, _state_dir = redis_from_args(args)
    except (ConfigError, RuntimeUnavailable) as exc:
        print(f"sentri events: {exc}", file=sys.stderr)
        return 2
    r, keys = connect(url), Keys(prefix)
    group = args.group or f"sentri-events-{args.consumer}"
    try:
        consumer = EventConsumer(r, keys, group, args.consumer, start="$" if args.from_now else "0")
        while True:
            batch = consumer.read(count=100, block_ms=2000 if args.follow else 100)
            for event in batch:
                if not args.type or event.get("type") in args.type:
                    print(json.dumps(event), flush=True)
            consumer.ack(*[e["id"] for e in batch])
            if not batch and not args.follow:
                return 0
    except KeyboardInterrupt:
        return 0
    except redis.RedisError as exc:
        print(f"sentri events: Redis error: {exc}", file=sys.stderr)
        return 1
