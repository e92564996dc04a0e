"""What ingest tells the rest of the system about itself: ports actually bound, bind
host, security mode, *public* key and whether the frame fan-out is encrypted (hash
``<prefix>ingest_info``).

Ingest writes it once its sockets are bound (:func:`publish_ingest_info`); the gateway's
agent bootstrap endpoint reads it (:func:`read_ingest_info`), so an agent learns the real
ports and key even when the gateway runs on another host or with another config
(compose, Kubernetes) and when ingest bound random ports (port 0).  Fan-out receivers
(:class:`shared.fanout.FanoutKeys`) read ``fanout_key`` to learn whether to subscribe
with CURVE and with which server key.  Nothing secret is
stored: the secret key never leaves ingest's state dir.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from shared.keys import Keys

if TYPE_CHECKING:
    import redis


@dataclass(frozen=True)
class IngestInfo:
    bind_host: str
    frame_port: int
    control_port: int
    #: ingest's CURVE public key (z85); None when ingest runs insecure.
    public_key: str | None
    updated: float
    #: The key fan-out subscribers must use as CURVE server key; None = plaintext fan-out.
    fanout_key: str | None = None


def info_key(keys: Keys) -> str:
    return keys.ingest_info


def publish_ingest_info(
    r: redis.Redis,
    keys: Keys,
    *,
    bind_host: str,
    frame_port: int,
    control_port: int,
    public_key: str | None,
    fanout_key: str | None = None,
) -> None:
    """Record ingest's bound endpoints and public key (call after binding)."""
    r.hset(
        info_key(keys),
        mapping={
            "bind_host": bind_host,
            "frame_port": str(frame_port),
            "control_port": str(control_port),
            "public_key": public_key or "",
            "fanout_key": fanout_key or "",
            "updated": str(time.time()),
        },
    )


def read_ingest_info(r: redis.Redis, keys: Keys) -> IngestInfo | None:
    """What ingest last published, or None (never published, or malformed)."""
    raw = {
        (k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
        for k, v in r.hgetall(info_key(keys)).items()
    }
    try:
        info = IngestInfo(
            bind_host=raw["bind_host"],
            frame_port=int(raw["frame_port"]),
            control_port=int(raw["control_port"]),
            public_key=raw.get("public_key") or None,
            updated=float(raw.get("updated", 0)),
            fanout_key=raw.get("fanout_key") or None,
        )
    except (KeyError, ValueError):
        return None
    if not (0 < info.frame_port < 65536 and 0 < info.control_port < 65536):
        return None
    if info.public_key is not None and len(info.public_key) != 40:
        return None
    if info.fanout_key is not None and len(info.fanout_key) != 40:
        return None
    return info
