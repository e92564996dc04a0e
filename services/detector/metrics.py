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
