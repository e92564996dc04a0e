"""The ``edge`` config section (YAML ``edge:``, env ``SENTRI_EDGE__<FIELD>``, CLI flags)."""

from __future__ import annotations

import re
import socket
from pathlib import Path

from pydantic import Field, field_validator, model_validator

from edge_agent.target import ServerTarget, parse_server
from shared.config import GeneralConfig, Section
from shared.protocol import valid_name

_ENDPOINT = re.compile(r"^tcp://(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):(\d{1,5})$")


def default_client_id() -> str:
    name = socket.gethostname().split(".")[0] or "edge"
    return name if valid_name(name) else "edge"


class EdgeConfig(Section):
    server: str = Field(
        "127.0.0.1",
        min_length=1,
        max_length=2048,
        description="Where to connect: ingest as HOST (frames on frame_port, control on "
        "control_port), HOST:PORT or tcp://HOST[:PORT] (frames on PORT, control on PORT+1); or "
        "the gateway as http(s)://HOST[:PORT], which tells the agent ingest's endpoints and "
        "public key (pinned on first use in key_dir).",
    )
    frame_port: int = Field(5555, ge=1, le=65535, description="Ingest's frame (PULL) port.")
    control_port: int = Field(5556, ge=1, le=65535, description="Ingest's control (ROUTER) port.")
    frame_endpoint: str | None = Field(
        None, description="Explicit frame endpoint tcp://host:port (overrides server/frame_port)."
    )
    control_endpoint: str | None = Field(
        None,
        description="Explicit control endpoint tcp://host:port (overrides server/control_port).",
    )
    client_id: str = Field(
        default_factory=default_client_id,
        description="This agent's id (default: the short hostname); camera ids are CLIENT/NAME.",
    )
    sources: list[str] = Field(
        default_factory=list,
        max_length=64,
        description="Sources: device index, /dev/videoN, rtsp:// or http(s):// URL, video file, demo:SCENE. Empty: discover V4L2 devices.",
    )
    max_cameras: int = Field(5, ge=1, le=64, description="Most cameras streamed at once.")
    quality: int = Field(80, ge=1, le=100, description="JPEG quality.")
    fps: float = Field(15.0, ge=0.1, le=120, description="Target frames per second per camera.")
    width: int = Field(640, ge=16, le=7680, description="Demo frame width / size asked of devices.")
    height: int = Field(
        480, ge=16, le=4320, description="Demo frame height / size asked of devices."
    )
    motion_gate: bool = Field(
        False, description="Send full rate only while something moves, a keyframe otherwise."
    )
    motion_threshold: float = Field(
        0.005, ge=0, le=1, description="Fraction of changed pixels that counts as motion."
    )
    motion_pixel_delta: int = Field(
        12, ge=1, le=255, description="Grey-level change for a pixel to count as changed."
    )
    keyframe_interval_s: float = Field(
        1.0, gt=0, le=3600, description="With the motion gate, a frame at least this often."
    )
    motion_hold_s: float = Field(
        1.0, ge=0, le=60, description="Full rate continues this long after the last motion."
    )
    start_paused: bool = Field(
        False, description="Register the cameras but stream only after start_streaming."
    )
    heartbeat_interval_s: float = Field(
        2.0, ge=0.05, le=60, description="Heartbeat (with per-camera stats) interval."
    )
    reply_timeout_s: float = Field(
        6.0,
        ge=0.2,
        le=600,
        description="No message from ingest this long: recreate the control socket and re-register.",
    )
    max_backoff_s: float = Field(
        30.0,
        ge=0.2,
        le=3600,
        description="Longest extra wait between re-register attempts while ingest is unreachable.",
    )
    refused_retry_s: float = Field(
        3.0,
        ge=0.2,
        le=60,
        description="Retry interval while ingest refuses the CURVE handshake (key pending "
        "approval) or has never answered: a newly approved agent gets in within about this long.",
    )
    send_hwm: int = Field(
        2, ge=1, le=100, description="Frames ZeroMQ may buffer for ingest before dropping."
    )
    probe_timeout_s: float = Field(
        5.0, gt=0, le=120, description="Time allowed to open a source and read its first frame."
    )
    metrics_port: int = Field(0, ge=0, le=65535, description="Prometheus /metrics port (0 = off).")
    server_key: str | None = Field(
        None,
        max_length=4096,
        description="Ingest's CURVE public key (40 z85 characters or a .public file). Set: both "
        "sockets are encrypted and the agent authenticates with its own key pair; unset: plaintext.",
    )
    key_dir: str | None = Field(
        None,
        max_length=4096,
        description="Directory of the agent's CURVE key pair edge.public/edge.secret, created on "
        "first use (default: <general.state_dir>/keys).",
    )

    bootstrap_timeout_s: float = Field(
        5.0, gt=0, le=120, description="HTTP timeout of one enrolment request to the gateway."
    )
    key_recheck_s: float = Field(
        10.0,
        ge=1,
        le=3600,
        description="Enrolled through the gateway: while ingest stays silent, ask the gateway "
        "this often whether ingest's key changed (a changed key stops the agent).",
    )

    @field_validator("client_id")
    @classmethod
    def _client_id(cls, v: str) -> str:
        if not valid_name(v):
            raise ValueError("must be 1-128 printable characters without spaces or '/'")
        return v

    @field_validator("server")
    @classmethod
    def _server(cls, v: str) -> str:
        parse_server(v)  # ServerError names the accepted forms
        return v.strip()

    @field_validator("frame_endpoint", "control_endpoint")
    @classmethod
    def _endpoint(cls, v: str | None) -> str | None:
        if v is None:
            return v
        m = _ENDPOINT.match(v)
        if not m or not 1 <= int(m.group(2)) <= 65535:
            raise ValueError("must look like tcp://host:port")
        return v

    @model_validator(mode="after")
    def _ports_differ(self) -> EdgeConfig:
        if self.frames_url == self.control_url:
            raise ValueError("frame and control endpoints must differ")
        return self

    @property
    def target(self) -> ServerTarget:
        return parse_server(self.server)

    @property
    def gateway_url(self) -> str | None:
        """The gateway to enrol through (``server`` is an http(s) URL), else None."""
        return self.target.gateway_url

    @property
    def frames_url(self) -> str:
        """Ingest's frame endpoint (with a gateway ``server``: until enrolment tells)."""
        return self.frame_endpoint or self.target.endpoints(self.frame_port, self.control_port)[0]

    @property
    def control_url(self) -> str:
        return self.control_endpoint or self.target.endpoints(self.frame_port, self.control_port)[1]


def resolve_key_dir(edge: EdgeConfig, general: GeneralConfig) -> str:
    """The agent's CURVE key directory: ``edge.key_dir`` or ``<general.state_dir>/keys``.

    The one rule for both the running agent and ``sentri-edge --show-key``, so the
    fingerprint shown is the one the agent presents.
    """
    return edge.key_dir or str(Path(general.state_dir) / "keys")
