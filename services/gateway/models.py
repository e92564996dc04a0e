"""Request and response models: the OpenAPI schema is the gateway's contract."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from services.gateway.roles import validate_patterns

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


Role = Literal["admin", "operator", "viewer"]
USERNAME_PATTERN = r"^[A-Za-z0-9_.@-]+$"
MIN_PASSWORD_CHARS = 12
CAMERAS_DESCRIPTION = (
    "Camera scope: `*` (every camera), camera ids (`shop/door`) and client ids (`shop`: "
    "all its cameras); `*` inside a pattern matches any characters (`shop-*`, `lab/cam*`). "
    "Ignored for admins, who always see every camera."
)


def _check_cameras(value: list[str] | None) -> list[str] | None:
    return None if value is None else validate_patterns(value)


class Me(Strict):
    user: str
    via: Literal["session", "token"]
    role: Role = "admin"
    cameras: list[str] = Field(default_factory=lambda: ["*"], description=CAMERAS_DESCRIPTION)


class TokenCreate(Strict):
    name: str = Field(min_length=1, max_length=64, description="What the token is for.")
    role: Role | None = Field(
        None, description="Narrower role than the owner's (default: the owner's role)."
    )
    cameras: list[str] | None = Field(
        None,
        max_length=64,
        description="Narrower camera scope, inside the owner's (default: the owner's scope). "
        + CAMERAS_DESCRIPTION,
    )

    _cameras = field_validator("cameras")(_check_cameras)


class TokenInfo(Strict):
    id: str
    name: str
    user: str
    created: float
    last_used: float | None = None
    role: Role | None = Field(None, description="Role cap of this token (None: the owner's).")
    cameras: list[str] | None = Field(None, description="Scope of this token (None: the owner's).")


class TokenCreated(TokenInfo):
    token: str = Field(description="Shown only once; send as `Authorization: Bearer <token>`.")


class PasswordChange(Strict):
    current_password: str = Field(min_length=1, max_length=1024)
    new_password: str = Field(min_length=MIN_PASSWORD_CHARS, max_length=1024)


# --------------------------------------------------------------------- users
class UserCreate(Strict):
    username: str = Field(min_length=1, max_length=64, pattern=USERNAME_PATTERN)
    password: str = Field(
        min_length=MIN_PASSWORD_CHARS, max_length=1024, description="At least 12 characters."
    )
    role: Role = Field(description="admin, operator or viewer.")
    cameras: list[str] = Field(
        default_factory=lambda: ["*"], max_length=64, description=CAMERAS_DESCRIPTION
    )

    _cameras = field_validator("cameras")(_check_cameras)


class UserUpdate(Strict):
    password: str | None = Field(
        None,
        min_length=MIN_PASSWORD_CHARS,
        max_length=1024,
        description="New password; ends every session of the user.",
    )
    role: Role | None = None
    cameras: list[str] | None = Field(None, max_length=64, description=CAMERAS_DESCRIPTION)
    disabled: bool | None = Field(
        None, description="A disabled user cannot log in; its sessions and tokens stop at once."
    )

    _cameras = field_validator("cameras")(_check_cameras)


class UserInfo(Strict):
    username: str
    role: Role
    cameras: list[str]
    disabled: bool = False
    created: float | None = None
    updated: float | None = None


# --------------------------------------------------------------------- audit
class AuditRecord(Strict):
    id: str = Field(description="Stream entry id (also the pagination cursor).")
    ts: int = Field(description="Unix time in ms.")
    action: str
    user: str = Field(description="Who acted (for a failed login: the name tried).")
    via: str = Field(description="session, token or - (not authenticated).")
    ip: str = Field(description="Source address of the request.")
    target: str = Field(description="What was acted on (user, token id, key, camera, person).")
    token_id: str | None = None
    detail: dict[str, Any] = Field(default_factory=dict)


class AuditPage(Strict):
    records: list[AuditRecord]
    next_cursor: str | None = None


# --------------------------------------------------------------------- faces
class Person(Open):
    name: str


#: Same rule as services.faces.gallery.NAME_PATTERN (kept here so the schema shows it
#: without importing the faces service, which pulls in dlib).
FACE_NAME_PATTERN = r"^\s*\w[\w .,'-]*\s*$"
FACE_NAME_DESCRIPTION = (
    "1-64 letters, digits and '_', then also spaces and . , ' - (no '/'); "
    "surrounding spaces are trimmed."
)


class RenameRequest(Strict):
    new_name: str = Field(
        min_length=1, max_length=64, pattern=FACE_NAME_PATTERN, description=FACE_NAME_DESCRIPTION
    )


class Ok(Strict):
    ok: bool = True


class HealthReport(Strict):
    status: Literal["ok", "degraded"]
    redis: bool


# -------------------------------------------------------------- agent keys
KeyStatus = Literal["pending", "approved", "rejected"]
FINGERPRINT_PATTERN = r"^[0-9a-f]{4}(:[0-9a-f]{4}){7}$"
# Z85 alphabet (ZeroMQ RFC 32): a CURVE public key is 40 of these characters.
Z85_KEY_PATTERN = r"^[0-9a-zA-Z.\-:+=^!/*?&<>()\[\]{}@%$#]{40}$"


class AgentKey(Strict):
    fingerprint: str = Field(
        description="SHA-256 of the public key, 8 groups of 4 hex digits; compare it with "
        "the one the agent prints (`sentri-edge` logs it at start)."
    )
    key: str = Field(description="The agent's CURVE public key (Z85, 40 characters).")
    status: KeyStatus = Field(
        description="pending (seen, refused until decided), approved (may connect), rejected."
    )
    first_seen: float | None = Field(None, description="Unix time ingest first saw the key.")
    last_seen: float | None = Field(None, description="Unix time of its latest attempt.")
    decided_at: float | None = Field(None, description="Unix time of the latest approve/reject.")
    decided_by: str | None = Field(None, description="User who made that decision.")
    client_ids: list[str] = Field(
        default_factory=list, description="Client ids bound to this key (first register wins)."
    )


class AgentKeyCreate(Strict):
    key: str = Field(
        pattern=Z85_KEY_PATTERN,
        description="An agent's CURVE public key (Z85, 40 characters, e.g. the content of the "
        "agent's `.public` key file) to approve before the agent first connects.",
    )


# ------------------------------------------------------------------ errors
class ErrorDetail(BaseModel):
    detail: str = Field(description="What went wrong, for people.")


def error_response(description: str) -> dict[str, Any]:
    return {"model": ErrorDetail, "description": description}


# Answers any API route may give (documented once, on every route of the API routers).
COMMON_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: error_response("Malformed request (e.g. a body that is not valid JSON)."),
    401: error_response("Missing, expired or invalid session or API token."),
    403: error_response(
        "Refused: a cookie-authenticated request from another origin or through a host name "
        "not in gateway.allowed_hosts, an API token where a login is required, or an account "
        "(or token) without the needed role."
    ),
    413: error_response("Request body larger than gateway.max_body_bytes."),
    503: error_response("Storage (Redis) or a needed component is unavailable."),
}
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: error_response("No such item.")}
