"""Helpers that find which camera a piece of media belongs to, for the scope check."""

from __future__ import annotations

import json
from typing import Any

SCAN_BATCH = 500


def snapshot_camera(gw: Any, snapshot_id: str, scan_max: int = 20_000) -> str | None:
    """The camera whose event references ``snapshot_id`` (newest events first, at most
    ``scan_max`` examined), or None.  Snapshot ids are random, so the events stream is
    the only link from a snapshot to its camera while snapshots live in Redis."""
    if not gw.rb.exists(gw.keys.snapshot(snapshot_id)):
        return None  # unknown or expired: no scan for ids that name nothing
    end = "+"
    scanned = 0
    while scanned < scan_max:
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
