"""Pending analyses: at most one per camera, newest wins, one camera at a time.

The frame path only *submits* jobs here; worker threads take them and make the slow
API calls.  The queue can never hold more than one job per camera, so it is bounded
by the number of owned cameras whatever the load.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from shared.worker import Frame

PERIODIC = "periodic"


@dataclass(slots=True)
class AnalysisJob:
    camera_id: str
    frame: Frame | None
    trigger: str = PERIODIC  # an event type, or "periodic"
    event: dict[str, Any] | None = None
    created: float = field(default_factory=time.monotonic)

    def merged_with(self, older: AnalysisJob) -> AnalysisJob:
        """This newer job replacing ``older``: newest frame, but an event trigger is kept."""
        if self.trigger == PERIODIC and older.trigger != PERIODIC:
            return AnalysisJob(
                self.camera_id, self.frame or older.frame, older.trigger, older.event, older.created
            )
        if self.frame is None and older.frame is not None:
            self.frame = older.frame
        return self


class LatestJobQueue:
    """Latest job per camera; a camera with a job running is not handed out twice."""

    def __init__(self) -> None:
        self._jobs: dict[str, AnalysisJob] = {}
        self._order: deque[str] = deque()
        self._running: set[str] = set()
        self._cond = threading.Condition()
        self._closed = False

    def put(self, job: AnalysisJob) -> bool:
        """Queue ``job``; returns True if it replaced a pending job of the same camera."""
        with self._cond:
            old = self._jobs.get(job.camera_id)
            if old is not None:
                self._jobs[job.camera_id] = job.merged_with(old)
                return True
            self._jobs[job.camera_id] = job
            self._order.append(job.camera_id)
            self._cond.notify()
            return False

    def take(self, timeout: float) -> AnalysisJob | None:
        """The oldest pending job of a camera not currently running, or None on timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not self._closed:
                for cam in self._order:
                    if cam not in self._running:
                        self._order.remove(cam)
                        self._running.add(cam)
                        return self._jobs.pop(cam)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self._cond.wait(remaining)
            return None

    def done(self, camera_id: str) -> None:
        with self._cond:
            self._running.discard(camera_id)
            self._cond.notify_all()

    def discard(self, keep: set[str] | frozenset[str]) -> int:
        """Drop pending jobs of cameras not in ``keep``; returns how many."""
        with self._cond:
            gone = [c for c in self._jobs if c not in keep]
            for cam in gone:
                del self._jobs[cam]
                self._order.remove(cam)
            return len(gone)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def __len__(self) -> int:
        with self._cond:
            return len(self._jobs)
