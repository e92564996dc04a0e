"""Prometheus metrics of the detector (the worker runtime adds frames in/processed/
skipped, latency and owned cameras: ``shared.metrics``)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from shared.metrics import INFERENCE_BUCKETS

INFERENCE_SECONDS = Histogram(
    "sentri_detector_inference_seconds",
    "Wall time of one model call (a batch of frames), by backend.",
    ["backend"],
    buckets=INFERENCE_BUCKETS,
)
BATCH_SIZE = Histogram(
    "sentri_detector_batch_frames",
    "Frames per model call.",
    buckets=(1, 2, 3, 4, 6, 8, 12, 16, 32, 64),
)
OBJECTS = Counter(
    "sentri_detector_objects_total", "Objects reported in detection records, by class.", ["class"]
)
TRACKS_CARRIED = Counter(
    "sentri_detector_tracks_carried_total",
    "Stationary tracks kept at their last box on region frames whose crops did not "
    "cover them (re-checked by the next full frame).",
)
EVENTS = Counter("sentri_detector_events_total", "Track events published, by type.", ["type"])
ACTIVE_TRACKS = Gauge("sentri_detector_active_tracks", "Tracks currently followed by this process.")
MODEL_LOAD_SECONDS = Gauge(
    "sentri_detector_model_load_seconds", "Time to load, export and warm up the model."
)
PUBLISH_FAILURES = Counter(
    "sentri_detector_publish_failures_total",
    "Records that could not be written to Redis, by stream (events are retried).",
    ["stream"],
)
EVENTS_DROPPED = Counter(
    "sentri_detector_events_dropped_total",
    "Unpublished events dropped because the retry queue was full (Redis down for long).",
)
FRAMES_SKIPPED_STATIC = Counter(
    "sentri_detector_frames_skipped_static_total",
    "Frames passed over because nothing moved (motion-aware scheduling), by camera; "
    "apart from the runtime's overload skips.",
    ["camera"],
)
DETECT_DECISIONS = Counter(
    "sentri_detector_decisions_total",
    "Frames the model ran on, by why: motion, tracks, keyframe or always (motion_aware off).",
    ["reason"],
)
MOTION_HEADER_CLAMPED = Counter(
    "sentri_detector_motion_header_clamped_total",
    "Frames whose agent `motion` header was outside 0..1 (clamped) or not a number (ignored).",
)
INFERENCE_MODE = Counter(
    "sentri_detector_inference_frames_total",
    "Frames run through the model, by mode: full (whole frame) or region (crops).",
    ["mode"],
)
