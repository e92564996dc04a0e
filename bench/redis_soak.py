"""Redis stays bounded and holds no media: `python -m bench.redis_soak [--minutes 10]`.

Runs `sentri up --demo` (every service, three demo cameras) in a temporary state dir
on free ports for the given time, then reads the embedded Redis (found through the
runtime file `sentri up` writes) and reports `used_memory`, the number of keys, the
largest values and whether any value is a JPEG (it must not be: snapshots and
recordings live in the media store). Prints one JSON object; exit code 1 when a JPEG
is found in Redis or memory exceeds --bound-mb.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis

from shared.redisutil import free_port

JPEG_MAGIC = b"\xff\xd8\xff"


def scan_values(r: redis.Redis) -> dict:
    """Type, size and JPEG check of every key (values read whole: Redis here is small)."""
    jpeg_keys, biggest, by_type = [], [], {}
    for key in r.scan_iter(count=1000):
        kind = r.type(key).decode()
        by_type[kind] = by_type.get(kind, 0) + 1
        size = r.memory_usage(key) or 0
        biggest.append((size, key.decode(errors="replace")))
        values: list[bytes] = []
        if kind == "string":
            values = [r.get(key) or b""]
        elif kind == "hash":
            values = list(r.hvals(key))
        elif kind == "stream":
            for _id, fields in r.xrange(key, count=200):
                values.extend(fields.values())
        elif kind in ("list",):
            values = r.lrange(key, 0, 200)
        if any(v.startswith(JPEG_MAGIC) for v in values if isinstance(v, bytes)):
            jpeg_keys.append(key.decode(errors="replace"))
    biggest.sort(reverse=True)
    return {"keys_by_type": by_type, "jpeg_keys": jpeg_keys,
            "largest": [{"key": k, "bytes": s} for s, k in biggest[:8]]}  # fmt: skip


def run(minutes: float, bound_mb: float) -> dict:
    state = Path(tempfile.mkdtemp(prefix="sentri-soak-"))
    ports = {n: free_port() for n in ("frame", "control", "pub", "gateway")}
    env = {k: v for k, v in os.environ.items() if not k.startswith("SENTRI_") and k != "REDIS_URL"}
    env.update(
        SENTRI_INGEST__FRAME_PORT=str(ports["frame"]),
        SENTRI_INGEST__CONTROL_PORT=str(ports["control"]),
        SENTRI_INGEST__PUB_PORT=str(ports["pub"]),
        SENTRI_GATEWAY__ADMIN_PASSWORD="soak-" + os.urandom(12).hex(),
        YOLO_OFFLINE="1",
    )
    cmd = [sys.executable, "-m", "sentri_cli.main", "up", "--demo", "--state-dir", str(state),
           "--gateway-port", str(ports["gateway"])]  # fmt: skip
    log = open(state / "up.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    samples = []
    try:
        runtime = state / "runtime.json"
        deadline = time.monotonic() + 120
        while not runtime.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"sentri up did not start; see {state / 'up.log'}")
            time.sleep(0.5)
        url = json.loads(runtime.read_text())["redis_url"]
        r = redis.Redis.from_url(url, socket_timeout=10)
        end = time.monotonic() + minutes * 60
        while time.monotonic() < end:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"sentri up exited with {proc.returncode}; see {state / 'up.log'}"
                )
            info = r.info("memory")
            samples.append(round(info["used_memory"] / 2**20, 2))
            time.sleep(min(30.0, max(1.0, end - time.monotonic())))
        info = r.info("memory")
        scan = scan_values(r)
        events = r.xlen(r.keys("*stream:events")[0]) if r.keys("*stream:events") else 0
        result = {
            "minutes": minutes,
            "used_memory_mb": round(info["used_memory"] / 2**20, 2),
            "used_memory_peak_mb": round(info["used_memory_peak"] / 2**20, 2),
            "maxmemory_mb": round(int(r.config_get("maxmemory")["maxmemory"]) / 2**20, 1),
            "policy": r.config_get("maxmemory-policy")["maxmemory-policy"],
            "samples_mb": samples,
            "events_in_stream": events,
            "bound_mb": bound_mb,
            **scan,
        }
        result["ok"] = not result["jpeg_keys"] and result["used_memory_peak_mb"] <= bound_mb
        return result
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--bound-mb", type=float, default=64.0, help="stated bound for used_memory")
    args = p.parse_args()
    result = run(args.minutes, args.bound_mb)
    print(json.dumps(result, indent=1))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
