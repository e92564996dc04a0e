"""Configuration: pydantic models, one per concern, loaded from YAML and env vars.

Each section is a pydantic model with ``extra="forbid"``, defaults, descriptions and
bounds.  Values come from (lowest to highest priority):

1. the model defaults,
2. an optional YAML file (``--config`` or ``SENTRI_CONFIG``) with one top-level key
   per section (``redis:``, ``ingest:``, ``detector:`` ...),
3. environment variables ``SENTRI_<SECTION>__<FIELD>`` (nested fields with ``__``),
   e.g. ``SENTRI_DETECTOR__CONFIDENCE=0.4``; values are parsed as YAML scalars so
   ``true``, ``15`` and ``[person, car]`` work.  ``REDIS_URL`` is honoured too.
4. explicit overrides passed by the CLI.

Invalid configuration raises :class:`ConfigError` whose message names the field,
e.g. ``detector.confidence: Input should be less than or equal to 1 (got 3)``.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from shared.ingest_limits import IngestLimits

T = TypeVar("T", bound=BaseModel)

ENV_PREFIX = "SENTRI_"


class ConfigError(Exception):
    """Invalid configuration; the message names the offending field(s)."""


#: Every top-level section a config file may hold.  A section not listed here is
#: refused by name (a typo such as ``detecter:`` must not be silently ignored).  A
#: component adding a section adds its name here (one line).
KNOWN_SECTIONS: set[str] = {
    "general", "redis", "ingest", "worker", "detector", "faces", "analyst", "gateway",
    "edge", "storage", "archiver", "recorder", "rules", "notifier",
}  # fmt: skip


class Section(BaseModel):
    """Base of every config section: unknown keys are errors, assignments validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def default_state_dir() -> str:
    return os.environ.get("SENTRI_STATE_DIR") or str(Path.home() / ".local" / "state" / "sentri")


class GeneralConfig(Section):
    state_dir: str = Field(
        default_factory=default_state_dir,
        description="Directory for keys, model caches, snapshots and the embedded Redis.",
    )
    log_level: str = Field(
        "INFO", description="Python log level name.", pattern=r"^(DEBUG|INFO|WARNING|ERROR)$"
    )
    log_format: str = Field(
        "logfmt", description="'logfmt' (key=value) or 'json'.", pattern=r"^(logfmt|json)$"
    )
    metrics_port: int = Field(
        0, ge=0, le=65535, description="Prometheus metrics port for worker services (0 = off)."
    )


class RedisConfig(Section):
    url: str | None = Field(
        None,
        description="Redis URL (redis://[:password@]host:port/db). Unset: `sentri up` starts a private redis-server.",
    )
    prefix: str = Field("sentri:", min_length=1, max_length=64, description="Prefix of every key.")
    stream_maxlen: int = Field(
        10_000, ge=100, le=10_000_000, description="Approximate MAXLEN of result streams."
    )
    events_maxlen: int = Field(
        100_000, ge=100, le=10_000_000, description="Approximate MAXLEN of the events stream."
    )
    maxmemory: str = Field(
        "1gb",
        pattern=r"^[0-9]+(b|kb|mb|gb)?$",
        max_length=16,
        description="maxmemory of the embedded redis-server of `sentri up` (e.g. 512mb, 2gb; "
        "0 = unbounded, not recommended). External Redis: set it on the server.",
    )
    maxmemory_policy: str = Field(
        "noeviction",
        pattern=r"^(noeviction|volatile-(lru|lfu|ttl|random))$",
        description="Eviction policy of the embedded redis-server: noeviction (default: "
        "writes fail loudly when full) or a volatile-* policy; allkeys-* would evict streams.",
    )


def yaml_on_off(v: Any) -> Any:
    """A setting whose values include ``on``/``off``: YAML (the config file and
    ``SENTRI_`` env values) reads a bare ``on``/``off`` as a boolean; read it back as
    the word.  Use as a ``mode="before"`` validator."""
    return {True: "on", False: "off"}.get(v, v) if isinstance(v, bool) else v


def is_loopback_host(host: str) -> bool:
    """True for an address (or ``localhost``) only this machine can reach."""
    h = host.strip().strip("[]")
    if h == "localhost":
        return True
    try:
        return ipaddress.ip_address(h).is_loopback
    except ValueError:
        return False  # a host name: assume it is reachable from the network


class IngestConfig(Section):
    bind_host: str = Field(
        "127.0.0.1", description="Address ingest binds (0.0.0.0 to accept remote agents)."
    )
    frame_port: int = Field(5555, ge=0, le=65535, description="PULL port for agent frames.")
    control_port: int = Field(5556, ge=0, le=65535, description="ROUTER port for agent control.")
    pub_port: int = Field(5557, ge=0, le=65535, description="PUB port for the frame fan-out.")
    max_frame_bytes: int = Field(
        8 * 1024 * 1024, ge=64 * 1024, le=64 * 1024 * 1024, description="Largest JPEG accepted."
    )
    stale_after_s: float = Field(
        10.0, gt=0, le=3600, description="Client is 'stale' after this long without heartbeat."
    )
    offline_after_s: float = Field(
        30.0, gt=0, le=86400, description="Client is 'offline' after this long."
    )
    cleanup_after_s: float = Field(
        24 * 3600.0, gt=0, description="`cleanup` removes clients offline longer than this."
    )
    pub_hwm: int = Field(
        8, ge=1, le=10_000, description="Send high-water mark per subscriber (messages)."
    )
    stats_interval_s: float = Field(
        1.0, gt=0, le=60, description="How often per-camera stats are written to Redis."
    )
    io_threads: int = Field(
        0,
        ge=0,
        le=16,
        description="ZeroMQ I/O threads of ingest (they read sockets and do CURVE encryption; "
        "one agent connection stays on one thread). 0 = auto: half the CPU cores, 1 to 4.",
    )
    insecure: bool = Field(
        False,
        description="Accept plaintext agents (no CURVE encryption or key check). Off by default: "
        "agents must use ingest's public key and an approved key pair of their own.",
    )
    fanout_curve: Annotated[Literal["auto", "on", "off"], BeforeValidator(yaml_on_off)] = Field(
        "auto",
        description="CURVE on the frame fan-out (PUB port): 'on' = subscribers (workers, the "
        "gateway's live view) must use ingest's public key and a key of their own registered "
        "in Redis (they do it themselves at start); 'off' = plaintext; 'auto' = on when "
        "bind_host is not loopback and insecure is false.",
    )
    authorized_keys: list[str] = Field(
        default_factory=list,
        max_length=1000,
        description="Agent public keys approved at start, like SSH authorized_keys: each entry is "
        "a 40-character z85 key, a .public file, or a directory whose *.public files are read. "
        "A key rejected in the dashboard stays rejected. A single string is one entry.",
    )
    authorized_keys_rescan_s: float = Field(
        10.0,
        ge=0,
        le=86400,
        description="Re-read authorized_keys this often, so keys added to a file or directory "
        "are approved without a restart (0 = only at start). Removing a key does not revoke it: "
        "reject it in the dashboard.",
    )

    limits: IngestLimits = Field(
        default_factory=IngestLimits,
        description="Bounds on what agents can make ingest hold (shared/ingest_limits.py).",
    )

    def fanout_curve_on(self) -> bool:
        """Whether the frame fan-out speaks CURVE (``fanout_curve``, ``auto`` resolved)."""
        if self.fanout_curve != "auto":
            return self.fanout_curve == "on"
        return not self.insecure and not is_loopback_host(self.bind_host)

    def zmq_io_threads(self) -> int:
        """``io_threads``, with 0 resolved from this machine's core count."""
        if self.io_threads:
            return self.io_threads
        return max(1, min(4, (os.cpu_count() or 1) // 2))

    @field_validator("authorized_keys", mode="before")
    @classmethod
    def _one_entry_is_a_list(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v

    @field_validator("authorized_keys")
    @classmethod
    def _entries_not_blank(cls, v: list[str]) -> list[str]:
        out = [e.strip() for e in v]
        if any(not e or len(e) > 4096 for e in out):
            raise ValueError("entries must be a key, a file or a directory (1-4096 characters)")
        return out


class WorkerConfig(Section):
    """Shared by every worker type (detector, faces, analyst)."""

    ingest_pub: str = Field(
        "tcp://127.0.0.1:5557", description="Ingest fan-out endpoint to subscribe to."
    )
    replica_id: str | None = Field(None, description="Replica name (default: hostname-pid).")
    heartbeat_s: float = Field(
        0.5,
        gt=0,
        le=60,
        description="Membership heartbeat interval (a dead replica's cameras move within "
        "member_ttl_s + heartbeat_s).",
    )
    member_ttl_s: float = Field(
        4.0, gt=0, le=600, description="A replica missing heartbeats this long is dead."
    )
    max_batch: int = Field(
        4, ge=1, le=64, description="Most cameras' frames processed in one call."
    )
    rcv_hwm: int = Field(16, ge=1, le=10_000, description="Receive high-water mark (messages).")
    max_frame_age_s: float = Field(
        2.0,
        gt=0,
        le=3600,
        description="Frames that waited longer than this since they reached the cluster "
        "(ingest's receive time, else this worker's) are skipped.",
    )
    max_pixels: int = Field(
        7680 * 4320,
        ge=64 * 64,
        le=8192 * 8192,
        description="Largest decoded frame (width x height, read from the JPEG before "
        "decoding); bigger frames are counted invalid (frame_too_large), never decoded.",
    )
    snapshot_ttl_s: int = Field(
        7 * 24 * 3600,
        ge=60,
        le=90 * 24 * 3600,
        description="How long event snapshots are kept (a service's own snapshot_ttl_s wins).",
    )
    max_pending_events: int = Field(
        10_000,
        ge=10,
        le=1_000_000,
        description="Events Redis refused that wait, in order, for a retry; beyond this the "
        "oldest are dropped and counted.",
    )
    max_pending_event_bytes: int = Field(
        64 * 1024 * 1024,
        ge=1024 * 1024,
        le=4 * 1024 * 1024 * 1024,
        description="Bytes (snapshots included) the event retry queue may hold.",
    )

    @model_validator(mode="after")
    def _heartbeat_below_ttl(self) -> WorkerConfig:
        return _check_worker_timing(self)


def _check_worker_timing(cfg: WorkerConfig) -> WorkerConfig:
    if cfg.heartbeat_s >= cfg.member_ttl_s:
        raise ValueError(
            f"heartbeat_s ({cfg.heartbeat_s}) must be below member_ttl_s ({cfg.member_ttl_s}): "
            "a replica would look dead between its own heartbeats"
        )
    return cfg


def _parse_env_value(raw: str) -> Any:
    """YAML scalars and flow collections (``15``, ``true``, ``[a, b]``); anything else,
    e.g. ``sentri:`` or a date-like string, stays the literal string."""
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        return raw
    stripped = raw.strip()
    if isinstance(value, dict) and not stripped.startswith("{"):
        return raw
    if isinstance(value, list) and not stripped.startswith("["):
        return raw
    if value is not None and not isinstance(value, (bool, int, float, str, list, dict)):
        return raw
    return value


def _env_section(section: str, env: dict[str, str]) -> dict[str, Any]:
    prefix = f"{ENV_PREFIX}{section.upper()}__"
    out: dict[str, Any] = {}
    for key, raw in env.items():
        if not key.startswith(prefix):
            continue
        path = key[len(prefix) :].lower().split("__")
        node = out
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = _parse_env_value(raw)
    return out


def _deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = v
    return out


#: (path, mtime_ns, size) -> parsed file: a process reads and checks its file once.
_YAML_CACHE: dict[tuple[str, int, int], dict[str, Any]] = {}
#: The config file this process was started with (the last one loaded explicitly), so
#: a part built later (e.g. the gateway's face gallery reading ``faces:``) can read
#: the same file: ``load_section(M, "x", config_file=process_config_file())``.
_process_config_file: str | None = None


def process_config_file() -> str | None:
    """The config file this process loaded explicitly (``--config``), if any."""
    return _process_config_file


def read_yaml(path: str | os.PathLike[str] | None) -> dict[str, Any]:
    """The parsed config file (cached per process), its sections checked by name."""
    if not path:
        return {}
    p = Path(path)
    try:
        st = p.stat()
        key = (str(p.resolve()), st.st_mtime_ns, st.st_size)
        if key in _YAML_CACHE:
            return _YAML_CACHE[key]
        data = yaml.safe_load(p.read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {p}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {p} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {p}: top level must be a mapping of sections")
    unknown = sorted(str(k) for k in data if k not in KNOWN_SECTIONS)
    if unknown:
        raise ConfigError(
            f"config file {p}: unknown section(s) {', '.join(unknown)} "
            f"(known: {', '.join(sorted(KNOWN_SECTIONS))})"
        )
    _YAML_CACHE[key] = data
    return data


def format_validation_error(section: str, exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        loc = ".".join(str(x) for x in (section, *err["loc"]))
        got = err.get("input")
        got_s = "" if isinstance(got, dict) else f" (got {got!r})"
        lines.append(f"{loc}: {err['msg']}{got_s}")
    return "invalid configuration: " + "; ".join(lines)


def load_section(
    model: type[T],
    section: str,
    *,
    config_file: str | os.PathLike[str] | None = None,
    env: dict[str, str] | None = None,
    overrides: dict[str, Any] | None = None,
) -> T:
    """Build one config section from defaults, YAML, env vars and overrides."""
    global _process_config_file
    if config_file:
        _process_config_file = str(config_file)
    env = dict(os.environ) if env is None else env
    config_file = config_file or env.get("SENTRI_CONFIG")
    data: dict[str, Any] = {}
    file_data = read_yaml(config_file)
    sec = file_data.get(section) or {}
    if not isinstance(sec, dict):
        raise ConfigError(f"{section}: must be a mapping in {config_file}")
    data = _deep_merge(data, sec)
    data = _deep_merge(data, _env_section(section, env))
    if section == "redis" and env.get("REDIS_URL") and "url" not in _env_section(section, env):
        data.setdefault("url", env["REDIS_URL"])
    if overrides:
        data = _deep_merge(data, {k: v for k, v in overrides.items() if v is not None})
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(section, exc)) from None


class RootConfig:
    """The configuration of one process: every section it uses, read once.

    ``load_config({"redis": RedisConfig, "worker": WorkerConfig, ...})`` reads the
    file once (unknown sections refused), applies env vars and overrides, and
    validates each section; ``cfg.redis``, ``cfg.worker``... are the models.
    """

    def __init__(self, sections: dict[str, BaseModel], config_file: str | None) -> None:
        self.sections = sections
        self.config_file = config_file

    def __getattr__(self, name: str) -> Any:
        try:
            return self.__dict__["sections"][name]
        except KeyError:
            raise AttributeError(name) from None


def load_config(
    models: dict[str, type[BaseModel]],
    *,
    config_file: str | os.PathLike[str] | None = None,
    env: dict[str, str] | None = None,
    overrides: dict[str, dict[str, Any] | None] | None = None,
) -> RootConfig:
    """Load the sections a process uses in one go (see :class:`RootConfig`)."""
    env = dict(os.environ) if env is None else env
    path = config_file or env.get("SENTRI_CONFIG")
    read_yaml(path)  # fail early, naming an unknown section, before any other
    overrides = overrides or {}
    sections = {
        name: load_section(model, name, config_file=path, env=env, overrides=overrides.get(name))
        for name, model in models.items()
    }
    return RootConfig(sections, str(path) if path else None)


def config_env_names(model: type[BaseModel], section: str) -> set[str]:
    """All env var names a section accepts (used by deploy tests and docs)."""
    names = set()
    for name in model.model_fields:
        names.add(f"{ENV_PREFIX}{section.upper()}__{name.upper()}")
    return names
