"""Gateway Prometheus metrics (default registry, served at /metrics)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

HTTP_REQUESTS = Counter(
    "sentri_gateway_http_requests_total",
    "HTTP requests by route template, method and status.",
    ["route", "method", "status"],
)
HTTP_SECONDS = Histogram(
    "sentri_gateway_http_request_seconds",
    "HTTP request duration (streaming responses: until headers).",
    ["route"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
WS_CONNECTIONS = Gauge("sentri_gateway_ws_connections", "Open websocket connections.")
WS_SENT = Counter(
    "sentri_gateway_ws_messages_sent_total", "Messages sent to browsers, by kind.", ["kind"]
)
WS_DROPPED = Counter(
    "sentri_gateway_ws_messages_dropped_total",
    "Messages dropped for slow browsers (a newer one replaced it or the queue was full).",
    ["kind"],
)
WS_CLOSED_SLOW = Counter(
    "sentri_gateway_ws_closed_slow_total", "Websockets closed because a send blocked too long."
)
LIVE_SUBSCRIBED = Gauge("sentri_gateway_live_cameras", "Cameras the live SUB socket follows.")
LIVE_FRAMES = Counter(
    "sentri_gateway_live_frames_total",
    "Live frames from ingest: received, superseded (a newer one came in the same drain).",
    ["what"],
)
MJPEG_STREAMS = Gauge("sentri_gateway_mjpeg_streams", "Open MJPEG streams.")
LOGIN_ATTEMPTS = Counter(
    "sentri_gateway_login_attempts_total", "Login attempts by result.", ["result"]
)
AUTH_REJECTED = Counter(
    "sentri_gateway_auth_rejected_total", "Requests rejected for missing/bad credentials.", ["why"]
)
STREAM_READ_ERRORS = Counter(
    "sentri_gateway_stream_read_errors_total", "Errors while reading result streams from Redis."
)
AGENT_KEY_DECISIONS = Counter(
    "sentri_gateway_agent_key_decisions_total",
    "Agent key approvals and rejections made through the API.",
    ["decision"],
)
MJPEG_REVOKED = Counter(
    "sentri_gateway_mjpeg_revoked_total",
    "MJPEG streams ended because their credentials were revoked or their scope changed.",
)
WS_REVOKED = Counter(
    "sentri_gateway_ws_revoked_total",
    "Websockets closed because their credentials were revoked.",
)
