"""The request sent to a model: a downscaled JPEG and a prompt carrying the detections."""

from __future__ import annotations

import time
from dataclasses import dataclass

import cv2
import numpy as np

from services.analyst.scene import SceneContext
from shared.protocol import ProtocolError, jpeg_dimensions

SYSTEM_INSTRUCTION = (
    "You are the scene analyst of a security camera system. You see one still frame "
    "and the object detector's and face recogniser's current findings for it. Describe "
    "only what is visible or stated in the findings; never guess identities beyond the "
    "recognised names given. Answer with JSON only, following the response schema. "
    "threat_level: none (ordinary activity), low (unusual but harmless), medium (worth an "
    "operator's look: loitering, trespass, tampering), high (immediate danger: weapons, "
    "violence, fire, break-in). suggested_action: one short imperative sentence for the "
    "operator, or 'none'."
)


class ImageError(ValueError):
    """The frame's JPEG could not be decoded."""


@dataclass(frozen=True, slots=True)
class AnalysisRequest:
    """Everything a provider needs for one analysis."""

    context: SceneContext
    prompt: str
    image_jpeg: bytes | None
    image_size: tuple[int, int] | None  # (w, h) of the image sent


def downscale_jpeg(jpeg: bytes, max_side: int, quality: int = 85) -> tuple[bytes, tuple[int, int]]:
    """Decode, shrink so the longest side is at most ``max_side``, re-encode.

    A JPEG already small enough is returned unchanged (no generation loss).
    """
    flag = cv2.IMREAD_COLOR
    try:
        w0, h0 = jpeg_dimensions(jpeg)
    except ProtocolError:
        w0 = h0 = 0  # let OpenCV decide whether it decodes
    # Let libjpeg decode at 1/2, 1/4 or 1/8 scale when that still covers max_side:
    # several times faster than decoding full size and then shrinking.
    for factor, reduced in ((8, cv2.IMREAD_REDUCED_COLOR_8), (4, cv2.IMREAD_REDUCED_COLOR_4), (2, cv2.IMREAD_REDUCED_COLOR_2)):  # fmt: skip
        if max(w0, h0) // factor >= max_side:
            flag = reduced
            break
    img = cv2.imdecode(np.frombuffer(jpeg, np.uint8), flag)
    if img is None:
        raise ImageError("frame JPEG does not decode")
    h, w = img.shape[:2]
    if max(h, w) <= max_side:
        return bytes(jpeg), (w, h)  # the received frame may be a view of a message
    scale = max_side / max(h, w)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    small = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", small, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:  # pragma: no cover - OpenCV encodes any 8-bit BGR image
        raise ImageError("re-encoding failed")
    return buf.tobytes(), (nw, nh)


def build_prompt(ctx: SceneContext, *, captured_at: float | None = None) -> str:
    when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(captured_at or time.time()))
    lines = [f"Camera: {ctx.camera_id}", f"Captured: {when}"]
    if ctx.trigger == "periodic":
        lines.append("Why now: periodic check while the camera shows activity.")
    else:
        lines.append(f"Why now: {ctx.trigger} event ({ctx.trigger_detail or ctx.trigger}).")
    object_lines = ctx.object_lines()
    if object_lines:
        lines.append("Detections (object detector, with tracker ids):")
        lines.extend(f"- {line}" for line in object_lines)
    else:
        lines.append("Detections: none reported.")
    if ctx.names:
        lines.append("Recognised people (face recognition): " + ", ".join(ctx.names))
    if ctx.unknown_faces:
        lines.append(f"Unrecognised faces: {ctx.unknown_faces}")
    lines.append(
        "Describe the scene, list the notable objects, rate the threat level and suggest an action."
    )
    return "\n".join(lines)


def build_request(
    ctx: SceneContext,
    jpeg: bytes | None,
    *,
    max_side: int,
    quality: int,
    captured_at: float | None = None,
) -> AnalysisRequest:
    image, size = (None, None) if jpeg is None else downscale_jpeg(jpeg, max_side, quality)
    return AnalysisRequest(
        context=ctx,
        prompt=build_prompt(ctx, captured_at=captured_at),
        image_jpeg=image,
        image_size=size,
    )
