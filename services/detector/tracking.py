"""Per-camera tracking (ultralytics' BYTETracker) and the track life cycle.

A :class:`CameraTracker` gives each detection a stable ``tracker_id`` and turns track
life cycles into :class:`TrackEvent` s:

* ``object_entered`` once a track has been seen in ``min_hits`` frames;
* ``object_left`` once an entered track has not been seen for ``lost_after_s``
  (wall clock, so a camera that stops sending still closes its tracks), or when the
  camera leaves this replica (``reason``: ``handover``, ``disabled``, ``shutdown``).

Each track remembers its best (most confident) sighting: box, confidence and the
frame's JPEG, which becomes the event snapshot.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from types import SimpleNamespace

import numpy as np

from services.detector.config import TrackerConfig
from services.detector.detections import Detections


@dataclass
class TrackState:
    track_id: int
    class_id: int
    first_seen_ms: int
    last_seen_ms: int
    last_seen_wall: float
    hits: int = 0
    best_confidence: float = 0.0
    best_box: list[float] = field(default_factory=list)  # normalised xyxy
    best_jpeg: bytes = b""
    best_attributes: dict = field(default_factory=dict)
    entered: bool = False
    #: Snapshot of the best frame stored at "entered" (reused by "left" if still best).
    snapshot_id: str | None = None
    snapshot_confidence: float = -1.0


@dataclass
class TrackEvent:
    """An entered/left event before it becomes a record (see ``records.event_record``)."""

    type: str  # object_entered | object_left
    camera_id: str
    ts_ms: int
    track: TrackState
    reason: str | None = None
    event_id: str = field(default_factory=lambda: uuid.uuid4().hex)

    @property
    def needs_snapshot(self) -> bool:
        """A new snapshot is stored unless the best frame is already one."""
        return (
            self.track.snapshot_id is None
            or self.track.best_confidence > self.track.snapshot_confidence
        )


def bytetrack_args(cfg: TrackerConfig) -> SimpleNamespace:
    """The settings namespace ultralytics' BYTETracker expects."""
    return SimpleNamespace(
        tracker_type="bytetrack",
        track_high_thresh=cfg.high_thresh,
        track_low_thresh=min(cfg.low_thresh, cfg.high_thresh),
        new_track_thresh=cfg.high_thresh,
        track_buffer=cfg.track_buffer,
        match_thresh=cfg.match_thresh,
        fuse_score=True,
    )


class CameraTracker:
    """Tracking state of one camera (owned by exactly one replica at a time)."""

    def __init__(self, camera_id: str, cfg: TrackerConfig) -> None:
        from ultralytics.trackers.byte_tracker import BYTETracker

        self.camera_id = camera_id
        self.cfg = cfg
        self.tracker = BYTETracker(bytetrack_args(cfg))
        self.tracks: dict[int, TrackState] = {}

    def update(
        self,
        det: Detections,
        *,
        width: int,
        height: int,
        ts_ms: int,
        jpeg: bytes,
        now: float | None = None,
    ) -> tuple[Detections, list[TrackEvent]]:
        """Track ``det`` (pixel boxes, reported class ids) from one frame.

        Returns the detections with ``tracker_id`` filled (-1 for detections not part
        of a confirmed track) and the events this frame caused (entered, and left for
        tracks gone too long).
        """
        now = time.time() if now is None else now
        out = self.tracker.update(det)
        ids = np.full(len(det), -1, dtype=np.int64)
        events: list[TrackEvent] = []
        norm = det.normalized_boxes(width, height)
        for row in out:
            # BYTETracker rows: x1, y1, x2, y2, track_id, score, cls, detection index
            track_id, idx = int(row[4]), int(row[7])
            if not 0 <= idx < len(det):
                continue
            ids[idx] = track_id
            conf = float(det.confidence[idx])
            st = self.tracks.get(track_id)
            if st is None:
                st = self.tracks[track_id] = TrackState(
                    track_id, int(det.class_id[idx]), ts_ms, ts_ms, now
                )
            st.hits += 1
            st.last_seen_ms = max(st.last_seen_ms, ts_ms)
            st.last_seen_wall = now
            if conf > st.best_confidence:
                st.best_confidence = conf
                st.best_box = [round(float(v), 5) for v in norm[idx]]
                st.best_jpeg = jpeg
                st.class_id = int(det.class_id[idx])
                st.best_attributes = dict(det.attributes[idx])
            if not st.entered and st.hits >= self.cfg.min_hits:
                st.entered = True
                events.append(TrackEvent("object_entered", self.camera_id, ts_ms, st))
        det.tracker_id = ids
        events.extend(self.expire(now))
        return det, events

    def expire(self, now: float | None = None) -> list[TrackEvent]:
        """Close tracks unseen for ``lost_after_s``: 'left' for entered ones."""
        now = time.time() if now is None else now
        events = []
        for track_id, st in list(self.tracks.items()):
            if now - st.last_seen_wall > self.cfg.lost_after_s:
                del self.tracks[track_id]
                if st.entered:
                    events.append(
                        TrackEvent("object_left", self.camera_id, int(now * 1000), st, "lost")
                    )
        return events

    def close(self, reason: str = "handover") -> list[TrackEvent]:
        """Forget every track (camera handed over or switched off): 'left' for entered ones."""
        now_ms = int(time.time() * 1000)
        events = [
            TrackEvent("object_left", self.camera_id, now_ms, st, reason)
            for st in self.tracks.values()
            if st.entered
        ]
        self.tracks.clear()
        self.tracker.reset()
        return events
