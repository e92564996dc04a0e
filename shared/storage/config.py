"""The ``storage`` config section: media store, event database, retention."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator

from shared.config import Section

CAMERA_KEY = re.compile(r"^[^\x00-\x1f]{1,300}$")


class CameraRetention(Section):
    recordings_retain_days: float | None = Field(
        None,
        ge=0,
        le=3650,
        description="Days recordings of this camera are kept (unset = default).",
    )
    events_retain_days: float | None = Field(
        None,
        ge=0,
        le=3650,
        description="Days events and their snapshots are kept (unset = default).",
    )


class StorageConfig(Section):
    backend: Literal["fs", "s3"] = Field(
        "fs", description="Media store: 'fs' (a directory) or 's3' (S3-compatible object storage)."
    )
    media_dir: str | None = Field(
        None,
        max_length=4096,
        description="Media directory for backend 'fs' (default <state_dir>/media).",
    )
    s3_endpoint: str | None = Field(
        None,
        max_length=2048,
        description="S3 endpoint URL (e.g. http://seaweedfs:8333); unset = AWS.",
    )
    s3_bucket: str = Field(
        "sentri-media", min_length=3, max_length=63, description="S3 bucket (created when missing)."
    )
    s3_prefix: str = Field(
        "", max_length=256, pattern=r"^([A-Za-z0-9_.-]+/)*$",
        description="Key prefix inside the bucket ('' or ending with '/').",
    )  # fmt: skip
    s3_region: str = Field("us-east-1", max_length=64, description="S3 region name.")
    s3_access_key: str | None = Field(None, max_length=256, description="S3 access key id.")
    s3_secret_key: SecretStr | None = Field(None, description="S3 secret access key.")
    s3_timeout_s: float = Field(
        5.0,
        gt=0,
        le=120,
        description="S3 connect/read timeout; an outage fails fast, never blocks.",
    )
    snapshot_store: Literal["media", "redis"] = Field(
        "media",
        description="Where workers put event snapshots: 'media' (the media store; Redis keeps only "
        "the id -> key pointer) or 'redis' (the JPEG itself, with a TTL: the old behaviour).",
    )
    database_url: str | None = Field(
        None,
        max_length=2048,
        description="Event store SQLAlchemy URL (postgresql+psycopg://user:pw@host/db); "
        "unset = SQLite (WAL) at <state_dir>/events.db.",
    )
    max_bytes: int = Field(
        0, ge=0, le=2**60, description="Most bytes the media store may hold (0 = no size cap)."
    )
    min_free_percent: float = Field(
        5.0, ge=0, le=90, description="Keep at least this much of the media filesystem free (fs)."
    )
    recordings_retain_days: float = Field(
        7.0, ge=0, le=3650, description="Default days recordings are kept (0 = no age limit)."
    )
    events_retain_days: float = Field(
        30.0,
        ge=0,
        le=3650,
        description="Default days events and snapshots are kept (0 = no age limit).",
    )
    cameras: dict[str, CameraRetention] = Field(
        default_factory=dict, max_length=10_000, description="Per-camera retention overrides."
    )
    clip_max_s: float = Field(
        900.0,
        ge=10,
        le=86400,
        description="Longest clip /api/recordings/{camera}/clip.mp4 assembles.",
    )
    retention_interval_s: float = Field(
        60.0, ge=1, le=86400, description="How often the archiver applies retention."
    )

    @field_validator("cameras")
    @classmethod
    def _camera_ids(cls, v: dict[str, CameraRetention]) -> dict[str, CameraRetention]:
        for cam in v:
            if not CAMERA_KEY.match(cam):
                raise ValueError(f"bad camera id {cam!r}")
        return v

    def media_root(self, state_dir: str) -> Path:
        return Path(self.media_dir) if self.media_dir else Path(state_dir) / "media"

    def db_url(self, state_dir: str) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{Path(state_dir) / 'events.db'}"

    def recordings_days(self, camera_id: str) -> float:
        c = self.cameras.get(camera_id)
        d = c.recordings_retain_days if c else None
        return self.recordings_retain_days if d is None else d

    def events_days(self, camera_id: str) -> float:
        c = self.cameras.get(camera_id)
        d = c.events_retain_days if c else None
        return self.events_retain_days if d is None else d
