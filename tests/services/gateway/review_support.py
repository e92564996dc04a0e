"""Footage for the Review API and page tests: the real recorder on demo frames,
events archived from the real Redis stream, on a chosen media store and database."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from edge_agent.demo import DemoScene
from services.archiver.archiver import Archiver
from services.archiver.config import ArchiverConfig
from services.gateway.api.storage import StorageAccess
from services.recorder.config import RecorderConfig
from services.recorder.processor import RecorderProcessor, wait_idle
from shared.eventstore import EventStore
from shared.redisutil import connect, publish_record
from shared.storage import MediaStore, StorageConfig
from tests.helpers import encode_jpeg

FPS = 15
PRE, POST = 3000, 3000
CAM = "lab/front"


@dataclass
class Footage:
    t0: int
    first_seen: int
    last_seen: int
    done_id: str  # an ended event (entered)
    left_id: str
    running_id: str  # a track that has not left
    face_id: str
    quiet_id: str  # an ended event on a camera with no footage


def record_footage(
    redis_url: str, keys, media: MediaStore, db_url: str, *, seconds: float = 24.0
) -> Footage:
    r = connect(redis_url)
    t0 = (time.time_ns() // 1_000_000) - 600_000  # ten minutes ago, inside the 24 h view
    first_seen, last_seen = t0 + 8_000, t0 + 13_000
    scene = DemoScene("bus", 640, 480)
    jpegs = [encode_jpeg(scene.render(i / FPS), 80) for i in range(FPS * 4)]
    proc = RecorderProcessor(
        RecorderConfig(mode="events", pre_roll_s=PRE / 1000, post_roll_s=POST / 1000, segment_s=4),
        media, lambda: EventStore(db_url),
    )  # fmt: skip
    proc.uploader.start()
    track = {"camera_id": CAM, "class": "person", "class_id": 0, "track_id": 5,
             "first_seen": first_seen, "box": [0.25, 0.25, 0.75, 0.75],
             "snapshot_id": "snap-done", "confidence": 0.8}  # fmt: skip
    events = [
        (first_seen + 300, {**track, "type": "object_entered", "event_id": "ev-done-in",
                            "ts": first_seen + 300}),
        (last_seen + 2000, {**track, "type": "object_left", "event_id": "ev-done-out",
                            "ts": last_seen + 2000, "last_seen": last_seen, "reason": "lost"}),
        (t0 + 20_000, {**track, "type": "object_entered", "event_id": "ev-running", "track_id": 6,
                       "first_seen": t0 + 19_500, "ts": t0 + 20_000, "snapshot_id": None}),
        (t0 + 20_500, {"type": "face_recognized", "event_id": "ev-face", "camera_id": CAM,
                       "ts": t0 + 20_500, "name": "alice", "snapshot_id": None}),
        (t0 + 21_000, {"type": "object_entered", "event_id": "ev-quiet", "camera_id": "lab/back",
                       "class": "car", "track_id": 1, "first_seen": t0 + 21_000, "ts": t0 + 21_000}),
        (t0 + 21_100, {"type": "object_left", "event_id": "ev-quiet-out", "camera_id": "lab/back",
                       "class": "car", "track_id": 1, "first_seen": t0 + 21_000,
                       "ts": t0 + 22_000, "last_seen": t0 + 21_500}),
    ]  # fmt: skip
    rb = connect(redis_url, decode=False)
    rb.set(keys.snapshot("snap-done"), jpegs[0], ex=600)
    for i in range(int(seconds * FPS)):
        ts = t0 + round(i * 1000 / FPS)
        while events and events[0][0] <= ts:
            rec = events.pop(0)[1]
            proc.triggers.apply(rec)
            publish_record(r, keys, "events", rec, maxlen=10_000)
        proc.feed(CAM, ts, jpegs[i % len(jpegs)])
    proc.flush()
    assert wait_idle(proc)
    proc.uploader.stop()
    arch = Archiver(r, rb, keys, lambda: EventStore(db_url),
                    ArchiverConfig(consumer="t", block_ms=50), media)  # fmt: skip
    while arch.step():
        pass
    arch.close()
    return Footage(t0, first_seen, last_seen, "ev-done-in", "ev-done-out", "ev-running",
                   "ev-face", "ev-quiet")  # fmt: skip


def access_for(media: MediaStore, db_url: str, tmp: Path) -> StorageAccess:
    return StorageAccess(config=StorageConfig(media_dir=str(tmp)), media=media, db_url=db_url,
                         pre_roll_ms=PRE, post_roll_ms=POST, segment_ms=4000, clip_max_s=120)  # fmt: skip
