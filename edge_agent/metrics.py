"""Prometheus metrics of the edge agent (served on ``--metrics-port`` when set)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

SERVICE = "edge"

FRAMES = Counter(
    "sentri_edge_frames_total",
    "Frames per camera by outcome: captured, encoded, sent, dropped (stale or link "
    "full/absent), gated (held back by the motion gate).",
    ["camera_id", "outcome"],
)
BYTES_SENT = Counter("sentri_edge_bytes_sent_total", "JPEG bytes sent to ingest.", ["camera_id"])
MOTION = Gauge("sentri_edge_motion", "Latest motion measure (0..1).", ["camera_id"])
CAPTURE_ERRORS = Counter(
    "sentri_edge_capture_errors_total", "Failed reads and reopen attempts.", ["camera_id"]
)
CONTROL_MESSAGES = Counter(
    "sentri_edge_control_messages_total", "Control messages by direction and type.",
    ["direction", "type"],
)  # fmt: skip
RECONNECTS = Counter(
    "sentri_edge_control_reconnects_total",
    "Control socket recreated after ingest stopped answering.",
)
CONNECTED = Gauge("sentri_edge_control_connected", "1 while ingest answers the control channel.")
HANDSHAKES_REFUSED = Counter(
    "sentri_edge_handshakes_refused_total",
    "Control handshakes ingest refused (CURVE key unknown, pending or rejected).",
)
ENROLMENT_ATTEMPTS = Counter(
    "sentri_edge_enrolment_requests_total",
    "Bootstrap requests to the gateway by outcome: ok, unavailable (retried).",
    ["outcome"],
)
THREAD_CRASHES = Counter(
    "sentri_edge_thread_crashes_total", "Agent threads that died of an exception (fatal)."
)
