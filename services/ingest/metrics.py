"""Prometheus metrics of the ingest service (default registry).

Invalid network input is counted in the shared ``sentri_invalid_input_total``
(``shared.metrics.INVALID_INPUT``) with ``service="ingest"``.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge

FRAMES_IN = Counter(
    "sentri_ingest_frames_in_total",
    "Valid frames received from agents of registered cameras.",
    ["camera_id"],
)
BYTES_IN = Counter(
    "sentri_ingest_bytes_in_total", "JPEG bytes of valid frames received.", ["camera_id"]
)
FRAMES_OUT = Counter(
    "sentri_ingest_frames_out_total",
    "Frames published on the fan-out PUB socket (once per frame, not per subscriber).",
    ["camera_id"],
)
FRAMES_DROPPED = Counter(
    "sentri_ingest_frames_dropped_total",
    "Frames not forwarded, by reason ('unregistered' or 'invalid').",
    ["reason"],
)
MOTION_CLAMPED = Counter(
    "sentri_ingest_motion_clamped_total",
    "Frames whose agent `motion` header was outside 0..1; forwarded with the score clamped.",
)
CLIENTS_CONNECTED = Gauge(
    "sentri_ingest_clients_connected", "Agents with a live control session in this process."
)
CONTROL_MESSAGES = Counter(
    "sentri_ingest_control_messages_total", "Valid control messages from agents.", ["type"]
)
COMMANDS = Counter(
    "sentri_ingest_commands_total",
    "Commands read from the commands stream, by result (sent, undeliverable, invalid).",
    ["result"],
)
PEER_DISCONNECTS = Counter(
    "sentri_ingest_peer_disconnects_total",
    "TCP peers that went away, by port (frame/control/pub). Includes peers cut off by "
    "ZeroMQ for a message part larger than MAXMSGSIZE and non-ZMTP garbage.",
    ["port"],
)
REGISTRY_ERRORS = Counter(
    "sentri_ingest_registry_errors_total",
    "Redis errors while writing the registry (the write is retried).",
)
REGISTRY_BACKLOG = Gauge("sentri_ingest_registry_backlog", "Registry writes waiting for Redis.")
REGISTRY_DROPPED = Counter(
    "sentri_ingest_registry_writes_dropped_total",
    "Registry writes discarded because the backlog was full while Redis was down.",
)
AGENT_CLOCK_OFFSET = Gauge(
    "sentri_ingest_agent_clock_offset_seconds",
    "Estimated agent clock offset: min over a window of (ingest receive - capture time). "
    "Positive: the agent's clock is behind ingest's.",
    ["client_id"],
)
AGENT_CLOCK_SKEWED = Gauge(
    "sentri_ingest_agent_clock_skewed",
    "1 while an agent's clock is off by more than ingest.limits.max_clock_offset_s.",
    ["client_id"],
)
FANOUT_REFUSED = Gauge(
    "sentri_ingest_fanout_refused",
    "Fan-out subscribers refused at the CURVE handshake, by reason (unknown: key not "
    "registered; unavailable: Redis failing; rate: lookups over their limit), since start.",
    ["reason"],
)
PENDING_KEYS_REFUSED = Gauge(
    "sentri_ingest_pending_keys_refused",
    "Unknown agent keys not recorded as pending (caps reached), by cap, since start.",
    ["cap"],
)
