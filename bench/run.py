"""`make bench`: every benchmark, each a ratio against a baseline measured in the same run.

Writes bench/results.json and bench/results.md (the table pasted into README).
Usage: python -m bench.run [--only transport,detector,e2e,edge] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent


def machine() -> dict:
    import psutil

    return {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d"),
    }


def section_transport(quick: bool) -> dict:
    from bench import transport

    secs = 5 if quick else 10
    res = transport.run(seconds=secs, cameras=4)
    plain = transport.run(seconds=secs, cameras=4, secure=False)
    res["sentri_plaintext_max"] = plain["sentri_max"]
    res["socketio_max_2"] = plain["socketio_max"]
    base = (res["socketio_max"]["fps"] + plain["socketio_max"]["fps"]) / 2
    res["plaintext_ratio"] = round(plain["sentri_max"]["fps"] / max(base, 0.1), 1)
    return res


def section_detector(quick: bool) -> dict:
    from bench import detector_bench

    return detector_bench.run(seconds=10 if quick else 20, cameras=4)


def section_e2e(quick: bool) -> dict:
    from bench import e2e

    return e2e.run(seconds=10 if quick else 20)


def section_edge(quick: bool) -> dict:
    from bench import edge

    return edge.run(seconds=6 if quick else 12)


SECTIONS = {
    "transport": section_transport,
    "detector": section_detector,
    "e2e": section_e2e,
    "edge": section_edge,
}


def to_markdown(results: dict) -> str:
    m = results["machine"]
    lines = [
        f"Machine: {m['cores']} cores, {m['memory_gb']} GB, {m['cpu']}, Python {m['python']}, {m['date']}. "
        "Command: `make bench`.",
        "",
        "| benchmark | Sentri | baseline (same run) | ratio / target |",
        "|---|---|---|---|",
    ]
    t = results.get("transport")
    if t and "error" not in t:
        lines.append(
            f"| transport, {t['cameras']} cams 640×480 q80, max frames/s, CURVE on | {t['sentri_max']['fps']} fps | "
            f"{t['socketio_max']['fps']} fps (Socket.IO, base64 JSON) | **{t['throughput_ratio']}×** (target ≥ 10×) |"
        )
        if "sentri_plaintext_max" in t:
            lines.append(
                f"| transport, same, `--insecure` (no CURVE) | {t['sentri_plaintext_max']['fps']} fps | "
                f"{t['socketio_max_2']['fps']} fps (Socket.IO, second run) | **{t['plaintext_ratio']}×** "
                "(vs the mean of both Socket.IO runs) |"
            )
        lines.append(
            f"| transport latency at {t['sentri_nominal']['offered_fps']} fps nominal, p50 / p99 | "
            f"{t['sentri_nominal']['p50_ms']} / {t['sentri_nominal']['p99_ms']} ms | "
            f"{t['socketio_nominal']['p50_ms']} / {t['socketio_nominal']['p99_ms']} ms | "
            f"{round(t['socketio_nominal']['p50_ms'] / max(t['sentri_nominal']['p50_ms'], 0.01), 1)}× lower p50 |"
        )
    d = results.get("detector")
    if d and "error" not in d:
        lines.append(
            f"| detector service, {d.get('cameras', '?')} cams, aggregate frames/s | {d.get('service_fps')} fps "
            f"(p50 {d.get('service_p50_ms')} ms) | {d.get('naive_fps')} fps (naive `.pt` predict loop) | "
            f"**{d.get('ratio')}×** (target ≥ 2×) |"
        )
    e = results.get("e2e")
    if e and "error" not in e:
        for row in e.get("rows", []):
            lines.append(
                f"| end to end capture→websocket, {row['label']} p50 / p95 / p99 | "
                f"{row['p50_ms']} / {row['p95_ms']} / {row['p99_ms']} ms (skipped {row.get('skipped', 0)}) | — | "
                f"{row.get('target', '')} |"
            )
    g = results.get("edge")
    if g and "error" not in g:
        for row in g.get("rows", []):
            lines.append(
                f"| edge agent 640×480@15, {row['label']} | {row['cpu_pct']} % of a core, {row['mbit_s']} Mbit/s | "
                f"{row.get('baseline', '—')} | {row.get('ratio', '')} |"
            )
    for name in SECTIONS:
        r = results.get(name)
        if r and "error" in r:
            lines.append(f"| {name} | failed: {r['error']} | | |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="make bench", description=__doc__)
    p.add_argument("--only", help="comma-separated sections: " + ",".join(SECTIONS))
    p.add_argument("--quick", action="store_true", help="shorter runs")
    args = p.parse_args(argv)
    names = args.only.split(",") if args.only else list(SECTIONS)
    results: dict = {"machine": machine()}
    for name in names:
        print(f"==> bench {name} ...", flush=True)
        t0 = time.monotonic()
        try:
            results[name] = SECTIONS[name](args.quick)
        except Exception as exc:  # a failed section is reported, the others still run
            traceback.print_exc()
            results[name] = {"error": f"{type(exc).__name__}: {exc}"}
        print(f"    {name} done in {time.monotonic() - t0:.0f}s", flush=True)
    (HERE / "results.json").write_text(json.dumps(results, indent=2))
    md = to_markdown(results)
    (HERE / "results.md").write_text(md)
    print("\n" + md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
