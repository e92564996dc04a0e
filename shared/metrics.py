"""Prometheus metrics shared by every service (default registry).

Service-specific metrics live in each service; the ones every component reports
(invalid input, worker runtime frames/skips/latency) are defined once here.
"""

from __future__ import annotations

import logging

from prometheus_client import Counter, Gauge, Histogram, start_http_server

log = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0, 5.0)
INFERENCE_BUCKETS = (0.002, 0.005, 0.01, 0.02, 0.035, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5)

INVALID_INPUT = Counter(
    "sentri_invalid_input_total",
    "Network input rejected by a decoder/validator, by reason.",
    ["service", "reason"],
)

WORKER_FRAMES_RECEIVED = Counter(
    "sentri_worker_frames_received_total", "Frames received from ingest.", ["service", "camera_id"]
)
WORKER_FRAMES_PROCESSED = Counter(
    "sentri_worker_frames_processed_total", "Frames processed.", ["service", "camera_id"]
)
WORKER_FRAMES_SKIPPED = Counter(
    "sentri_worker_frames_skipped_total",
    "Frames dropped because a newer one arrived first or they were too old.",
    ["service", "camera_id"],
)
WORKER_LATENCY = Histogram(
    "sentri_worker_latency_seconds",
    "Capture-to-result latency of processed frames.",
    ["service"],
    buckets=LATENCY_BUCKETS,
)
WORKER_PROCESS_SECONDS = Histogram(
    "sentri_worker_process_seconds",
    "Time spent in one process_batch call.",
    ["service"],
    buckets=INFERENCE_BUCKETS,
)
WORKER_OWNED_CAMERAS = Gauge(
    "sentri_worker_owned_cameras",
    "Cameras this replica owns and processes.",
    ["service", "replica"],
)
WORKER_BUFFERED = Gauge(
    "sentri_worker_buffered_frames", "Frames waiting in the latest-frame buffer.", ["service"]
)
WORKER_ERRORS = Counter(
    "sentri_worker_errors_total", "Exceptions raised while processing.", ["service"]
)


def start_metrics_server(port: int, addr: str = "0.0.0.0") -> None:
    """Expose /metrics on ``port`` (no-op for 0)."""
    if port:
        start_http_server(port, addr=addr)
        log.info("metrics server listening", extra={"port": port})
