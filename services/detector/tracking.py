"""Per-camera tracking (ultralytics' BYTETracker) and the track life cycle.

A :class:`CameraTracker` gives each detection a stable ``tracker_id`` and turns track
life cycles into :class:`TrackEvent` s:

* ``object_entered`` once a track has been seen in ``min_hits`` frames;
* ``object_left`` once an entered track was missed by at least two detection runs
  and not seen for ``lost_after_s`` (frame clock); when the camera sends nothing for
  ``lost_after_s`` (wall clock, :meth:`CameraTracker.expire`); or when the camera
  leaves this replica (``reason``: ``handover``, ``disabled``, ``shutdown``).

Motion-aware scheduling runs the model on a static camera only every few seconds:
a track is judged by the detection runs that happened, never by the frames that
were passed over, so an object that stands still survives the gaps.  The tracker
also tells the scheduler whether it has *unsettled* tracks (unconfirmed, missed by
the last run, or moved recently), which keep the model running.

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
    last_confidence: float = 0.0
    best_confidence: float = 0.0
    best_box: list[float] = field(default_factory=list)  # normalised xyxy
    best_jpeg: bytes = b""
    best_attributes: dict = field(default_factory=dict)
    entered: bool = False
    #: Detection runs in a row that did not see this track.
    misses: int = 0
    #: Last box (pixels xyxy) and where it was when it last moved noticeably.
    last_box: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)
    anchor_box: tuple[float, float, float, float] | None = None
    last_moved_t: float = 0.0
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


#: A track moved when its centre left its anchor by this fraction of its size.
MOVE_FRACTION = 0.08


def _moved(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    size = max(a[2] - a[0], a[3] - a[1], 1.0)
    dx = (b[0] + b[2] - a[0] - a[2]) / 2
    dy = (b[1] + b[3] - a[1] - a[3]) / 2
    grown = abs((b[2] - b[0]) - (a[2] - a[0])) + abs((b[3] - b[1]) - (a[3] - a[1]))
    return max(abs(dx), abs(dy)) > MOVE_FRACTION * size or grown > 2 * MOVE_FRACTION * size


def bytetrack_args(cfg: TrackerConfig) -> SimpleNamespace:
    """The settings namespace ultralytics' BYTETracker expects."""
    return SimpleNamespace(
        tracker_type="bytetrack",
        track_high_thresh=cfg.high_thresh,
        track_low_thresh=min(cfg.low_thresh, cfg.high_thresh),
        new_track_thresh=cfg.high_thresh,
        track_buffer=cfg.track_buffer,
        match_thresh=cfg.match_thresh,
        fuse_score=cfg.fuse_score,
    )


class CameraTracker:
    """Tracking state of one camera (owned by exactly one replica at a time)."""

    def __init__(self, camera_id: str, cfg: TrackerConfig) -> None:
        from ultralytics.trackers.byte_tracker import BYTETracker

        self.camera_id = camera_id
        self.cfg = cfg
        self.tracker = BYTETracker(bytetrack_args(cfg))
        self.tracks: dict[int, TrackState] = {}
        #: Wall time of the last frame received (detected on or passed over).
        self.last_frame_wall = time.time()

    def note_frame(self, wall: float | None = None) -> None:
        """A frame arrived (even one passed over): the camera is not silent."""
        self.last_frame_wall = time.time() if wall is None else wall

    def unsettled(self, t: float, hold_s: float) -> bool:
        """Tracks that need the model on the next frame: unconfirmed, just missed, or moving."""
        return any(
            not st.entered or st.misses > 0 or t - st.last_moved_t <= hold_s
            for st in self.tracks.values()
        )

    def boxes(self, tracks: list[TrackState] | None = None) -> np.ndarray:
        """Last boxes (pixels xyxy) of ``tracks`` (default: every live track)."""
        tracks = list(self.tracks.values()) if tracks is None else tracks
        return np.array([st.last_box for st in tracks], np.float32).reshape(-1, 4)

    def stationary(self, t: float, hold_s: float) -> list[TrackState]:
        """Announced tracks seen by the last detection that have not moved for ``hold_s``."""
        return [
            st
            for st in self.tracks.values()
            if st.entered and st.misses == 0 and t - st.last_moved_t > hold_s
        ]

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
        seen: set[int] = set()
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
            st.misses = 0
            seen.add(track_id)
            st.last_seen_ms = max(st.last_seen_ms, ts_ms)
            st.last_seen_wall = now
            box = tuple(float(v) for v in det.xyxy[idx])
            st.last_box = box  # type: ignore[assignment]
            st.last_confidence = conf
            if st.anchor_box is None or _moved(st.anchor_box, box):
                st.anchor_box, st.last_moved_t = box, now  # type: ignore[assignment]
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
        for track_id, st in list(self.tracks.items()):
            if track_id in seen:
                continue
            st.misses += 1
            gone = now - st.last_seen_wall > self.cfg.lost_after_s
            # Entered tracks need two misses in a row: one weak run after an idle gap
            # must not end a track that is still there.
            if gone and (st.misses >= 2 or not st.entered):
                del self.tracks[track_id]
                if st.entered:
                    events.append(
                        TrackEvent("object_left", self.camera_id, int(now * 1000), st, "lost")
                    )
        return det, events

    def expire(self, now: float | None = None) -> list[TrackEvent]:
        """Close every track when the camera sent nothing for ``lost_after_s`` (wall clock)."""
        now = time.time() if now is None else now
        if not self.tracks or now - self.last_frame_wall <= self.cfg.lost_after_s:
            return []
        events = [
            TrackEvent("object_left", self.camera_id, int(now * 1000), st, "lost")
            for st in self.tracks.values()
            if st.entered
        ]
        self.tracks.clear()
        self.tracker.reset()
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
