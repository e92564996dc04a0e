"""Request and response models: the OpenAPI schema is the gateway's contract."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Service = Literal["detector", "faces", "analyst"]
Health = Literal["online", "stale", "offline"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Open(BaseModel):
    """Registry/records carry extra fields written by other services: keep them."""

    model_config = ConfigDict(extra="allow")


# ------------------------------------------------------------------ registry
class Camera(Open):
    camera_id: str
    client_id: str
    name: str
    streaming: bool | None = None
    processing: dict[str, bool] = Field(default_factory=dict, description="Per service switch.")
    worker_stats: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="Per service: fps, received, processed, skipped, latency_ms.",
    )
    client_status: Health | None = None


class Client(Open):
    client_id: str
    status: Health
    last_seen: float | None = None
    cameras: list[Camera] = Field(default_factory=list)


class ClientList(Strict):
    clients: list[Client]
    count: int


class ServiceStats(Strict):
    replicas: int = Field(description="Live replicas (heartbeat within member_ttl).")
    cameras: int = Field(description="Cameras with stats from a replica.")
    fps: float = Field(description="Processed frames per second, all cameras.")
    skipped: int
    processed: int
    latency_ms: float | None = Field(None, description="Mean of per-camera latency EWMAs.")


class Stats(Strict):
    clients: dict[str, int] = Field(description="Count per health status.")
    clients_total: int
    cameras: int
    streaming: int
    live_viewed: int = Field(description="Cameras the gateway currently relays live.")
    services: dict[str, ServiceStats]
    detections_per_min: int = Field(description="Detection records in the last minute.")
    objects_per_min: int = Field(description="Detected objects in the last minute.")
    events_per_min: int


class ProcessingRequest(Strict):
    camera_id: str = Field(min_length=1, max_length=300)
    service: Service = "detector"


class ProcessingState(Strict):
    camera_id: str
    service: Service
    enabled: bool


class CleanupResult(Strict):
    removed: list[str]


class CommandAccepted(Strict):
    command_id: str = Field(description="Id of the entry in the commands stream.")
    camera_id: str
    command: str


class StreamSettings(Strict):
    quality: int | None = Field(None, ge=1, le=100, description="JPEG quality 1..100.")
    fps: float | None = Field(None, ge=0.1, le=60, description="Target frame rate 0.1..60.")

    @model_validator(mode="after")
    def _one(self) -> StreamSettings:
        if self.quality is None and self.fps is None:
            raise ValueError("give quality and/or fps")
        return self


# ------------------------------------------------------------------- results
class Record(Open):
    id: str | None = Field(None, description="Stream entry id (also the pagination cursor).")
    type: str | None = None
    camera_id: str | None = None
    ts: int | float | None = None


class EventRecord(Record):
    snapshot_url: str | None = None


class EventPage(Strict):
    events: list[EventRecord]
    next_cursor: str | None = Field(
        None, description="Pass as `cursor` for the next (older) page; null at the end."
    )


class ResultsView(Strict):
    latest: dict[str, dict[str, Any]] = Field(description="Latest record per camera.")
    recent: list[Record] = Field(description="Most recent records, newest first.")


# ---------------------------------------------------------------------- auth
class LoginRequest(Strict):
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=1024)


class Me(Strict):
    user: str
    via: Literal["session", "token"]


class TokenCreate(Strict):
    name: str = Field(min_length=1, max_length=64, description="What the token is for.")


class TokenInfo(Strict):
    id: str
    name: str
    user: str
    created: float
    last_used: float | None = None


class TokenCreated(TokenInfo):
    token: str = Field(description="Shown only once; send as `Authorization: Bearer <token>`.")


class PasswordChange(Strict):
    current_password: str = Field(min_length=1, max_length=1024)
    new_password: str = Field(min_length=8, max_length=1024)


# --------------------------------------------------------------------- faces
class Person(Open):
    name: str


class RenameRequest(Strict):
    new_name: str = Field(min_length=1, max_length=64)


class Ok(Strict):
    ok: bool = True


class HealthReport(Strict):
    status: Literal["ok", "degraded"]
    redis: bool
