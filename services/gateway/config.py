"""Gateway configuration (section ``gateway``) and the bundle the app factory takes."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from pydantic import Field, SecretStr, field_validator

from shared.config import (
    GeneralConfig,
    IngestConfig,
    RedisConfig,
    Section,
    WorkerConfig,
    load_section,
)


class GatewayConfig(Section):
    """REST/websocket/dashboard server.  Env: ``SENTRI_GATEWAY__<FIELD>``."""

    host: str = Field(
        "127.0.0.1",
        description="Address to bind. Loopback by default; use 0.0.0.0 to serve the LAN "
        "(then also set secure_cookies behind an HTTPS proxy).",
    )
    port: int = Field(5002, ge=1, le=65535, description="HTTP port.")
    ingest_pub: str = Field(
        "tcp://127.0.0.1:5557",
        description="Ingest fan-out endpoint; the gateway subscribes only to watched cameras.",
    )
    admin_user: str = Field(
        "admin", min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.@-]+$",
        description="Name of the administrator account.",
    )  # fmt: skip
    admin_password: SecretStr | None = Field(
        None,
        description="Provision the admin password (min 8 chars). Unset: on first start a strong "
        "password is generated, printed once and written to <state_dir>/admin-password.txt (0600).",
    )
    session_ttl_s: int = Field(
        12 * 3600, ge=60, le=30 * 86400, description="Lifetime of a login session (seconds)."
    )
    password_hash_time_cost: int = Field(
        3, ge=1, le=20, description="argon2id iterations for password hashes."
    )
    password_hash_memory_kib: int = Field(
        64 * 1024, ge=1024, le=4 * 1024 * 1024,
        description="argon2id memory per password hash (KiB). Lower only on very small devices.",
    )  # fmt: skip
    login_max_failures: int = Field(
        5,
        ge=1,
        le=1000,
        description="Failed logins per IP or per user within the window before 429.",
    )
    login_window_s: int = Field(
        60, ge=1, le=86400, description="Window of the login failure counter (seconds)."
    )
    login_check_workers: int = Field(
        2, ge=1, le=64,
        description="Password checks (argon2) running at once, on their own threads; each "
        "uses password_hash_memory_kib of memory.",
    )  # fmt: skip
    login_max_pending_checks: int = Field(
        32, ge=1, le=10_000,
        description="Password checks allowed to wait for a worker; more logins get 503.",
    )  # fmt: skip
    max_body_bytes: int = Field(
        16 * 1024 * 1024, ge=1024, le=512 * 1024 * 1024,
        description="Largest request body; larger requests get 413.",
    )  # fmt: skip
    max_upload_bytes: int = Field(
        8 * 1024 * 1024, ge=1024, le=256 * 1024 * 1024,
        description="Largest single uploaded face image; larger gets 413.",
    )  # fmt: skip
    credential_recheck_s: float = Field(
        2.0, gt=0, le=60,
        description="Long-lived connections (websocket, MJPEG) check their session or token "
        "again this often and close once it was revoked, logged out, its password changed "
        "or its user disabled or deleted.",
    )  # fmt: skip
    audit_max_entries: int = Field(
        100_000, ge=100, le=10_000_000,
        description="Audit records kept in Redis (oldest trimmed first).",
    )  # fmt: skip
    audit_retention_days: float = Field(
        90, gt=0, le=3650, description="Audit records older than this are trimmed."
    )
    allowed_hosts: list[str] = Field(
        default_factory=list,
        max_length=64,
        description="Host names browsers may use to reach the dashboard (the Host header of "
        "cookie-authenticated requests; others get 403, against DNS rebinding). Empty = the "
        "bind address (host), localhost and 127.0.0.1 (bound to 0.0.0.0/::, also this "
        "machine's host name and its addresses). List the names/IPs you browse to.",
    )
    cors_origins: list[str] = Field(
        default_factory=list,
        description="Origins allowed by CORS (empty = no cross-origin access, the default).",
    )
    secure_cookies: bool = Field(
        False, description="Mark the session cookie Secure (required when served over HTTPS)."
    )
    ws_queue_messages: int = Field(
        64, ge=4, le=10_000,
        description="Per-websocket queue of event messages; the oldest is dropped (and counted) "
        "when a slow browser falls behind. Frames and detections keep only the latest per camera.",
    )  # fmt: skip
    ws_send_timeout_s: float = Field(
        30.0, gt=0, le=3600,
        description="A websocket whose single send blocks this long is closed.",
    )  # fmt: skip
    ws_max_message_bytes: int = Field(
        64 * 1024, ge=1024, le=16 * 1024 * 1024,
        description="Largest message accepted from a browser over the websocket.",
    )  # fmt: skip
    mjpeg_max_fps: float = Field(
        10.0, gt=0, le=60, description="Frame rate cap of /api/cameras/{id}/mjpeg streams."
    )
    snapshot_wait_s: float = Field(
        3.0, gt=0, le=60, description="How long snapshot.jpg waits for a first live frame."
    )
    live_linger_s: float = Field(
        10.0, ge=0, le=3600,
        description="Keep a camera subscribed this long after its last viewer left.",
    )  # fmt: skip
    live_max_frame_bytes: int = Field(
        8 * 1024 * 1024, ge=64 * 1024, le=64 * 1024 * 1024,
        description="Largest live JPEG accepted from ingest.",
    )  # fmt: skip
    metrics_allow_loopback: bool = Field(
        True,
        description="/metrics answers loopback clients without credentials; others need a "
        "session or API token.",
    )

    metrics_host: str | None = Field(
        None,
        description="Address of the credential-free Prometheus listener that "
        "general.metrics_port (non-zero) enables; unset = the same as host. Expose it only on "
        "the internal network (compose/k8s scrape it there).",
    )

    @field_validator("admin_password")
    @classmethod
    def _strong_enough(cls, v: SecretStr | None) -> SecretStr | None:
        if v is not None and len(v.get_secret_value()) < 8:
            raise ValueError("admin_password must have at least 8 characters")
        return v


@dataclass(frozen=True)
class GatewaySettings:
    """Everything :func:`services.gateway.app.create_app` needs."""

    gateway: GatewayConfig
    redis: RedisConfig
    general: GeneralConfig
    ingest: IngestConfig
    #: Workers' membership TTL: the one rule for "a replica is live" (shared.worker.live_members).
    worker: WorkerConfig = field(default_factory=WorkerConfig)


def load_settings(
    config_file: str | os.PathLike[str] | None = None,
    *,
    redis_url: str | None = None,
    overrides: dict | None = None,
    env: dict[str, str] | None = None,
) -> GatewaySettings:
    """Read the sections the gateway uses (YAML file + env + CLI overrides)."""
    return GatewaySettings(
        gateway=load_section(
            GatewayConfig, "gateway", config_file=config_file, env=env, overrides=overrides
        ),
        redis=load_section(
            RedisConfig,
            "redis",
            config_file=config_file,
            env=env,
            overrides={"url": redis_url} if redis_url else None,
        ),
        general=load_section(GeneralConfig, "general", config_file=config_file, env=env),
        ingest=load_section(IngestConfig, "ingest", config_file=config_file, env=env),
        worker=load_section(WorkerConfig, "worker", config_file=config_file, env=env),
    )
