"""Prometheus metrics of the notifier."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

EVENTS = Counter("sentri_notifier_events_total", "Events read, by outcome.", ["outcome"])
MQTT_MESSAGES = Counter(
    "sentri_notifier_mqtt_messages_total", "MQTT publishes, by kind and outcome.",
    ["kind", "outcome"],
)  # fmt: skip
MQTT_CONNECTED = Gauge("sentri_notifier_mqtt_connected", "1 while connected to the broker.")
MQTT_CONNECT_FAILURES = Counter(
    "sentri_notifier_mqtt_connect_failures_total", "Failed broker connections or logins."
)
WEBHOOK_ATTEMPTS = Counter(
    "sentri_notifier_webhook_attempts_total", "Webhook POSTs, by target and result.",
    ["webhook", "result"],
)  # fmt: skip
WEBHOOK_SECONDS = Histogram(
    "sentri_notifier_webhook_seconds", "Webhook request time.", ["webhook"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)  # fmt: skip
WEBHOOK_DEAD = Counter(
    "sentri_notifier_webhook_dead_letters_total", "Deliveries given up on.", ["webhook"]
)
WEBHOOK_PENDING = Gauge(
    "sentri_notifier_webhook_pending", "Deliveries waiting, per target.", ["webhook"]
)
