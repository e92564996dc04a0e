"""Prometheus metrics of the analyst service (frame metrics come from shared.worker)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

REQUEST_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0, 60.0)

REQUESTS = Counter(
    "sentri_analyst_requests_total",
    "Model API requests by outcome (success, malformed, rate_limited, server_error, "
    "client_error, timeout, connection_error, bad_response).",
    ["provider", "outcome"],
)
REQUEST_SECONDS = Histogram(
    "sentri_analyst_request_seconds",
    "Duration of one model API request.",
    ["provider"],
    buckets=REQUEST_BUCKETS,
)
ANALYSIS_SECONDS = Histogram(
    "sentri_analyst_analysis_seconds",
    "Duration of one analysis, retries and backoff included.",
    ["provider"],
    buckets=REQUEST_BUCKETS,
)
ANALYSES = Counter(
    "sentri_analyst_analyses_total",
    "Analyses published, by provider and trigger.",
    ["provider", "trigger"],
)
FALLBACKS = Counter(
    "sentri_analyst_fallbacks_total",
    "Analyses answered by the offline summary instead of the configured model, by reason.",
    ["reason"],
)
RETRIES = Counter("sentri_analyst_retries_total", "Requests retried after a transient failure.")
THROTTLED = Counter(
    "sentri_analyst_throttled_total",
    "Analyses refused a token by a rate-limit bucket (global or camera).",
    ["scope"],
)
BREAKER_STATE = Gauge(
    "sentri_analyst_breaker_state", "Circuit breaker state: 0 closed, 1 open, 2 half-open."
)
BUDGET_REMAINING = Gauge(
    "sentri_analyst_budget_remaining",
    "Model API requests left today (UTC) under the daily budget (-1 = unlimited).",
)
TOKENS = Counter("sentri_analyst_model_tokens_total", "Model tokens reported by the API.", ["kind"])
JOBS_SUPERSEDED = Counter(
    "sentri_analyst_jobs_superseded_total",
    "Pending analyses replaced by a newer one for the same camera before they ran.",
)
EVENTS_SEEN = Counter(
    "sentri_analyst_events_total",
    "Events read from the events stream, by what was done with them.",
    ["action"],
)
QUEUE_DEPTH = Gauge("sentri_analyst_pending_jobs", "Analyses waiting for a worker thread.")
PUBLISH_ERRORS = Counter(
    "sentri_analyst_publish_errors_total", "Analysis records that could not be written to Redis."
)
