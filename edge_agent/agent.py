"""``EdgeAgent``: wires discovery, the camera pipelines, the frame sender and control.

    agent = EdgeAgent(EdgeConfig(sources=["demo:bus"], client_id="lobby"))
    agent.start()          # probes sources, starts threads; NoCameraError if none works
    agent.stats()          # {"demo-bus": {"captured": …, "sent": …, "fps": …}, …}
    agent.stop()           # bye, close sockets, join threads (about 1 s)

``run()`` does start + wait for :meth:`request_stop` (e.g. from a signal) + stop.

With ``server = http(s)://…`` the agent first enrols through the gateway
(:mod:`edge_agent.enrol`): ingest's endpoints and public key, pinned on first use.
A thread of the agent that dies of an exception stops the whole agent
(:class:`AgentFailure` from ``run()``); so does ingest's key changing under it.
"""

from __future__ import annotations

import logging
import platform
import socket
import threading
import time
from importlib import metadata
from typing import Any

import zmq

from edge_agent import metrics
from edge_agent.camera import Camera, CameraSettings
from edge_agent.config import EdgeConfig, resolve_key_dir
from edge_agent.control import ControlChannel
from edge_agent.discovery import ProbeResult, discover, source_specs
from edge_agent.enrol import (
    EnrolError,
    GatewayUnavailable,
    KeyChangedError,
    check_pin,
    fetch_bootstrap,
    wait_for_bootstrap,
)
from edge_agent.sender import FrameSender, SocketSecurity
from shared.config import GeneralConfig, load_section
from shared.metrics import start_metrics_server
from shared.protocol import encode_control

log = logging.getLogger(__name__)

AGENT_NAME = "sentri-edge"
#: While the key is pending, how often the agent repeats how to approve it.
PENDING_HINT_S = 60.0
AGENT_KEY_NAME = "edge"


def agent_version() -> str:
    try:
        return metadata.version("sentri")
    except metadata.PackageNotFoundError:
        return "0+unknown"


NO_CAMERA_HINT = (
    "To stream without a camera use a demo source, e.g.\n"
    "  sentri-edge --source demo:bus --source demo:zidane --source demo:astronaut\n"
    "(demo scenes: bus, zidane, astronaut, coffee, chelsea, cameraman, rocket, static, generated)."
)


class NoCameraError(RuntimeError):
    """No source delivered a frame."""


class AgentFailure(RuntimeError):
    """The agent stopped because something broke (a thread died, ingest's key changed);
    ``exit_code`` is what ``sentri-edge`` exits with (1, or 3 for a changed key)."""

    def __init__(self, reason: str, exit_code: int = 1) -> None:
        super().__init__(reason)
        self.exit_code = exit_code


class EnrolmentAborted(RuntimeError):
    """Stop was requested while waiting for the gateway."""


#: Agent threads -> their agent, for the one process-wide thread exception hook.
_OWNERS: dict[threading.Thread, EdgeAgent] = {}
_OWNERS_LOCK = threading.Lock()


def _install_thread_hook() -> None:
    """Route uncaught exceptions of agent threads to their agent (installed once)."""
    previous = threading.excepthook
    if getattr(previous, "_sentri_edge", False):
        return

    def hook(args: threading.ExceptHookArgs) -> None:
        with _OWNERS_LOCK:
            owner = _OWNERS.get(args.thread) if args.thread else None
        if owner is None:
            previous(args)
            return
        try:
            owner._thread_died(args)
        finally:
            owner._stop_requested.set()

    hook._sentri_edge = True  # type: ignore[attr-defined]
    threading.excepthook = hook


class EdgeAgent:
    def __init__(self, config: EdgeConfig, general: GeneralConfig | None = None) -> None:
        """``general`` gives the state dir (key pair); default: env/``SENTRI_CONFIG``."""
        self.config = config
        self._general = general
        self.client_id = config.client_id
        self.cameras: list[Camera] = []
        self.probes: list[ProbeResult] = []
        self._ctx: zmq.Context | None = None
        self._sender: FrameSender | None = None
        self._control: ControlChannel | None = None
        self._stop_requested = threading.Event()
        self._started = False
        self._stopped = False
        #: The agent's CURVE public key (z85) when CURVE is on.
        self.public_key: str | None = None
        #: Ingest's endpoints: from the config, or from the gateway at enrolment.
        self.frames_url = config.frames_url
        self.control_url = config.control_url
        #: Ingest's key as used (explicit, or pinned through the gateway).
        self.server_key: str | None = None
        #: Why the agent stopped on its own (a thread died, a key changed), else None.
        self.failure: str | None = None
        self._failure_code = 1
        self._threads: set[threading.Thread] = set()

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        cfg = self.config
        server_key = self._resolve_ingest()  # enrolment through the gateway, if asked
        secure = self._socket_security(server_key)  # before opening cameras: fails fast
        specs = source_specs(cfg.sources, cfg.max_cameras)
        self.probes = discover(specs, cfg.max_cameras, cfg.width, cfg.height, cfg.probe_timeout_s)
        working = [p for p in self.probes if p.ok]
        for p in self.probes:
            if not p.ok:
                log.warning(
                    "source skipped",
                    extra={"camera": p.spec.name, "source": p.spec.display, "error": p.error},
                )
            elif p.note:
                log.warning(p.note, extra={"camera": p.spec.name})
        if not working:
            if not specs:
                raise NoCameraError(
                    "no cameras found (no /dev/video* device on this machine).\n" + NO_CAMERA_HINT
                )
            raise NoCameraError("none of the sources delivered a frame.\n" + NO_CAMERA_HINT)

        self._ctx = zmq.Context()
        self._sender = FrameSender(
            self._ctx,
            self.frames_url,
            lambda: self.cameras,
            cfg.send_hwm,
            link_up=lambda: self._control is not None and self._control.acks > 0,
            secure=secure,
            generation=lambda: self._control.reconnects if self._control is not None else 0,
            peer_alive=lambda: self._control is not None and self._control.connected,
        )
        for p in working:
            assert p.source is not None
            settings = CameraSettings(
                quality=cfg.quality,
                fps=cfg.fps,
                streaming=not cfg.start_paused,
                motion_gate=cfg.motion_gate,
                motion_threshold=cfg.motion_threshold,
                motion_pixel_delta=cfg.motion_pixel_delta,
                keyframe_interval_s=cfg.keyframe_interval_s,
                motion_hold_s=cfg.motion_hold_s,
            )
            self.cameras.append(
                Camera(self.client_id, p.spec, p.source, settings, self._sender.notify)
            )
        self._control = ControlChannel(
            self._ctx,
            self.control_url,
            self.client_id,
            register_message=self.register_message,
            heartbeat_message=self.heartbeat_message,
            bye_message=lambda: encode_control("bye", client_id=self.client_id),
            on_command=self.apply_command,
            heartbeat_interval_s=cfg.heartbeat_interval_s,
            reply_timeout_s=cfg.reply_timeout_s,
            max_backoff_s=cfg.max_backoff_s,
            refused_retry_s=cfg.refused_retry_s,
            secure=secure,
        )
        self._watch_threads()
        self._sender.start()
        for cam in self.cameras:
            cam.start()
        self._control.start()
        self._control.opened.wait(2.0)
        if cfg.metrics_port:
            start_metrics_server(cfg.metrics_port)
        self._started = True
        if cfg.gateway_url and self.server_key and not cfg.server_key:
            watcher = threading.Thread(target=self._watch_key, name="key-watch", daemon=True)
            self._threads.add(watcher)
            with _OWNERS_LOCK:
                _OWNERS[watcher] = self
            watcher.start()
        if self.failure or not all(t.is_alive() for t in self._threads):
            raise AgentFailure(self.failure or "an agent thread ended during start")
        log.info(
            "edge agent ready",
            extra={
                "client_id": self.client_id,
                "cameras": ",".join(c.name for c in self.cameras),
                "frames": self.frames_url,
                "control": self.control_url,
                "fps": cfg.fps,
                "quality": cfg.quality,
                "motion_gate": cfg.motion_gate,
                "paused": cfg.start_paused,
            },
        )

    def _key_dir(self) -> str:
        general = self._general or load_section(GeneralConfig, "general")
        return resolve_key_dir(self.config, general)

    def _resolve_ingest(self) -> str | None:
        """Ingest's endpoints and the key to trust: ``server_key`` wins; with a gateway
        ``server`` the gateway's answer, its key pinned on first use."""
        cfg = self.config
        explicit = None
        if cfg.server_key:
            from shared.security import read_public_key

            try:
                explicit = read_public_key(cfg.server_key)
            except (OSError, ValueError) as exc:
                raise ValueError(
                    f"edge.server_key: cannot read {cfg.server_key!r}: {exc}"
                ) from None
        if not cfg.gateway_url:
            self.server_key = explicit
            return explicit
        log.info("enrolling through the gateway", extra={"client_id": self.client_id,
                                                          "gateway": cfg.gateway_url})  # fmt: skip
        boot = wait_for_bootstrap(
            cfg.gateway_url, timeout=cfg.bootstrap_timeout_s, max_backoff_s=cfg.max_backoff_s,
            stop=self._stop_requested, client_id=self.client_id,
        )  # fmt: skip
        if boot is None:
            raise EnrolmentAborted("stopped while waiting for the gateway")
        if boot.warning:
            log.warning("gateway: " + boot.warning, extra={"client_id": self.client_id})
        self.frames_url = cfg.frame_endpoint or boot.frame_endpoint
        self.control_url = cfg.control_endpoint or boot.control_endpoint
        if explicit:
            if boot.public_key and boot.public_key != explicit:
                log.warning(
                    "the gateway reports another ingest key than --server-key; using "
                    "--server-key (it takes precedence)",
                    extra={"client_id": self.client_id, "gateway": cfg.gateway_url},
                )
            key = explicit
        elif boot.public_key is None:
            log.warning(
                "the gateway says ingest runs INSECURE (plaintext, no key check)",
                extra={"client_id": self.client_id, "gateway": cfg.gateway_url},
            )
            key = None
        else:
            key = check_pin(self._key_dir(), cfg.gateway_url, boot.public_key, self.client_id)
        self.server_key = key
        return key

    def _watch_key(self) -> None:
        """While ingest is silent, ask the gateway whether ingest's key changed."""
        cfg = self.config
        assert cfg.gateway_url is not None and self.server_key is not None
        last_hint = time.monotonic()
        while not self._stop_requested.wait(cfg.key_recheck_s):
            if self._control is None or self._control.connected:
                continue
            if self._control.refused and time.monotonic() - last_hint >= PENDING_HINT_S:
                last_hint = time.monotonic()
                from shared.security import fingerprint

                log.warning(
                    "still waiting for an administrator to approve this agent's key",
                    extra={"client_id": self.client_id,
                           "fingerprint": fingerprint(self.public_key or ""),
                           "approve_in": f"{cfg.gateway_url}/ (Agents)"},
                )  # fmt: skip
            try:
                boot = fetch_bootstrap(cfg.gateway_url, cfg.bootstrap_timeout_s)
            except (GatewayUnavailable, EnrolError) as exc:
                log.debug("key re-check failed", extra={"error": str(exc)})
                continue
            if boot.public_key and boot.public_key != self.server_key:
                try:
                    check_pin(self._key_dir(), cfg.gateway_url, boot.public_key, self.client_id)
                except KeyChangedError as exc:
                    self._fail(str(exc), exit_code=3)
                    return

    def _fail(self, reason: str, exit_code: int = 1) -> None:
        if self.failure is None:
            self.failure = reason
            self._failure_code = exit_code
            log.error(reason, extra={"client_id": self.client_id})
        self._stop_requested.set()

    def _watch_threads(self) -> None:
        """A thread of this agent that dies of an exception stops the agent."""
        assert self._sender is not None and self._control is not None
        self._threads = {self._sender._thread, self._control._thread,
                         *(t for c in self.cameras for t in c._threads)}  # fmt: skip
        _install_thread_hook()
        with _OWNERS_LOCK:
            for t in self._threads:
                _OWNERS[t] = self

    def _thread_died(self, args: threading.ExceptHookArgs) -> None:
        metrics.THREAD_CRASHES.inc()
        name = args.thread.name if args.thread else "?"
        log.error(
            "agent thread died; stopping the agent",
            exc_info=(args.exc_type, args.exc_value, args.exc_traceback),  # type: ignore[arg-type]
            extra={"client_id": self.client_id, "agent_thread": name},
        )
        self._fail(f"thread {name} died: {args.exc_type.__name__}: {args.exc_value}")

    def _socket_security(self, server_key: str | None) -> SocketSecurity | None:
        """CURVE client options when ingest's key is known (key pair created on first use)."""
        cfg = self.config
        if not server_key:
            local = all(
                any(h in url for h in ("//127.", "//localhost:", "//[::1]:"))
                for url in (self.frames_url, self.control_url)
            )
            log.log(
                logging.INFO if local else logging.WARNING,
                "plaintext connection to ingest (no server_key: CURVE off)",
                extra={"client_id": self.client_id},
            )
            return None
        # Imported here: plain agents must not need what shared.security imports (redis).
        from shared.security import client_socket_options, fingerprint, load_or_create_keypair

        server_public = server_key
        key_dir = self._key_dir()
        public, secret = load_or_create_keypair(key_dir, AGENT_KEY_NAME)
        self.public_key = public
        fp = fingerprint(public)
        where = f"{cfg.gateway_url}/ (Agents)" if cfg.gateway_url else "the dashboard (Agents)"
        log.info(
            "CURVE on: approve this agent's key in the dashboard if it is new",
            extra={"client_id": self.client_id, "fingerprint": fp, "key_dir": key_dir,
                   "ingest_fingerprint": fingerprint(server_public)},
        )  # fmt: skip
        if cfg.gateway_url:
            # Said plainly once, for the person at the camera machine.
            print(
                f"sentri-edge: this agent's key fingerprint is {fp}\n"
                f"  A new agent waits as pending until an administrator approves it: open "
                f"{where}, check that the fingerprint matches, approve.\n"
                f"  Or: POST {cfg.gateway_url}/api/agents/keys/{fp}/approve (admin).",
                flush=True,
            )

        def secure(sock: zmq.Socket) -> None:
            client_socket_options(sock, public, secret, server_public)

        return secure

    def request_stop(self) -> None:
        """Thread- and signal-safe: makes :meth:`run` return."""
        self._stop_requested.set()

    def stop(self, timeout: float = 2.0) -> None:
        """Send ``bye``, close sockets and join every thread (idempotent)."""
        if self._stopped:
            return
        self._stopped = True
        self._stop_requested.set()
        parts: list[Any] = [*self.cameras, self._sender, self._control]
        for part in parts:
            if part is not None:
                part.request_stop()
        deadline = time.monotonic() + timeout
        stuck = [
            getattr(p, "name", type(p).__name__)
            for p in parts
            if p is not None and not p.join(max(0.05, deadline - time.monotonic()))
        ]
        # term() waits for every socket to close; a stuck thread still holds one.
        if self._ctx is not None and not stuck:
            self._ctx.term()
        for p in self.probes:  # sources probed but not used (e.g. over --max-cameras)
            if p.source is not None and not any(c.source is p.source for c in self.cameras):
                p.source.close()
        with _OWNERS_LOCK:
            for t in self._threads:
                _OWNERS.pop(t, None)
        if stuck:
            log.warning("threads still running at exit", extra={"parts": ",".join(stuck)})
        log.info("edge agent stopped", extra={"client_id": self.client_id})

    def run(self) -> None:
        """Start, serve until :meth:`request_stop`, then stop.

        Raises :class:`AgentFailure` when the agent stopped on its own (a thread died,
        ingest's key changed); returns quietly when stopped while enrolling."""
        try:
            self.start()
        except EnrolmentAborted:
            self.stop()
            return
        except BaseException:
            self.stop()
            raise
        try:
            while not self._stop_requested.wait(0.5):
                pass
        finally:
            self.stop()
        if self.failure:
            raise AgentFailure(self.failure, self._failure_code)

    def __enter__(self) -> EdgeAgent:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ state

    def camera(self, name: str) -> Camera | None:
        return next((c for c in self.cameras if c.name == name), None)

    def stats(self) -> dict[str, dict[str, float]]:
        """Per-camera counters: captured, encoded, sent, dropped, gated, bytes, fps, motion."""
        return {c.name: c.stats() for c in self.cameras}

    @property
    def control(self) -> ControlChannel:
        assert self._control is not None, "agent not started"
        return self._control

    # ------------------------------------------------------------------ messages

    def register_message(self) -> bytes:
        return encode_control(
            "register",
            client_id=self.client_id,
            hostname=socket.gethostname(),
            platform=platform.platform(),
            version=agent_version(),
            agent=AGENT_NAME,
            cameras=[c.info() for c in self.cameras],
        )

    def heartbeat_message(self) -> bytes:
        return encode_control("heartbeat", client_id=self.client_id, stats=self.stats())

    def camera_info_message(self, cam: Camera) -> bytes:
        return encode_control("camera_info", client_id=self.client_id, camera=cam.info())

    def apply_command(self, msg: dict[str, Any]) -> list[bytes]:
        """Apply a decoded streaming command; returns ``camera_info`` replies."""
        name = msg.get("camera")
        targets = self.cameras if name is None else [c for c in self.cameras if c.name == name]
        if not targets:
            log.warning(
                "command for unknown camera ignored",
                extra={"client_id": self.client_id, "type": msg["type"], "camera": name},
            )
            return []
        for cam in targets:
            if msg["type"] == "start_streaming":
                cam.set_streaming(True)
            elif msg["type"] == "stop_streaming":
                cam.set_streaming(False)
            elif msg["type"] == "update_streaming_settings":
                cam.update_settings(quality=msg.get("quality"), fps=msg.get("fps"))
        return [self.camera_info_message(cam) for cam in targets]

    def set_streaming(self, name: str | None, streaming: bool) -> None:
        """Local control (same effect as the command); tells ingest via camera_info."""
        msg = {"type": "start_streaming" if streaming else "stop_streaming", "camera": name}
        for payload in self.apply_command(msg):
            self.control.send_soon("camera_info", payload)
