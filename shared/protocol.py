"""Sentri wire protocol: msgpack frame headers + raw JPEG, and control messages.

Frames travel as ZeroMQ multipart ``[header, jpeg]`` (agent -> ingest) and
``[topic, header, jpeg]`` (ingest fan-out).  The JPEG is never re-encoded or copied
into the header, so ingest can forward it untouched.

Every decoder here validates strictly and raises :class:`ProtocolError` (with a short
machine-readable ``reason`` used as a metrics label) instead of crashing.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

import msgpack

PROTOCOL_VERSION = 1

#: Largest msgpack header accepted (bytes).  Real headers are ~150 bytes.
MAX_HEADER_BYTES = 4096
#: Default largest JPEG accepted (bytes).  A 4K JPEG at q95 is ~3 MB.
DEFAULT_MAX_JPEG_BYTES = 8 * 1024 * 1024
#: Largest control message accepted (bytes): a register with many cameras fits easily.
MAX_CONTROL_BYTES = 256 * 1024
#: Largest string inside a header or control message.
MAX_STR = 512
MAX_CAMERAS_PER_CLIENT = 64
#: Default largest frame side (pixels) a header may declare: 8K.  A JPEG is decoded
#: to w x h x 3 bytes, so the protocol's bound is also a memory bound (8192^2 x 3 =
#: 200 MB); workers cap decoded size again, lower (``worker.max_pixels``).
MAX_DIMENSION = 8192
#: ``jpeg_dimensions`` gives up after this many marker steps before the SOF (real
#: encoders need < 20: APPn, DQT, DHT...) or this many bytes, so a crafted frame
#: full of fill bytes costs microseconds, not a byte-by-byte walk of 8 MiB.
MAX_JPEG_MARKER_STEPS = 256
MAX_JPEG_HEADER_BYTES = 2 * 1024 * 1024
#: Default largest decoded image (pixels): 7680 x 4320 (8K UHD).
DEFAULT_MAX_PIXELS = 7680 * 4320

TOPIC_TERMINATOR = b"\x00"

# Control message types.
AGENT_TO_INGEST = frozenset({"register", "heartbeat", "camera_info", "bye"})
INGEST_TO_AGENT = frozenset(
    {"start_streaming", "stop_streaming", "update_streaming_settings", "reregister", "ack"}
)


class ProtocolError(ValueError):
    """Raised for any invalid wire input.  ``reason`` is a short metrics label."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class FrameHeader:
    client_id: str
    camera_id: str
    seq: int
    ts: int  # capture time, unix ns
    w: int
    h: int
    enc: str = "jpeg"
    motion: float | None = None
    v: int = PROTOCOL_VERSION
    #: Ingest's receive time (unix ns, ingest's clock), stamped on fan-out.  Agents'
    #: clocks are not trusted for decisions: workers use this when it is present.
    rx: int | None = None

    @property
    def local_name(self) -> str:
        return self.camera_id.split("/", 1)[1]

    def to_dict(self) -> dict[str, Any]:
        # Spelled out (not dataclasses.asdict, which deep-copies): this runs for
        # every frame on the agent and again on ingest's fan-out.
        d = {"client_id": self.client_id, "camera_id": self.camera_id, "seq": self.seq,
             "ts": self.ts, "w": self.w, "h": self.h, "enc": self.enc}  # fmt: skip
        if self.motion is not None:
            d["motion"] = self.motion
        d["v"] = self.v
        if self.rx is not None:
            d["rx"] = self.rx
        return d


def make_camera_id(client_id: str, local_name: str) -> str:
    return f"{client_id}/{local_name}"


@functools.lru_cache(maxsize=4096)  # every frame checks its ids; a bounded memo of verdicts
def valid_name(value: str, *, allow_slash: bool = False) -> bool:
    """Client ids and camera names: printable, no NUL, no whitespace, bounded."""
    if not value or len(value) > 128:
        return False
    for ch in value:
        if ch == "/" and not allow_slash:
            return False
        if ch.isspace() or not ch.isprintable() or ch == "\x00":
            return False
    return True


def _unpack(data: bytes, limit: int, what: str) -> Any:
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ProtocolError(f"{what}_type", "not bytes")
    if len(data) > limit:
        raise ProtocolError(f"{what}_too_large", f"{len(data)} > {limit} bytes")
    try:
        return msgpack.unpackb(
            data,
            raw=False,
            strict_map_key=True,
            max_str_len=limit,
            max_bin_len=limit,
            max_array_len=4096,
            max_map_len=4096,
            max_ext_len=0,
        )
    except Exception as exc:  # msgpack raises many types on garbage
        raise ProtocolError(f"{what}_undecodable", type(exc).__name__) from None


def _req(d: dict, key: str, typ: type | tuple, what: str = "header") -> Any:
    if key not in d:
        raise ProtocolError(f"{what}_missing_field", key)
    val = d[key]
    # bool is an int subclass; never accept it where a number is expected.
    if isinstance(val, bool) or not isinstance(val, typ):
        raise ProtocolError(f"{what}_bad_type", f"{key}={type(val).__name__}")
    return val


def pack_header(header: FrameHeader) -> bytes:
    return msgpack.packb(header.to_dict(), use_bin_type=True)


def parse_header(data: bytes, max_dimension: int = MAX_DIMENSION) -> FrameHeader:
    """Decode and validate a msgpack frame header (sides at most ``max_dimension``)."""
    d = _unpack(data, MAX_HEADER_BYTES, "header")
    if not isinstance(d, dict):
        raise ProtocolError("header_not_map")
    v = _req(d, "v", int)
    if v != PROTOCOL_VERSION:
        raise ProtocolError("bad_version", str(v))
    client_id = _req(d, "client_id", str)
    camera_id = _req(d, "camera_id", str)
    seq = _req(d, "seq", int)
    ts = _req(d, "ts", int)
    w = _req(d, "w", int)
    h = _req(d, "h", int)
    enc = _req(d, "enc", str)
    motion = d.get("motion")
    rx = d.get("rx")
    if rx is not None and (isinstance(rx, bool) or not isinstance(rx, int) or not 0 <= rx < 2**63):
        raise ProtocolError("header_bad_type", "rx")
    if not valid_name(client_id):
        raise ProtocolError("bad_client_id")
    if (
        not valid_name(camera_id, allow_slash=True)
        or not camera_id.startswith(client_id + "/")
        or len(camera_id) == len(client_id) + 1  # "<client>/" names no camera
    ):
        raise ProtocolError("bad_camera_id")
    if enc != "jpeg":
        raise ProtocolError("bad_encoding", enc[:32])
    if not (0 <= seq < 2**63) or not (0 <= ts < 2**63):
        raise ProtocolError("bad_value", "seq/ts out of range")
    if not (1 <= w <= max_dimension and 1 <= h <= max_dimension):
        raise ProtocolError("bad_value", f"dimensions out of range (max side {max_dimension})")
    if motion is not None:
        if isinstance(motion, bool) or not isinstance(motion, (int, float)):
            raise ProtocolError("header_bad_type", "motion")
        motion = float(motion)
        if not math.isfinite(motion):
            raise ProtocolError("bad_value", "motion not finite")
        # A finite score outside 0..1 is kept as sent: ingest clamps and counts it
        # (clamp_motion), so a broken agent's frames still flow.
    return FrameHeader(
        client_id=client_id,
        camera_id=camera_id,
        seq=seq,
        ts=ts,
        w=w,
        h=h,
        enc=enc,
        motion=motion,
        rx=rx,
    )


def clamp_motion(motion: float | None) -> tuple[float | None, bool]:
    """``motion`` limited to 0..1, and whether it had to be changed."""
    if motion is None or 0.0 <= motion <= 1.0:
        return motion, False
    return min(1.0, max(0.0, motion)), True


def jpeg_dimensions(jpeg: bytes | memoryview) -> tuple[int, int]:
    """Return (width, height) from a JPEG's SOF marker, checking its structure.

    Cheap (no pixel decoding): walks the marker segments up to the first
    start-of-frame, at most :data:`MAX_JPEG_MARKER_STEPS` steps and
    :data:`MAX_JPEG_HEADER_BYTES` bytes.  Raises :class:`ProtocolError` ``bad_jpeg``
    on anything that is not a structurally valid baseline/progressive JPEG with an
    end marker.
    """
    buf = memoryview(jpeg)
    n = len(buf)
    if n < 128 or buf[0] != 0xFF or buf[1] != 0xD8:
        raise ProtocolError("bad_jpeg", "no SOI marker")
    # EOI must be near the end (some encoders pad a few bytes).
    tail = bytes(buf[max(0, n - 32) :])
    if b"\xff\xd9" not in tail:
        raise ProtocolError("bad_jpeg", "truncated (no EOI)")
    i = 2
    steps = 0
    limit = min(n, MAX_JPEG_HEADER_BYTES)
    while i + 4 <= n:
        steps += 1
        if steps > MAX_JPEG_MARKER_STEPS or i >= limit:
            raise ProtocolError("bad_jpeg", "no SOF within the first markers")
        if buf[i] != 0xFF:
            raise ProtocolError("bad_jpeg", "corrupt marker stream")
        marker = buf[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            i += 2
            continue
        seglen = (buf[i + 2] << 8) | buf[i + 3]
        if seglen < 2 or i + 2 + seglen > n:
            raise ProtocolError("bad_jpeg", "segment overruns buffer")
        if marker in (0xC0, 0xC1, 0xC2):
            if seglen < 8:
                raise ProtocolError("bad_jpeg", "short SOF")
            h = (buf[i + 5] << 8) | buf[i + 6]
            w = (buf[i + 7] << 8) | buf[i + 8]
            if w == 0 or h == 0:
                raise ProtocolError("bad_jpeg", "zero size")
            return w, h
        if marker == 0xDA:  # start of scan before any SOF
            break
        i += 2 + seglen
    raise ProtocolError("bad_jpeg", "no SOF marker")


def encode_frame(header: FrameHeader, jpeg: bytes) -> list[bytes]:
    """Agent -> ingest multipart message."""
    return [pack_header(header), jpeg]


def decode_frame(
    parts: list[bytes],
    max_jpeg_bytes: int = DEFAULT_MAX_JPEG_BYTES,
    max_dimension: int = MAX_DIMENSION,
) -> tuple[FrameHeader, bytes]:
    """Validate an agent -> ingest multipart frame message (header + JPEG)."""
    if len(parts) != 2:
        raise ProtocolError("bad_multipart", f"{len(parts)} parts")
    header = parse_header(parts[0], max_dimension)
    check_jpeg(header, parts[1], max_jpeg_bytes)
    return header, parts[1]


def check_jpeg(header: FrameHeader, jpeg: bytes | memoryview, max_jpeg_bytes: int) -> None:
    """The JPEG half of :func:`decode_frame`, for a caller that already parsed the
    header (ingest parses it first to authorise the sender before walking the JPEG)."""
    if len(jpeg) > max_jpeg_bytes:
        raise ProtocolError("payload_too_large", f"{len(jpeg)} > {max_jpeg_bytes}")
    w, h = jpeg_dimensions(jpeg)
    if (w, h) != (header.w, header.h):
        raise ProtocolError("bad_jpeg", f"size {w}x{h} != header {header.w}x{header.h}")


def topic_for(camera_id: str) -> bytes:
    """Fan-out topic: ``cam1`` must never prefix-match ``cam10``."""
    return camera_id.encode() + TOPIC_TERMINATOR


def encode_fanout(camera_id: str, header_bytes: bytes, jpeg: bytes) -> list[bytes]:
    """Ingest -> workers: forward the already validated header bytes and JPEG."""
    return [topic_for(camera_id), header_bytes, jpeg]


def decode_fanout(
    parts: list[bytes],
    max_jpeg_bytes: int = DEFAULT_MAX_JPEG_BYTES,
    max_dimension: int = MAX_DIMENSION,
) -> tuple[FrameHeader, bytes]:
    if len(parts) != 3:
        raise ProtocolError("bad_multipart", f"{len(parts)} parts")
    header = parse_header(parts[1], max_dimension)
    if parts[0] != topic_for(header.camera_id):
        raise ProtocolError("topic_mismatch")
    if len(parts[2]) > max_jpeg_bytes:
        raise ProtocolError("payload_too_large")
    return header, parts[2]


# ---------------------------------------------------------------- control messages


def encode_control(msg_type: str, **fields: Any) -> bytes:
    if msg_type not in AGENT_TO_INGEST and msg_type not in INGEST_TO_AGENT:
        raise ValueError(f"unknown control message type {msg_type!r}")
    return msgpack.packb({"v": PROTOCOL_VERSION, "type": msg_type, **fields}, use_bin_type=True)


def _check_str(d: dict, key: str, *, required: bool = True, what: str = "control") -> str | None:
    if key not in d:
        if required:
            raise ProtocolError(f"{what}_missing_field", key)
        return None
    val = d[key]
    if not isinstance(val, str):
        raise ProtocolError(f"{what}_bad_type", f"{key}={type(val).__name__}")
    if len(val) > MAX_STR:
        raise ProtocolError(f"{what}_bad_value", f"{key} too long")
    return val


def _check_num(
    d: dict, key: str, lo: float, hi: float, *, integer: bool = False, what: str = "control"
) -> float | int | None:
    if key not in d or d[key] is None:
        return None
    val = d[key]
    ok = (int,) if integer else (int, float)
    if isinstance(val, bool) or not isinstance(val, ok):
        raise ProtocolError(f"{what}_bad_type", f"{key}={type(val).__name__}")
    if not (lo <= val <= hi) or (isinstance(val, float) and math.isnan(val)):
        raise ProtocolError(f"{what}_bad_value", f"{key}={val!r} not in [{lo}, {hi}]")
    return val


CAMERA_KINDS = frozenset({"usb", "v4l2", "rtsp", "http", "file", "demo", "other"})


def validate_camera_info(cam: Any) -> dict[str, Any]:
    """Validate one camera description from a register/camera_info message.

    Returns a clean dict holding only known fields.
    """
    if not isinstance(cam, dict):
        raise ProtocolError("control_bad_type", "camera is not a map")
    name = _check_str(cam, "name")
    assert name is not None
    if not valid_name(name):
        raise ProtocolError("control_bad_value", "camera name")
    out: dict[str, Any] = {"name": name}
    for key in ("source", "kind", "backend", "status", "description"):
        val = _check_str(cam, key, required=False)
        if val is not None:
            out[key] = val
    if out.get("kind") is not None and out["kind"] not in CAMERA_KINDS:
        raise ProtocolError("control_bad_value", "camera kind")
    for key, lo, hi, integer in (
        ("width", 1, MAX_DIMENSION, True),
        ("height", 1, MAX_DIMENSION, True),
        ("fps", 0, 1000, False),
        ("target_fps", 0.1, 120, False),
        ("quality", 1, 100, True),
    ):
        val = _check_num(cam, key, lo, hi, integer=integer)
        if val is not None:
            out[key] = val
    if "streaming" in cam:
        if not isinstance(cam["streaming"], bool):
            raise ProtocolError("control_bad_type", "streaming")
        out["streaming"] = cam["streaming"]
    if "motion_gate" in cam:
        if not isinstance(cam["motion_gate"], bool):
            raise ProtocolError("control_bad_type", "motion_gate")
        out["motion_gate"] = cam["motion_gate"]
    return out


def decode_control(data: bytes, *, expect: frozenset[str]) -> dict[str, Any]:
    """Decode and validate a control message.  ``expect`` is the allowed type set.

    Returns a clean dict with ``type`` and validated fields only.
    """
    d = _unpack(data, MAX_CONTROL_BYTES, "control")
    if not isinstance(d, dict):
        raise ProtocolError("control_not_map")
    v = d.get("v")
    if isinstance(v, bool) or not isinstance(v, int):
        raise ProtocolError("control_bad_type", "v")
    if v != PROTOCOL_VERSION:
        raise ProtocolError("bad_version", str(v))
    msg_type = _check_str(d, "type")
    if msg_type not in expect:
        raise ProtocolError("control_unknown_type", str(msg_type)[:32])
    out: dict[str, Any] = {"type": msg_type}

    if msg_type in AGENT_TO_INGEST:
        client_id = _check_str(d, "client_id")
        assert client_id is not None
        if not valid_name(client_id):
            raise ProtocolError("control_bad_value", "client_id")
        out["client_id"] = client_id

    if msg_type == "register":
        for key in ("hostname", "platform", "version", "agent"):
            val = _check_str(d, key, required=False)
            if val is not None:
                out[key] = val
        cams = d.get("cameras", [])
        if not isinstance(cams, list):
            raise ProtocolError("control_bad_type", "cameras")
        if len(cams) > MAX_CAMERAS_PER_CLIENT:
            raise ProtocolError("control_bad_value", "too many cameras")
        out["cameras"] = [validate_camera_info(c) for c in cams]
        names = [c["name"] for c in out["cameras"]]
        if len(set(names)) != len(names):
            raise ProtocolError("control_bad_value", "duplicate camera names")
    elif msg_type == "camera_info":
        out["camera"] = validate_camera_info(d.get("camera"))
    elif msg_type == "heartbeat":
        stats = d.get("stats", {})
        if not isinstance(stats, dict) or len(stats) > MAX_CAMERAS_PER_CLIENT:
            raise ProtocolError("control_bad_type", "stats")
        clean: dict[str, dict[str, float]] = {}
        for name, st in stats.items():
            if not isinstance(name, str) or not valid_name(name) or not isinstance(st, dict):
                raise ProtocolError("control_bad_type", "stats entry")
            entry: dict[str, float] = {}
            for k, val in st.items():
                if not isinstance(k, str) or len(k) > 64:
                    raise ProtocolError("control_bad_type", "stats key")
                if isinstance(val, bool) or not isinstance(val, (int, float)):
                    raise ProtocolError("control_bad_type", f"stats {k}")
                entry[k] = val
            clean[name] = entry
        out["stats"] = clean
    elif msg_type in ("start_streaming", "stop_streaming", "update_streaming_settings"):
        cam = _check_str(d, "camera", required=False) if d.get("camera") is not None else None
        if cam is not None and not valid_name(cam):
            raise ProtocolError("control_bad_value", "camera")
        out["camera"] = cam  # None = every camera of the agent
        if msg_type == "update_streaming_settings":
            q = _check_num(d, "quality", 1, 100, integer=True)
            fps = _check_num(d, "fps", 0.1, 120)
            if q is None and fps is None:
                raise ProtocolError("control_missing_field", "quality or fps")
            out["quality"] = q
            out["fps"] = fps
    elif msg_type in ("reregister", "ack"):
        reason = _check_str(d, "reason", required=False)
        out["reason"] = reason or ""
    return out
