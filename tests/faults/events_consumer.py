"""An integration's event consumer as its own process, to be killed mid-work::

    python -m tests.faults.events_consumer --url URL --prefix P --group G --name A \
        --read 20 --ack-first 5      # reads 20, acks 5, prints the ids, then hangs

It uses :class:`shared.events.EventConsumer`, the helper integrations use.
"""

from __future__ import annotations

import argparse
import sys

from shared.events import EventConsumer
from shared.keys import Keys
from shared.redisutil import connect


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Read events in a consumer group, then hang.")
    p.add_argument("--url", required=True, help="Redis URL")
    p.add_argument("--prefix", required=True, help="key prefix")
    p.add_argument("--group", required=True, help="consumer group")
    p.add_argument("--name", required=True, help="consumer name")
    p.add_argument("--read", type=int, default=20, help="entries to read")
    p.add_argument("--ack-first", type=int, default=0, help="of which to acknowledge")
    args = p.parse_args(argv)
    consumer = EventConsumer(connect(args.url), Keys(args.prefix), args.group, args.name)
    records = consumer.read(args.read, block_ms=None)
    consumer.ack(*[rec["id"] for rec in records[: args.ack_first]])
    for rec in records:
        print(rec["id"], flush=True)
    print("READ-DONE", flush=True)
    sys.stdin.read()  # "processing" forever: the test kills us before any further XACK
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
