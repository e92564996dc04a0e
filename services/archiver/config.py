"""The ``archiver`` config section."""

from __future__ import annotations

import socket

from pydantic import Field

from shared.config import Section


class ArchiverConfig(Section):
    group: str = Field(
        "archiver", min_length=1, max_length=64, description="Consumer group on the events stream."
    )
    consumer: str = Field(
        default_factory=lambda: f"archiver-{socket.gethostname()}",
        min_length=1,
        max_length=128,
        description="Consumer name; keep it stable so a restarted archiver re-reads what it "
        "had not acknowledged.",
    )
    batch: int = Field(200, ge=1, le=10_000, description="Events read and stored per batch.")
    block_ms: int = Field(1000, ge=10, le=60_000, description="How long one read waits.")
    claim_idle_s: float = Field(
        30.0,
        ge=1,
        le=86400,
        description="Take over events another consumer left unacknowledged this long.",
    )
    retry_max_s: float = Field(
        10.0, gt=0, le=600, description="Longest wait between retries while the database is down."
    )
    copy_snapshots: bool = Field(
        True,
        description="Copy event snapshots still kept in Redis into the media store, so they "
        "outlive Redis' TTL.",
    )
