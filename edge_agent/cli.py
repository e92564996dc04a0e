"""``sentri-edge``: stream this machine's cameras (or demo scenes) to Sentri's ingest."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from typing import Any

import cv2

from edge_agent.agent import (
    AGENT_KEY_NAME,
    NO_CAMERA_HINT,
    AgentFailure,
    EdgeAgent,
    NoCameraError,
)
from edge_agent.config import EdgeConfig, resolve_key_dir
from edge_agent.demo import SCENES
from edge_agent.discovery import discover, source_specs
from edge_agent.enrol import EnrolError, KeyChangedError
from edge_agent.target import ACCEPTED_FORMS, GATEWAY_PORT, ServerError, parse_server
from shared.config import ConfigError, GeneralConfig, load_section
from shared.logs import setup_logging
from shared.protocol import valid_name

EPILOG = """\
sources (repeat --source; prefix NAME= to choose the camera name, e.g. door=rtsp://…):
  0, /dev/video2               a local camera (V4L2)
  rtsp://user:pass@host/path   an IP camera (passwords are never logged or sent)
  http(s)://host/stream.mjpg   an HTTP/MJPEG stream
  /path/clip.mp4               a video file, looped at its own frame rate
  demo:SCENE[?static][&fps=N]  a real photo through a gently moving virtual camera,
                               no camera needed. Scenes: {scenes}
Without --source, local V4L2 devices are discovered (up to --max-cameras).

--server (the forms accepted):
  http(s)://HOST[:PORT]        the gateway (e.g. http://10.0.0.2:5002): the agent asks it
                               for ingest's endpoints and public key, pins that key on first
                               use, then waits until an admin approves its own key
  HOST, tcp://HOST             ingest itself on ports 5555 (frames) and 5556 (control)
  HOST:PORT, tcp://HOST:PORT   ingest with frames on PORT and control on PORT+1

exit codes: 0 stopped, 1 failed (no camera, a thread died), 2 bad option or config,
  3 ingest's key changed since it was pinned (see the log line for the fix)

examples:
  sentri-edge --server http://10.0.0.2:5002 --client-id camera_machine_1
  sentri-edge --discover-only
  sentri-edge --server 10.0.0.2 --client-id garage
  sentri-edge --source demo:bus --source demo:zidane --motion-gate
  sentri-edge --show-key        (then approve the fingerprint in the dashboard)
  sentri-edge --server 10.0.0.2 --server-key /path/ingest.public

Every option can also come from YAML (--config, section 'edge:') or environment
variables SENTRI_EDGE__<FIELD>, e.g. SENTRI_EDGE__FPS=10.
"""


def _quality(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 100:
        raise argparse.ArgumentTypeError("must be between 1 and 100")
    return value


def _fps(text: str) -> float:
    value = float(text)
    if not 0.1 <= value <= 120:
        raise argparse.ArgumentTypeError("must be between 0.1 and 120")
    return value


def _client_id(text: str) -> str:
    if not valid_name(text):
        raise argparse.ArgumentTypeError("must be 1-128 printable characters without spaces or '/'")
    return text


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="sentri-edge",
        description="Sentri edge agent: discover cameras and stream them as JPEG frames to "
        "ingest over ZeroMQ; obeys start/stop/settings commands from the server.",
        epilog=EPILOG.format(scenes=", ".join(SCENES)),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", metavar="FILE", help="YAML config file (section 'edge:').")
    p.add_argument(
        "--server", metavar="URL|HOST", help="The gateway's URL http(s)://HOST[:PORT] (enrol "
        "through it), or ingest as HOST, HOST:PORT, tcp://HOST[:PORT]. Default 127.0.0.1.",
    )  # fmt: skip
    p.add_argument("--frame-endpoint", metavar="tcp://HOST:PORT", help="Explicit frame endpoint.")
    p.add_argument(
        "--control-endpoint", metavar="tcp://HOST:PORT", help="Explicit control endpoint."
    )
    p.add_argument("--client-id", type=_client_id, help="Agent id (default: hostname).")
    p.add_argument(
        "--source", action="append", metavar="SOURCE", dest="sources",
        help="Camera source (repeatable); see below.",
    )  # fmt: skip
    p.add_argument("--max-cameras", type=int, metavar="N", help="Most cameras (default 5).")
    p.add_argument("--quality", type=_quality, metavar="1-100", help="JPEG quality (default 80).")
    p.add_argument("--fps", type=_fps, help="Target frames per second per camera (default 15).")
    p.add_argument("--width", type=int, help="Demo frame width / size asked of devices (640).")
    p.add_argument("--height", type=int, help="Demo frame height / size asked of devices (480).")
    p.add_argument(
        "--motion-gate", action="store_true", default=None,
        help="Full rate only while something moves; one keyframe per second otherwise.",
    )  # fmt: skip
    p.add_argument(
        "--start-paused", action="store_true", default=None,
        help="Register cameras but stream only when the server says start_streaming.",
    )  # fmt: skip
    p.add_argument(
        "--discover-only", action="store_true",
        help="Print the cameras found (resolution, fps, backend) and exit.",
    )  # fmt: skip
    p.add_argument(
        "--server-key", metavar="KEY|FILE",
        help="Ingest's CURVE public key (z85 or .public file): encrypt and authenticate. "
        "A key that starts with '-' must be given as --server-key=KEY.",
    )  # fmt: skip
    p.add_argument(
        "--key-dir", metavar="DIR",
        help="Where this agent's CURVE key pair lives (default: <state dir>/keys).",
    )  # fmt: skip
    p.add_argument(
        "--show-key", action="store_true",
        help="Print this agent's CURVE public key and fingerprint (creating them) and exit.",
    )  # fmt: skip
    p.add_argument("--metrics-port", type=int, metavar="PORT", help="Serve Prometheus /metrics.")
    p.add_argument(
        "--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="Log level (INFO)."
    )
    return p


def load_config(args: argparse.Namespace) -> EdgeConfig:
    overrides: dict[str, Any] = {
        key: getattr(args, key)
        for key in (
            "server", "frame_endpoint", "control_endpoint", "client_id", "sources",
            "max_cameras", "quality", "fps", "width", "height", "motion_gate",
            "start_paused", "metrics_port", "server_key", "key_dir",
        )
    }  # fmt: skip
    return load_section(EdgeConfig, "edge", config_file=args.config, overrides=overrides)


def discover_only(cfg: EdgeConfig) -> int:
    specs = source_specs(cfg.sources, cfg.max_cameras)
    if not specs:
        print("No cameras found: this machine has no video devices (/dev/video*).")
        print(NO_CAMERA_HINT)
        return 0
    results = discover(specs, cfg.max_cameras, cfg.width, cfg.height, cfg.probe_timeout_s)
    working = [r for r in results if r.ok]
    print(f"Found {len(working)} usable camera(s) of {len(results)} source(s):")
    for r in results:
        print("  " + r.describe())
        if r.source is not None:
            r.source.close()
    if not working:
        print("No source delivered a frame.")
        print(NO_CAMERA_HINT)
        return 0 if not cfg.sources else 1
    return 0


def show_key(cfg: EdgeConfig, general: GeneralConfig) -> int:
    from shared.security import fingerprint, load_or_create_keypair

    key_dir = resolve_key_dir(cfg, general)
    public, _ = load_or_create_keypair(key_dir, AGENT_KEY_NAME)
    print(f"public key:  {public}")
    print(f"fingerprint: {fingerprint(public)}")
    print(f"key files:   {key_dir}/{AGENT_KEY_NAME}.public, {AGENT_KEY_NAME}.secret")
    return 0


def quiet_opencv(verbose: bool) -> None:
    """OpenCV/FFmpeg print probe failures to stderr themselves; our logs say it better."""
    if verbose:
        return
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # AV_LOG_QUIET, read at first open
    try:
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
    except AttributeError:  # builds without the logging module
        pass


def check_server(value: str | None) -> str | None:
    """None if ``--server`` is fine, else the one-line error to print."""
    if value is None:
        return None
    try:
        target = parse_server(value)
    except ServerError as exc:
        return f"sentri-edge: {exc}"
    if target.kind == "ingest" and target.port == GATEWAY_PORT:
        print(
            f"sentri-edge: note: {GATEWAY_PORT} is the gateway's port; to enrol through the "
            f"gateway write --server http://{value.split('://')[-1]} (forms: {ACCEPTED_FORMS})",
            file=sys.stderr,
        )
    return None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    error = check_server(args.server)
    if error:
        print(error, file=sys.stderr)
        return 2
    try:
        cfg = load_config(args)
        general = load_section(GeneralConfig, "general", config_file=args.config)
    except (ConfigError, ValueError) as exc:
        print(f"sentri-edge: {exc}", file=sys.stderr)
        return 2
    level = args.log_level or general.log_level
    setup_logging("edge", level, general.log_format)
    quiet_opencv(verbose=level == "DEBUG")
    try:
        if args.discover_only:
            return discover_only(cfg)
        if args.show_key:
            return show_key(cfg, general)
        agent = EdgeAgent(cfg, general)
    except ValueError as exc:  # e.g. an unknown demo scene in --source
        print(f"sentri-edge: {exc}", file=sys.stderr)
        return 2

    def on_signal(signum: int, _frame: object) -> None:
        agent.request_stop()

    previous: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, on_signal)
    try:
        agent.run()
    except NoCameraError as exc:
        print(f"sentri-edge: {exc}", file=sys.stderr)
        return 1
    except KeyChangedError as exc:
        print(f"sentri-edge: {exc}", file=sys.stderr)
        return 3
    except AgentFailure as exc:
        print(f"sentri-edge: stopped: {exc}", file=sys.stderr)
        return exc.exit_code
    except EnrolError as exc:
        print(f"sentri-edge: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # e.g. the metrics port is taken, the key dir is not writable
        print(f"sentri-edge: {exc}", file=sys.stderr)
        return 1
    except ValueError as exc:
        print(f"sentri-edge: {exc}", file=sys.stderr)
        return 2
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0
