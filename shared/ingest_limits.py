"""``ingest.limits``: the bounds ingest enforces on what agents may make it hold.

Every cap here bounds memory or Redis growth that a peer on the network could
otherwise drive: cameras per client, client ids per key, pending (undecided) agent
keys, edge stat names.  The clock fields decide when an agent's clock counts as
wrong.  Env vars: ``SENTRI_INGEST__LIMITS__<FIELD>``.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

#: Edge stat names an agent may report per camera in its heartbeat (edge_agent/camera.py).
AGENT_STAT_NAMES = frozenset(
    {"captured", "encoded", "sent", "dropped", "gated", "bytes", "fps", "capture_fps",
     "motion", "capture_errors", "streaming"}
)  # fmt: skip


class IngestLimits(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    cameras_per_client: int = Field(
        64, ge=1, le=64, description="Most cameras one client may have, by register or camera_info."
    )
    clients_per_key: int = Field(
        1, ge=1, le=1000, description="Most client ids one agent key may bind (secure mode)."
    )
    pending_keys_max: int = Field(
        200, ge=1, le=100_000, description="Most undecided (pending) agent keys kept in total."
    )
    pending_keys_per_source: int = Field(
        5, ge=1, le=10_000, description="Most pending agent keys recorded from one IP address."
    )
    pending_keys_per_minute: int = Field(
        30, ge=1, le=100_000, description="Most new pending keys recorded per minute, all sources."
    )
    pending_key_ttl_s: float = Field(
        86_400.0, ge=60, le=30 * 86_400,
        description="A pending key never approved or rejected is forgotten after this long.",
    )  # fmt: skip
    pending_notice_s: float = Field(
        2.0, ge=0.1, le=60,
        description="Dashboard notices of new pending keys are coalesced into one per window.",
    )  # fmt: skip
    key_cache_refresh_s: float = Field(
        1.0, ge=0.1, le=60,
        description="How often ingest re-reads the agent key statuses it serves handshakes from.",
    )  # fmt: skip
    max_stat_value: float = Field(
        1e15, gt=0, le=1e18, description="Largest absolute edge stat value kept (others dropped)."
    )
    max_clock_offset_s: float = Field(
        2.0, gt=0, le=86_400,
        description="An agent whose clock is off from ingest's by more than this is flagged.",
    )  # fmt: skip
    clock_window_s: float = Field(
        30.0, ge=1, le=3600,
        description="Window over which the agent clock offset (min of receive - capture) is taken.",
    )  # fmt: skip
