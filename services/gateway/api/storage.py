"""The gateway's access to the storage tier (media store, event store, clips) and
``GET /api/storage``.

:class:`StorageAccess` is built lazily from the ``storage`` and ``recorder`` config
sections the first time a route needs it (tests put their own in
``app.state.gw.extras["storage"]``).  A database or S3 outage answers 503 on the
routes that need them; ``/api/events`` then still serves the Redis stream.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request
from pydantic import BaseModel, Field
from sqlalchemy.exc import SQLAlchemyError

from services.gateway.deps import CameraGuard, camera_scope, get_state, require_user
from shared.config import ConfigError, load_section
from shared.eventstore import EventStore
from shared.storage import MediaError, MediaStore, StorageConfig, open_media_store
from shared.storage.clips import ClipCache

log = logging.getLogger(__name__)

router = APIRouter(prefix="/api", tags=["storage"], dependencies=[Depends(require_user)])


@dataclass
class StorageAccess:
    config: StorageConfig
    media: MediaStore
    db_url: str
    pre_roll_ms: int = 5000
    post_roll_ms: int = 5000
    segment_ms: int = 10_000
    clip_max_s: float = 900.0
    clips: ClipCache = field(default_factory=ClipCache)
    _store: EventStore | None = None
    _store_failed_at: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def store(self) -> EventStore:
        """The event store; raises SQLAlchemyError (→ 503) while it cannot be opened."""
        if self._store is None:
            with self._lock:
                if self._store is None:
                    if time.monotonic() - self._store_failed_at < 2.0:
                        raise SQLAlchemyError("event store unavailable (retrying)")
                    try:
                        self._store = EventStore(self.db_url)
                    except SQLAlchemyError:
                        self._store_failed_at = time.monotonic()
                        raise
                    except OSError as exc:  # e.g. the SQLite file's directory cannot be made
                        self._store_failed_at = time.monotonic()
                        log.warning("event store cannot be opened", extra={"error": str(exc)})
                        raise SQLAlchemyError(f"event store unavailable: {exc}") from None
        return self._store

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
        self.media.close()


def build_storage_access(state_dir: str, config_file: str | None = None) -> StorageAccess:
    from services.recorder.config import RecorderConfig

    cfg = load_section(StorageConfig, "storage", config_file=config_file)
    rec = load_section(RecorderConfig, "recorder", config_file=config_file)
    return StorageAccess(
        config=cfg,
        media=open_media_store(cfg, state_dir),
        db_url=cfg.db_url(state_dir),
        pre_roll_ms=int(rec.pre_roll_s * 1000),
        post_roll_ms=int(rec.post_roll_s * 1000),
        segment_ms=int(rec.segment_s * 1000),
        clip_max_s=cfg.clip_max_s,
    )


_BUILD_LOCK = threading.Lock()


def get_storage(request: Request) -> StorageAccess:
    gw = get_state(request)
    access = gw.extras.get("storage")
    if access is None:
        with _BUILD_LOCK:
            access = gw.extras.get("storage")
            if access is None:
                try:
                    access = build_storage_access(gw.settings.general.state_dir)
                except (ConfigError, MediaError) as exc:
                    log.warning("storage unavailable", extra={"error": str(exc)})
                    raise HTTPException(503, f"storage unavailable: {exc}") from None
                gw.extras["storage"] = access
    return access


class CameraUsage(BaseModel):
    bytes: int = Field(description="Bytes of recordings of this camera.")
    segments: int
    oldest: int | None = Field(None, description="Start of the oldest recording (unix ms).")
    newest: int | None = Field(None, description="End of the newest recording (unix ms).")


class StorageView(BaseModel):
    backend: str = Field(description="'fs' or 's3'.")
    used_bytes: int = Field(description="Bytes of recordings (all cameras).")
    max_bytes: int = Field(description="storage.max_bytes (0 = no cap).")
    free_bytes: int | None = Field(None, description="Free bytes of the media filesystem (fs).")
    total_bytes: int | None = Field(None, description="Size of the media filesystem (fs).")
    oldest_recording: int | None = Field(None, description="Start of the oldest segment (unix ms).")
    cameras: dict[str, CameraUsage]


@router.get("/storage", response_model=StorageView)
def storage_view(request: Request, guard: CameraGuard = Depends(camera_scope)) -> StorageView:
    """Bytes per camera, free space and the oldest recording (per-camera figures only
    for the cameras in the caller's scope)."""
    access = get_storage(request)
    try:
        per_cam = access.store.storage_by_camera()
    except SQLAlchemyError:
        raise HTTPException(503, "event store unavailable") from None
    per_cam = {cam: usage for cam, usage in per_cam.items() if guard.allows(cam)}
    free = access.media.free_space()
    oldest = min((c["oldest"] for c in per_cam.values() if c["oldest"] is not None), default=None)
    return StorageView(
        backend=access.media.kind,
        used_bytes=sum(c["bytes"] for c in per_cam.values()),
        max_bytes=access.config.max_bytes,
        free_bytes=free[0] if free else None,
        total_bytes=free[1] if free else None,
        oldest_recording=oldest,
        cameras={k: CameraUsage(**v) for k, v in per_cam.items()},
    )


def media_response_headers(extra: dict[str, Any] | None = None) -> dict[str, str]:
    h = {"Cache-Control": "private, max-age=60", "Accept-Ranges": "bytes"}
    h.update(extra or {})
    return h
