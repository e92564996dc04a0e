"""Prometheus metrics of the faces worker (the runtime's frame metrics are in shared.metrics)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from shared.metrics import INFERENCE_BUCKETS

SERVICE = "faces"

FACES_DETECTED = Counter(
    "sentri_faces_detected_total",
    "Faces found by the detector (before the quality gate).",
    ["camera_id"],
)
FACES_RECOGNISED = Counter(
    "sentri_faces_recognised_total", "Faces matched to a gallery person.", ["camera_id"]
)
FACES_UNKNOWN = Counter(
    "sentri_faces_unknown_total",
    "Faces that passed the quality gate but match nobody.",
    ["camera_id"],
)
FACES_REJECTED = Counter(
    "sentri_faces_rejected_total",
    "Faces rejected by the quality gate (too_small, blurry, too_many); never matched.",
    ["camera_id", "reason"],
)
FRAMES_GATED = Counter(
    "sentri_faces_frames_gated_total",
    "Frames not analysed, so detection work saved: no_person (person gate) or rate_limited.",
    ["camera_id", "reason"],
)
FRAMES_ANALYSED = Counter(
    "sentri_faces_frames_analysed_total", "Frames the face detector ran on.", ["camera_id"]
)
EVENTS = Counter("sentri_faces_events_total", "face_recognized events published.", ["camera_id"])
DETECT_SECONDS = Histogram(
    "sentri_faces_detect_seconds", "Face detection time per frame.", buckets=INFERENCE_BUCKETS
)
ENCODE_SECONDS = Histogram(
    "sentri_faces_encode_seconds", "Face encoding time per face.", buckets=INFERENCE_BUCKETS
)
GALLERY_PEOPLE = Gauge("sentri_faces_gallery_people", "People in the gallery (as last loaded).")
GALLERY_ENCODINGS = Gauge(
    "sentri_faces_gallery_encodings", "Encodings in the gallery (as last loaded)."
)
ENROLMENTS = Counter(
    "sentri_faces_enrolments_total",
    "Enrolment requests by outcome (ok or HTTP status).",
    ["outcome"],
)
