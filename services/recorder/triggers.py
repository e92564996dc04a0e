"""Which cameras have an event going on (fed from the ``events`` stream by the
runtime's one stream follower, :class:`shared.streams.StreamFollower`).

``object_entered`` opens an event on its camera until the matching
``object_left``; any other event (a recognised face, an analysis) is a moment.
A camera is *recording* from ``first_seen`` − pre-roll until the last event's end
plus post-roll.  All times are capture times in unix milliseconds.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any


@dataclass
class CameraEvents:
    active: dict[str, int] = field(default_factory=dict)  # track key -> first_seen ms
    last_end_ms: int = 0
    first_start_ms: int | None = None  # earliest start of the current event period


class EventTriggers:
    def __init__(self, post_roll_ms: int, max_event_ms: int) -> None:
        self.post_roll_ms, self.max_event_ms = post_roll_ms, max_event_ms
        self._cams: dict[str, CameraEvents] = {}
        self._lock = threading.Lock()

    def apply(self, rec: dict[str, Any]) -> None:
        cam, t = rec.get("camera_id"), rec.get("type")
        if not isinstance(cam, str):
            return
        ts = _ms(rec.get("ts"))
        if ts is None:
            return
        key = f"{rec.get('track_id')}:{rec.get('first_seen')}"
        with self._lock:
            ce = self._cams.setdefault(cam, CameraEvents())
            if t == "object_entered":
                start = _ms(rec.get("first_seen")) or ts
                ce.active[key] = start
                ce.first_start_ms = (
                    start if ce.first_start_ms is None else min(ce.first_start_ms, start)
                )
            elif t == "object_left":
                ce.active.pop(key, None)
                ce.last_end_ms = max(ce.last_end_ms, _ms(rec.get("last_seen")) or ts)
            else:
                ce.last_end_ms = max(ce.last_end_ms, ts)
                ce.first_start_ms = ts if ce.first_start_ms is None else min(ce.first_start_ms, ts)

    def recording(self, camera_id: str, ts_ms: int) -> tuple[bool, int | None]:
        """(record this frame?, start of the event period for the pre-roll)."""
        with self._lock:
            ce = self._cams.get(camera_id)
            if ce is None:
                return False, None
            for k, since in list(ce.active.items()):
                if ts_ms - since > self.max_event_ms:  # its end never came
                    del ce.active[k]
            on = bool(ce.active) or ts_ms <= ce.last_end_ms + self.post_roll_ms
            if not on:
                ce.first_start_ms = None
            return on, ce.first_start_ms

    def forget(self, keep: frozenset[str]) -> None:
        with self._lock:
            for cam in [c for c in self._cams if c not in keep]:
                del self._cams[cam]


def _ms(v: Any) -> int | None:
    try:
        return int(v) if v is not None and not isinstance(v, bool) else None
    except (TypeError, ValueError):
        return None
