"""Sentri's media store (snapshots, recording segments): filesystem or S3.

See :mod:`shared.storage.media` for the interface and :mod:`shared.storage.config`
for the ``storage`` config section.  The event database is :mod:`shared.eventstore`.
"""

from shared.storage.config import CameraRetention, StorageConfig
from shared.storage.media import (
    BadKey,
    FsMediaStore,
    MediaError,
    MediaFull,
    MediaNotFound,
    MediaObject,
    MediaStore,
    MediaUnavailable,
    S3MediaStore,
    camera_of_key,
    check_key,
    open_media_store,
    safe_component,
    segment_key,
    snapshot_key,
)

__all__ = [
    "BadKey",
    "CameraRetention",
    "FsMediaStore",
    "MediaError",
    "MediaFull",
    "MediaNotFound",
    "MediaObject",
    "MediaStore",
    "MediaUnavailable",
    "S3MediaStore",
    "StorageConfig",
    "camera_of_key",
    "check_key",
    "open_media_store",
    "safe_component",
    "segment_key",
    "snapshot_key",
]
