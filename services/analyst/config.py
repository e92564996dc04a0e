"""Configuration of the analyst service (section ``analyst``).

The provider is chosen by ``analyst.provider.type`` through a pydantic discriminated
union; each provider type has its own model.  Example YAML::

    analyst:
      provider:
        type: gemini
        model: gemini-2.5-flash
        api_key_file: /run/secrets/gemini_api_key
      min_interval_s: 30
      daily_budget: 1000

Env: ``SENTRI_ANALYST__PROVIDER__TYPE=offline``, ``SENTRI_ANALYST__MIN_INTERVAL_S=10``.
"""

from __future__ import annotations

from pydantic import Field, model_validator

from services.analyst.providers import provider_config_union
from services.analyst.providers.gemini import GeminiProviderConfig
from services.analyst.providers.offline import OfflineProviderConfig
from shared.config import Section

__all__ = ["AnalystConfig", "GeminiProviderConfig", "OfflineProviderConfig", "ProviderConfig"]

DEFAULT_TRIGGER_CLASSES = ["person", "car", "truck", "bus", "motorcycle", "bicycle"]
DEFAULT_EVENT_TYPES = ["object_entered", "face_recognized"]
DEFAULT_PROVIDER = "gemini"


# Each provider's config class lives next to the provider (``providers/<name>.py``)
# and is registered with it; the union below is built from that registry.
ProviderConfig = provider_config_union()


class AnalystConfig(Section):
    """When and how scenes are analysed, and the limits protecting the API."""

    provider: ProviderConfig = Field(
        default_factory=GeminiProviderConfig,
        description="Scene analysis provider (type: gemini | offline). Gemini without an "
        "API key falls back to offline.",
    )
    process_by_default: bool = Field(
        True, description="Analyse cameras whose processing switch was never set."
    )
    event_types: list[str] = Field(
        default_factory=lambda: list(DEFAULT_EVENT_TYPES),
        max_length=32,
        description="Event types (on the events stream) that trigger an analysis.",
    )
    trigger_classes: list[str] = Field(
        default_factory=lambda: list(DEFAULT_TRIGGER_CLASSES),
        max_length=256,
        description="Object classes whose object_entered events trigger an analysis.",
    )
    min_interval_s: float = Field(
        30.0,
        ge=0.1,
        le=86400,
        description="Periodic analysis of a camera at most this often while it has activity.",
    )
    event_cooldown_s: float = Field(
        5.0,
        ge=0.0,
        le=3600,
        description="Events for a camera analysed less than this long ago are coalesced.",
    )
    activity_max_age_s: float = Field(
        5.0,
        gt=0,
        le=600,
        description="A camera's latest detections count as activity only if this recent.",
    )
    event_frame_max_age_s: float = Field(
        2.0,
        gt=0,
        le=60,
        description="An event is analysed with the held frame if younger than this, "
        "else with the next frame.",
    )
    max_image_side: int = Field(
        640, ge=64, le=4096, description="Frames are downscaled to this longest side."
    )
    jpeg_quality: int = Field(85, ge=30, le=100, description="JPEG quality of the sent image.")
    timeout_s: float = Field(20.0, gt=0, le=300, description="Timeout of one API request.")
    max_retries: int = Field(
        2, ge=0, le=10, description="Retries on 429, 5xx, timeouts and connection errors."
    )
    backoff_base_s: float = Field(
        1.0, gt=0, le=60, description="First retry delay; doubles per retry (with jitter)."
    )
    backoff_max_s: float = Field(30.0, gt=0, le=600, description="Largest backoff delay.")
    retry_after_max_s: float = Field(
        60.0,
        ge=0,
        le=3600,
        description="A server's Retry-After longer than this is not waited for (request fails).",
    )
    global_rate_per_min: float = Field(
        10.0, gt=0, le=10_000, description="Requests per minute across all cameras."
    )
    global_burst: int = Field(5, ge=1, le=1000, description="Global token bucket size.")
    camera_rate_per_min: float = Field(
        4.0, gt=0, le=10_000, description="Requests per minute per camera."
    )
    camera_burst: int = Field(2, ge=1, le=1000, description="Per-camera token bucket size.")
    breaker_failures: int = Field(
        5, ge=1, le=1000, description="Consecutive failed requests that open the circuit."
    )
    breaker_cooldown_s: float = Field(
        60.0, gt=0, le=86400, description="Open circuit waits this long before one trial."
    )
    daily_budget: int = Field(
        1000,
        ge=0,
        le=10_000_000,
        description="API requests per UTC day across all replicas (0 = unlimited).",
    )
    concurrency: int = Field(
        2, ge=1, le=32, description="Analyses running at once (API calls are off the frame path)."
    )

    @model_validator(mode="before")
    @classmethod
    def _default_provider_type(cls, data: object) -> object:
        """``SENTRI_ANALYST__PROVIDER__BASE_URL=...`` alone (or a ``provider:`` block
        without ``type``) sets fields of the default provider, merged with its defaults."""
        provider = data.get("provider") if isinstance(data, dict) else None
        if isinstance(data, dict) and isinstance(provider, dict) and "type" not in provider:
            data = {**data, "provider": {"type": DEFAULT_PROVIDER, **provider}}
        return data

    @model_validator(mode="after")
    def _check(self) -> AnalystConfig:
        if self.backoff_max_s < self.backoff_base_s:
            raise ValueError("backoff_max_s must be >= backoff_base_s")
        return self
