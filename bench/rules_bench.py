"""Cost of the rules engine per frame: `python -m bench.rules_bench`.

Random tracks (objects walking with small steps) against a grid of zones and
lines; reports ms per frame and frames/s for each size.  The engine runs inside
the detector's frame handling, so this is time added to every processed frame.
"""

from __future__ import annotations

import json
import random
import time

from shared.rules import CameraRules, LineRule, RuleEngine, TrackedObject, ZoneRule


def run(objects: int, zones: int, lines: int, frames: int = 400, seed: int = 1) -> dict:
    rng = random.Random(seed)
    zs = [ZoneRule(id=f"z{i}", points=[(0.05 + 0.9 * i / zones, 0.1),
                                       (0.05 + 0.9 * (i + 1) / zones, 0.1),
                                       (0.05 + 0.9 * (i + 1) / zones, 0.9),
                                       (0.05 + 0.9 * i / zones, 0.9)], loiter_s=30)
          for i in range(zones)]  # fmt: skip
    ls = [LineRule(id=f"l{i}", points=[(0.0, (i + 1) / (lines + 1)), (1.0, (i + 1) / (lines + 1))])
          for i in range(lines)]  # fmt: skip
    engine = RuleEngine("bench/cam", CameraRules(zones=zs, lines=ls))
    pos = [[rng.random() * 0.8, rng.random() * 0.8] for _ in range(objects)]
    batches = []
    for _ in range(frames):
        for p in pos:
            p[0] = min(0.9, max(0.0, p[0] + rng.uniform(-0.01, 0.01)))
            p[1] = min(0.8, max(0.0, p[1] + rng.uniform(-0.01, 0.01)))
        batches.append([TrackedObject(k, "person", (x, y, x + 0.1, y + 0.2))
                        for k, (x, y) in enumerate(pos)])  # fmt: skip
    events = 0
    t0 = time.perf_counter()
    for i, objs in enumerate(batches):
        events += len(engine.update(objs, i / 10)[1])
    took = time.perf_counter() - t0
    return {"objects": objects, "zones": zones, "lines": lines, "frames": frames,
            "ms_per_frame": round(took / frames * 1000, 3), "fps": round(frames / took),
            "events": events}  # fmt: skip


def main() -> None:
    rows = [run(o, z, n) for o, z, n in ((5, 2, 2), (20, 5, 5), (50, 10, 10))]
    print(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
