"""``EdgeAgent``: wires discovery, the camera pipelines, the frame sender and control.

    agent = EdgeAgent(EdgeConfig(sources=["demo:bus"], client_id="lobby"))
    agent.start()          # probes sources, starts threads; NoCameraError if none works
    agent.stats()          # {"demo-bus": {"captured": …, "sent": …, "fps": …}, …}
    agent.stop()           # bye, close sockets, join threads (about 1 s)

``run()`` does start + wait for :meth:`request_stop` (e.g. from a signal) + stop.
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

from edge_agent.camera import Camera, CameraSettings
from edge_agent.config import EdgeConfig, resolve_key_dir
from edge_agent.control import ControlChannel
from edge_agent.discovery import ProbeResult, discover, source_specs
from edge_agent.sender import FrameSender, SocketSecurity
from shared.config import GeneralConfig, load_section
from shared.metrics import start_metrics_server
from shared.protocol import encode_control

log = logging.getLogger(__name__)

AGENT_NAME = "sentri-edge"
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

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        cfg = self.config
        secure = self._socket_security()  # before opening cameras: a bad key fails fast
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
            cfg.frames_url,
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
            cfg.control_url,
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
        self._sender.start()
        for cam in self.cameras:
            cam.start()
        self._control.start()
        if cfg.metrics_port:
            start_metrics_server(cfg.metrics_port)
        self._started = True
        log.info(
            "edge agent ready",
            extra={
                "client_id": self.client_id,
                "cameras": ",".join(c.name for c in self.cameras),
                "frames": cfg.frames_url,
                "control": cfg.control_url,
                "fps": cfg.fps,
                "quality": cfg.quality,
                "motion_gate": cfg.motion_gate,
                "paused": cfg.start_paused,
            },
        )

    def _socket_security(self) -> SocketSecurity | None:
        """CURVE client options when ``server_key`` is set (key pair created on first use)."""
        cfg = self.config
        if not cfg.server_key:
            local = all(
                any(h in url for h in ("//127.", "//localhost:", "//[::1]:"))
                for url in (cfg.frames_url, cfg.control_url)
            )
            log.log(
                logging.INFO if local else logging.WARNING,
                "plaintext connection to ingest (no server_key: CURVE off)",
                extra={"client_id": self.client_id},
            )
            return None
        # Imported here: plain agents must not need what shared.security imports (redis).
        from shared.security import (
            client_socket_options,
            fingerprint,
            load_or_create_keypair,
            read_public_key,
        )

        try:
            server_public = read_public_key(cfg.server_key)
        except OSError as exc:
            raise ValueError(f"edge.server_key: cannot read {cfg.server_key!r}: {exc}") from None
        general = self._general or load_section(GeneralConfig, "general")
        key_dir = resolve_key_dir(cfg, general)
        public, secret = load_or_create_keypair(key_dir, AGENT_KEY_NAME)
        self.public_key = public
        log.info(
            "CURVE on: approve this agent's key in the dashboard if it is new",
            extra={
                "client_id": self.client_id,
                "fingerprint": fingerprint(public),
                "key_dir": key_dir,
            },
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
        if stuck:
            log.warning("threads still running at exit", extra={"parts": ",".join(stuck)})
        log.info("edge agent stopped", extra={"client_id": self.client_id})

    def run(self) -> None:
        """Start, serve until :meth:`request_stop`, then stop."""
        self.start()
        try:
            while not self._stop_requested.wait(0.5):
                pass
        finally:
            self.stop()

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
