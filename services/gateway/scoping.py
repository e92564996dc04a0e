"""Which camera a piece of media belongs to, for the camera-scope check."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

SCAN_BATCH = 500
SCAN_MAX = 5000


def snapshot_camera(gw: Any, access: Any, snapshot_id: str) -> str | None:
    """The camera of the event that references ``snapshot_id`` (``snapshot_url``):
    from the event store (indexed), else from the newest ``SCAN_MAX`` entries of the
    events stream (events the archiver has not stored yet).  None when not found.
    Callers fetch the snapshot first, so ids that name nothing cost no lookup."""
    if access is not None:
        try:
            cam = access.store.camera_of_snapshot(snapshot_id)  # indexed
        except SQLAlchemyError:
            cam = None
        if cam:
            return str(cam)
    end = "+"
    scanned = 0
    while scanned < SCAN_MAX:
        batch = gw.r.xrevrange(gw.keys.stream("events"), end, "-", count=SCAN_BATCH)
        for _entry_id, fields in batch:
            data = fields.get("data") or ""
            if snapshot_id not in data:  # cheap test before parsing
                continue
            try:
                record = json.loads(data)
            except ValueError:
                continue
            if isinstance(record, dict) and record.get("snapshot_id") == snapshot_id:
                return str(fields.get("camera_id") or "") or None
        scanned += len(batch)
        if len(batch) < SCAN_BATCH:
            return None
        end = f"({batch[-1][0]}"
    return None
