"""Faces worker: dlib face detection + encoding, gallery matching, face events.

Modules: ``config`` (FacesConfig, section ``faces:``), ``engine`` (detector, quality
gate, encoder), ``gallery`` (enrolled people in Redis; the API the gateway uses),
``processor`` (the :class:`shared.worker.Processor`), ``metrics``, ``bench`` and
``__main__`` (``sentri faces [run|add|list|delete|rename|bench]``).

Records it writes (JSON in the ``data`` field of stream entries):

* stream ``faces``, one per face that passed the quality gate::

    {"type": "face", "camera_id": "host/cam", "ts": <capture unix ms>,
     "name": "Ada" | "unknown", "distance": 0.41 | null (empty gallery),
     "box": [x1, y1, x2, y2] (0..1 of the frame), "size_px": 112,
     "sharpness": 640.2, "score": 1.4 (detector margin)}

* stream ``events``, when a known person appears on a camera (again only after
  ``debounce_s`` without seeing them there)::

    {"type": "face_recognized", "event_id": "<hex>", "camera_id": "host/cam",
     "ts": <unix ms, cluster clock>, "capture_ts": <agent's clock>, "name": "Ada", "distance": 0.41, "box": [...],
     "snapshot_id": "face-<hex>"}

  The frame's JPEG is at ``keys.snapshot(snapshot_id)`` for ``snapshot_ttl_s``.

* per-camera counters in the runtime's ``<prefix>worker_stats:faces`` hash
  (``counters`` of each camera's JSON, next to fps/skipped/latency): frames
  analysed / gated by the person gate / rate limited / invalid, faces detected /
  recognised / unknown / rejected by reason, events, detection and encoding ms).
"""
