"""`make bench`: every benchmark, each a ratio against a baseline measured in the same run.

Writes bench/results.json and bench/results.md (the table pasted into README).
``results.json`` also carries ``figures``: the headline numbers under flat dotted keys
(``detector.mixed.ratio``, ``e2e.nominal.p95_ms``, ``scale.rebalance_s``, ...).
Usage: python -m bench.run [--only transport,detector,mixed,int8,scale,e2e,edge] [--quick]
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
    res["fanout"] = transport.fanout_run(seconds=4 if quick else 6, cameras=4)
    return res


def section_detector(quick: bool) -> dict:
    from bench import detector_bench

    return detector_bench.run(seconds=10 if quick else 20, cameras=4)


def section_mixed(quick: bool) -> dict:
    from bench import detector_mixed

    return detector_mixed.run(seconds=30 if quick else 60)


def section_int8(quick: bool) -> dict:
    from bench import int8_bench

    return int8_bench.run(calls=4 if quick else 8)


def section_scale(quick: bool) -> dict:
    from bench import scale_drill

    return scale_drill.run(cameras=64, fps=5.0, replicas=3)


def section_e2e(quick: bool, chosen: str = "") -> dict:
    from bench import e2e

    return e2e.run(seconds=10 if quick else 20, backend=chosen or e2e.BACKEND)


def section_edge(quick: bool) -> dict:
    from bench import edge

    return edge.run(seconds=6 if quick else 12)


def section_storage(quick: bool) -> dict:
    from bench import storage_bench

    return storage_bench.run(quick=quick)


def section_rules(quick: bool) -> dict:
    from bench import rules_bench

    return {
        f"{o}_objects_{z}_zones_{n}_lines": rules_bench.run(o, z, n)
        for o, z, n in ((5, 2, 2), (20, 5, 5), (50, 10, 10))
    }


SECTIONS = {
    "transport": section_transport,
    "detector": section_detector,
    "mixed": section_mixed,
    "int8": section_int8,
    "scale": section_scale,
    "e2e": section_e2e,
    "edge": section_edge,
    "storage": section_storage,
    "rules": section_rules,
}


def figures(results: dict) -> dict:
    """The headline figures under the flat keys issue trackers and READMEs quote."""
    out: dict = {}

    def put(key: str, section: str, *path: str) -> None:
        node = results.get(section)
        for p in path:
            if not isinstance(node, dict) or p not in node:
                return
            node = node[p]
        out[key] = node

    put("detector.mixed.cpu_ms_per_camera_second", "mixed", "cpu_ms_per_camera_second")
    put(
        "detector.mixed.baseline_cpu_ms_per_camera_second",
        "mixed",
        "baseline_cpu_ms_per_camera_second",
    )
    put("detector.mixed.ratio", "mixed", "ratio")
    put("detector.mixed.events_missed", "mixed", "events_missed")
    put("detector.mixed.events_missed_by_time", "mixed", "events_missed_by_time")
    put("detector.int8.speedup", "int8", "bundled", "speedup")
    put("detector.int8.iou_min", "int8", "bundled", "iou_min")
    put("detector.int8.yolo11n.speedup", "int8", "yolo11n", "speedup")
    put("detector.int8.yolo11n.iou_min", "int8", "yolo11n", "iou_min")
    e = results.get("e2e")
    if isinstance(e, dict):
        for row in e.get("rows", []):
            if str(row.get("label", "")).startswith("nominal"):
                out["e2e.nominal.p95_ms"] = row.get("p95_ms")
    put("scale.rebalance_s", "scale", "rebalance_s")
    put("scale.owners_max", "scale", "owners_max")
    put("scale.cameras", "scale", "cameras")
    put("transport.throughput_ratio", "transport", "throughput_ratio")
    put("transport.fanout_curve_fps", "transport", "fanout", "fanout_curve_fps")
    put("transport.fanout_plain_fps", "transport", "fanout", "fanout_plain_fps")
    return out


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
        fo = t.get("fanout")
        if isinstance(fo, dict) and "fanout_curve_fps" in fo:
            lines.append(
                f"| fan-out ingest→subscriber, {fo['cameras']} cams, max frames/s, fan-out CURVE on | "
                f"{fo['fanout_curve_fps']} fps | {fo['fanout_plain_fps']} fps (fan-out plaintext, same run) | "
                f"{fo['fanout_curve_ratio']}× |"
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
    mx = results.get("mixed")
    if mx and "error" not in mx:
        lines.append(
            f"| detector CPU, {mx['cameras']} cams ({mx['busy']} busy, {mx['static']} static + "
            f"passer-by) × {mx['fps']:g} fps, {mx['seconds']:g} s | "
            f"{mx['cpu_ms_per_camera_second']} ms CPU per camera-second "
            f"({mx['sentri']['backend']}; events missed {mx['events_missed']}, by time overlap "
            f"only {mx.get('events_missed_by_time', '?')}) | "
            f"{mx['baseline_cpu_ms_per_camera_second']} ms (every frame, onnx FP32) | "
            f"**{mx['ratio']}×** (target ≥ 3×) |"
        )
    i8 = results.get("int8")
    if i8 and "error" not in i8:
        for name, label in (("bundled", "YOLOv8s person model"), ("yolo11n", "yolo11n arch.")):
            m = i8[name]
            iou = m["iou_min"] if m["iou_min"] is not None else "n/a (random weights)"
            lines.append(
                f"| INT8 {label}, CPU ms per 640×480 frame (OpenVINO / ONNX RT) | "
                f"{m['cpu_ms']['openvino-int8']} / {m['cpu_ms']['onnx-int8']} ms, IoU min {iou} | "
                f"{m['cpu_ms']['openvino']} / {m['cpu_ms']['onnx']} ms FP32 | "
                f"**{m['speedup_openvino']}× / {m['speedup_onnx']}×** |"
            )
    sc = results.get("scale")
    if sc and "error" not in sc:
        lines.append(
            f"| scale drill: {sc['cameras']} cams × {sc['fps']:g} fps, {sc['replicas']} replicas, "
            f"kill -9 one (stub processor) | takeover {sc['rebalance_s']} s, owners max "
            f"{sc['owners_max']}, duplicates {sc['duplicates']}, order violations "
            f"{sc['order_violations']} | spread {list(sc['spread_before'].values())} → "
            f"{list(sc['spread_after'].values())} | target < 5 s, 1 owner |"
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
    if args.only and (HERE / "results.json").exists():
        # --only refreshes some sections; the others keep their last figures.
        try:
            previous = json.loads((HERE / "results.json").read_text())
        except ValueError:
            previous = {}
        results = {**previous, "machine": machine()}
    for name in names:
        print(f"==> bench {name} ...", flush=True)
        t0 = time.monotonic()
        try:
            if name == "e2e":  # the backend `auto` chose in the mixed bench, if it ran
                chosen = (results.get("mixed") or {}).get("sentri", {}).get("backend", "")
                results[name] = section_e2e(args.quick, chosen)
            else:
                results[name] = SECTIONS[name](args.quick)
        except Exception as exc:  # a failed section is reported, the others still run
            traceback.print_exc()
            results[name] = {"error": f"{type(exc).__name__}: {exc}"}
        print(f"    {name} done in {time.monotonic() - t0:.0f}s", flush=True)
    results["figures"] = figures(results)
    (HERE / "results.json").write_text(json.dumps(results, indent=2))
    md = to_markdown(results)
    (HERE / "results.md").write_text(md)
    print("\n" + md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
