"""Notifier configuration (section ``notifier``).  Env: ``SENTRI_NOTIFIER__<FIELD>``,
nested with ``__`` (``SENTRI_NOTIFIER__MQTT__URL=mqtt://user:pass@host:1883``)."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationInfo, field_validator, model_validator

from shared.config import Section
from shared.rules import RULE_EVENT_TYPES

SECTION = "notifier"
MIN_SECRET = 16  # characters of a webhook signing secret

EVENT_TYPES = ("object_entered", "object_left", "analysis", *RULE_EVENT_TYPES)
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_HHMM = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")


class MqttConfig(Section):
    url: str | None = Field(
        None,
        description="Broker URL: mqtt://[user:pass@]host[:1883] or mqtts://host[:8883] (TLS). "
        "Unset: no MQTT.",
        max_length=2048,
    )
    topic_prefix: str = Field(
        "sentri", min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_./-]+$",
        description="Topics are <prefix>/<camera_id>/...",
    )  # fmt: skip
    discovery: bool = Field(True, description="Publish Home Assistant MQTT discovery configs.")
    discovery_prefix: str = Field(
        "homeassistant", min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_./-]+$",
        description="Home Assistant's discovery prefix.",
    )  # fmt: skip
    client_id: str = Field(
        "sentri-notifier", min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$",
        description="MQTT client id (also names the availability topic).",
    )  # fmt: skip
    occupancy_classes: list[str] = Field(
        default_factory=lambda: ["person"], max_length=64,
        description="Classes that get an occupancy binary_sensor per camera from the start "
        "(others are added when first seen).",
    )  # fmt: skip
    keepalive_s: int = Field(30, ge=5, le=3600, description="MQTT keepalive (seconds).")
    qos: int = Field(1, ge=0, le=1, description="QoS of event messages.")
    reconnect_min_s: float = Field(1.0, ge=0.1, le=60, description="First reconnect delay.")
    reconnect_max_s: float = Field(60.0, ge=1, le=3600, description="Longest reconnect delay.")
    max_queued: int = Field(
        10_000, ge=10, le=1_000_000,
        description="Messages kept while the broker is unreachable (then dropped, counted).",
    )  # fmt: skip
    discovery_refresh_s: float = Field(
        10.0, ge=0.5, le=3600,
        description="How often new cameras and lines are looked for (discovery).",
    )  # fmt: skip
    ca_file: str | None = Field(None, description="CA bundle for mqtts:// (default: system).")

    @field_validator("url")
    @classmethod
    def _scheme(cls, v: str | None) -> str | None:
        if v is None or v == "":
            return None
        parts = urlsplit(v)
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
            raise ValueError("must be mqtt://[user:pass@]host[:port] or mqtts://...")
        return v


class Schedule(Section):
    """Active days and a time-of-day window (local time of the notifier)."""

    days: list[str] = Field(
        default_factory=lambda: list(DAYS), max_length=7, description="mon..sun."
    )
    start: str = Field("00:00", description="HH:MM (inclusive).")
    end: str = Field("24:00", description="HH:MM (exclusive); before start = over midnight.")

    @field_validator("days")
    @classmethod
    def _days(cls, v: list[str]) -> list[str]:
        bad = [d for d in v if d not in DAYS]
        if bad:
            raise ValueError(f"unknown day {bad[0]!r}: use {', '.join(DAYS)}")
        return v

    @field_validator("start", "end")
    @classmethod
    def _hhmm(cls, v: str) -> str:
        if v != "24:00" and not _HHMM.match(v):
            raise ValueError("must be HH:MM")
        return v

    def active(self, when: datetime) -> bool:
        minute = when.hour * 60 + when.minute
        start = int(self.start[:2]) * 60 + int(self.start[3:])
        end = int(self.end[:2]) * 60 + int(self.end[3:])
        day = DAYS[when.weekday()]
        if start <= end:
            return day in self.days and start <= minute < end
        # Over midnight: the part after midnight belongs to the previous day's window.
        if minute >= start:
            return day in self.days
        prev = DAYS[(when.weekday() - 1) % 7]
        return minute < end and prev in self.days


class EventFilter(Section):
    """Which events a webhook receives; every list empty = everything."""

    cameras: list[str] = Field(default_factory=list, max_length=1000, description="Camera ids.")
    zones: list[str] = Field(default_factory=list, max_length=100, description="Zone ids.")
    lines: list[str] = Field(default_factory=list, max_length=100, description="Line ids.")
    classes: list[str] = Field(default_factory=list, max_length=100, description="Classes.")
    types: list[str] = Field(default_factory=list, max_length=20, description="Event types.")
    schedule: list[Schedule] = Field(
        default_factory=list, max_length=20, description="Windows when events are sent (any)."
    )

    @field_validator("types")
    @classmethod
    def _types(cls, v: list[str]) -> list[str]:
        bad = [t for t in v if t not in EVENT_TYPES]
        if bad:
            raise ValueError(f"unknown event type {bad[0]!r}: use {', '.join(EVENT_TYPES)}")
        return v

    def matches(self, event: dict[str, Any], when: datetime) -> bool:
        if self.cameras and event.get("camera_id") not in self.cameras:
            return False
        if self.types and event.get("type") not in self.types:
            return False
        if self.classes and event.get("class") not in self.classes:
            return False
        if self.zones and event.get("zone") not in self.zones:
            return False
        if self.lines and event.get("line") not in self.lines:
            return False
        return not self.schedule or any(s.active(when) for s in self.schedule)


class WebhookConfig(Section):
    name: str = Field(
        "webhook", pattern=r"^[A-Za-z0-9_-]{1,40}$", description="Name (dead letters, metrics)."
    )
    allow_internal: bool = Field(
        False, description="Allow link-local and cloud metadata addresses (refused by default)."
    )
    url: str = Field(description="http:// or https:// endpoint receiving JSON POSTs.")
    secret: SecretStr = Field(
        SecretStr(""), description="HMAC-SHA256 key; signature header X-Sentri-Signature."
    )
    filter: EventFilter = Field(default_factory=EventFilter, description="Which events to send.")
    timeout_s: float = Field(5.0, gt=0, le=120, description="Per-request timeout.")
    max_attempts: int = Field(8, ge=1, le=100, description="Attempts before the dead-letter list.")
    backoff_initial_s: float = Field(1.0, gt=0, le=3600, description="First retry delay.")
    backoff_max_s: float = Field(300.0, gt=0, le=86400, description="Longest retry delay.")

    @field_validator("url")
    @classmethod
    def _url(cls, v: str, info: ValidationInfo) -> str:
        from services.notifier.webhooks import literal_address_refused

        try:
            parts = urlsplit(v)
            ok = parts.scheme in ("http", "https") and bool(parts.hostname)
        except ValueError:  # e.g. a bad IPv6 literal or port
            ok = False
        if not ok:
            raise ValueError("must be an http:// or https:// URL with a host")
        why = literal_address_refused(v, bool(info.data.get("allow_internal")))
        if why:
            raise ValueError(f"refused: {why} (set allow_internal to allow it)")
        return v


class NotifierConfig(Section):
    """Section ``notifier``: MQTT (Home Assistant) and signed webhooks from ``events``."""

    mqtt: MqttConfig = Field(default_factory=MqttConfig, description="MQTT output.")
    webhooks: list[WebhookConfig] = Field(
        default_factory=list, max_length=100, description="Webhook targets."
    )
    group: str = Field(
        "notifier", pattern=r"^[A-Za-z0-9_.-]{1,64}$", description="Consumer group on events."
    )
    consumer: str | None = Field(None, description="Consumer name (default hostname-pid).")
    dedupe_ttl_s: int = Field(
        86400, ge=60, le=30 * 86400, description="How long event ids are remembered."
    )
    claim_idle_s: float = Field(
        30.0, gt=0, le=3600, description="Take over events another notifier left unacked."
    )
    occupancy_stale_s: float = Field(
        30.0, gt=0, le=86400,
        description="MQTT occupancy: a track absent from its camera's latest detections "
        "this long (its object_left never came: replica killed) stops counting.",
    )  # fmt: skip
    dead_letters_max: int = Field(
        1000, ge=10, le=1_000_000, description="Dead letters kept (oldest dropped)."
    )

    @model_validator(mode="after")
    def _unique_names(self) -> NotifierConfig:
        names = [w.name for w in self.webhooks]
        if len(names) != len(set(names)):
            raise ValueError("webhooks: names must be unique")
        for i, w in enumerate(self.webhooks):
            if len(w.secret.get_secret_value()) < MIN_SECRET:
                raise ValueError(f"webhooks.{i}.secret: at least {MIN_SECRET} characters")
        return self
