"""Storage benchmarks: recorder CPU per camera, event query p95 over 1,000,000 SQLite
events, 30 s clip assembly, segment sizes (GB per day per camera).

``run(quick=False) -> dict``; ``python -m bench.storage_bench [--quick]`` prints JSON.
Hook into ``bench/run.py`` as a section::

    def section_storage(quick: bool) -> dict:
        from bench import storage_bench
        return storage_bench.run(quick=quick)
"""

from __future__ import annotations

import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

FPS = 15


def _demo_jpegs(scene: str, seconds: float, static: bool = False) -> list[bytes]:
    import cv2

    from edge_agent.demo import DemoScene

    sc = DemoScene(scene, 640, 480, static=static)
    out = []
    for i in range(int(seconds * FPS)):
        ok, buf = cv2.imencode(".jpg", sc.render(i / FPS), [cv2.IMWRITE_JPEG_QUALITY, 80])
        out.append(buf.tobytes())
    return out


def recorder_cpu(seconds: float = 20.0, *, static: bool = False) -> dict:
    """CPU of one 640x480@15 camera in continuous mode (JPEG decode + H.264 encode),
    as a share of one core; plus the bytes it writes (GB/day at the default quality)."""
    from services.recorder.config import RecorderConfig
    from services.recorder.processor import CameraRecorder

    jpegs = _demo_jpegs("bus", min(seconds, 10), static=static)
    rec = CameraRecorder("bench/cam", RecorderConfig(mode="continuous"))
    t0_ms = 1_767_225_600_000
    n = int(seconds * FPS)
    sizes = 0
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for i in range(n):
        ts = t0_ms + round(i * 1000 / FPS)
        for seg in rec.feed(ts, jpegs[i % len(jpegs)], False, None, "continuous"):
            sizes += len(seg.data)
    for seg in rec.close("continuous"):
        sizes += len(seg.data)
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    return {
        "scene": "bus (static)" if static else "bus (moving demo camera)",
        "video_s": seconds,
        "cpu_s": round(cpu, 2),
        "core_share_percent": round(100 * cpu / seconds, 1),
        "ms_per_frame": round(1000 * cpu / n, 2),
        "wall_s": round(wall, 2),
        "bytes_per_s": round(sizes / seconds),
        "gb_per_day": round(sizes / seconds * 86400 / 1e9, 2),
    }


def _fill_events(store, n: int, cameras: int = 50) -> None:
    """n events (half entered, half left of n/2 tracks) straight into the tables."""
    from sqlalchemy import insert

    from shared.eventstore.models import Event, Segment, TrackedObject

    rnd = random.Random(7)
    labels = ["person", "car", "dog", "bicycle", "truck"]
    t0 = 1_767_225_600_000
    batch_o, batch_e, batch_s = [], [], []
    with store.engine.begin() as conn:
        for i in range(n // 2):
            cam = f"site{i % cameras}/cam"
            start = t0 + i * 500
            oid = f"o{i:012d}"
            label = labels[rnd.randrange(len(labels))]
            batch_o.append(dict(object_id=oid, camera_id=cam, kind="object", label=label,
                                track_id=i, start_ms=start, end_ms=start + 4000, confidence=0.8,
                                updated_ms=start))  # fmt: skip
            for k, (typ, ts) in enumerate((("object_entered", start + 300),
                                          ("object_left", start + 6000))):  # fmt: skip
                batch_e.append(dict(event_id=f"e{i:012d}{k}", object_id=oid, type=typ,
                                    camera_id=cam, label=label, ts_ms=ts, stream_ms=ts + 5,
                                    stream_seq=k, snapshot_id=None,
                                    data={"type": typ, "camera_id": cam, "ts": ts, "class": label}))  # fmt: skip
            if i % 10 == 0:  # one object in ten has footage (events mode)
                batch_s.append(dict(camera_id=cam, start_ms=start - 5000, end_ms=start + 5000,
                                    key=f"recordings/{i}.mp4", bytes=1, frames=150,
                                    mode="events", event=True))  # fmt: skip
            if len(batch_e) >= 20_000:
                conn.execute(insert(TrackedObject), batch_o)
                conn.execute(insert(Event), batch_e)
                conn.execute(insert(Segment), batch_s)
                batch_o, batch_e, batch_s = [], [], []
        if batch_e:
            conn.execute(insert(TrackedObject), batch_o)
            conn.execute(insert(Event), batch_e)
        if batch_s:
            conn.execute(insert(Segment), batch_s)


def event_queries(n: int = 1_000_000, queries: int = 300) -> dict:
    from shared.eventstore import EventQuery, EventStore

    d = Path(tempfile.mkdtemp(prefix="sentri-bench-db-"))
    store = EventStore(f"sqlite:///{d / 'events.db'}")
    t = time.perf_counter()
    _fill_events(store, n)
    fill_s = time.perf_counter() - t
    with store.engine.begin() as conn:
        conn.exec_driver_sql("ANALYZE")
    newest = store.newest_stream_id()
    assert newest is not None
    rnd = random.Random(1)
    t0, span = 1_767_225_600_000, n // 2 * 500

    def one() -> EventQuery:
        kind = rnd.randrange(7)
        mid = t0 + rnd.randrange(span)
        if kind == 0:
            return EventQuery(limit=50)
        if kind == 1:
            return EventQuery(camera_id=f"site{rnd.randrange(50)}/cam", limit=50)
        if kind == 2:
            return EventQuery(type="object_entered", label=rnd.choice(["person", "car"]), limit=50)
        if kind == 3:
            return EventQuery(since=mid, until=mid + 3_600_000, limit=50)
        if kind == 4:
            return EventQuery(cursor=(mid, 0), limit=50)  # a deep page
        if kind == 5:
            return EventQuery(camera_id=f"site{rnd.randrange(50)}/cam", type="object_entered",
                              cursor=(mid, 0), limit=50)  # fmt: skip
        return EventQuery(has_clip=True, type="object_entered", cursor=(mid, 0), limit=50)

    times = []
    for _ in range(queries):
        q = one()
        s = time.perf_counter()
        rows, _ = store.list_events(q, pre_ms=5000, post_ms=5000)
        times.append((time.perf_counter() - s) * 1000)
    times.sort()
    store.close()
    size = (d / "events.db").stat().st_size
    return {
        "events": n,
        "fill_s": round(fill_s, 1),
        "db_mb": round(size / 2**20),
        "queries": queries,
        "p50_ms": round(statistics.median(times), 2),
        "p95_ms": round(times[int(0.95 * len(times)) - 1], 2),
        "max_ms": round(times[-1], 2),
    }


def clip_assembly(repeats: int = 5) -> dict:
    from services.recorder.config import RecorderConfig
    from services.recorder.processor import CameraRecorder
    from shared.storage import FsMediaStore, segment_key
    from shared.storage.clips import assemble_clip

    d = Path(tempfile.mkdtemp(prefix="sentri-bench-clip-"))
    media = FsMediaStore(d)
    jpegs = _demo_jpegs("bus", 10)
    rec = CameraRecorder("bench/cam", RecorderConfig(mode="continuous"))
    t0 = 1_767_225_600_000
    segs = []
    for i in range(FPS * 30 + 1):
        ts = t0 + round(i * 1000 / FPS)
        done = rec.feed(ts, jpegs[i % len(jpegs)], False, None, "continuous")
        if i == FPS * 30:
            done += rec.close("continuous")
        for s in done:
            key = segment_key("bench/cam", s.start_ms, s.end_ms)
            media.put(key, s.data)
            segs.append({"key": key, "start": s.start_ms})
    times = []
    size = 0
    for _ in range(repeats):
        s = time.perf_counter()
        size = len(assemble_clip(media, segs))
        times.append(time.perf_counter() - s)
    return {"clip_s": 30, "segments": len(segs), "bytes": size,
            "median_s": round(statistics.median(times), 3), "max_s": round(max(times), 3)}  # fmt: skip


def run(quick: bool = False) -> dict:
    return {
        "recorder_cpu": recorder_cpu(10 if quick else 30),
        "recorder_cpu_static": recorder_cpu(10 if quick else 30, static=True),
        "event_query": event_queries(100_000 if quick else 1_000_000, 100 if quick else 300),
        "clip_assembly": clip_assembly(3 if quick else 5),
        "targets": {"recorder_core_share_percent": 5, "event_query_p95_ms": 50, "clip_30s_s": 1},
    }


if __name__ == "__main__":
    print(json.dumps(run(quick="--quick" in sys.argv), indent=2))
