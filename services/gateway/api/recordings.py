"""/api/recordings: a camera's segments and gaps, and clips of any stretch of footage.

Clips are served with HTTP Range support (206 Partial Content) so a browser's
``<video>`` can seek; :func:`media_response` is shared with the event clip route.
"""

from __future__ import annotations

import logging
import re
import time

import av
from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from pydantic import BaseModel, Field
from sqlalchemy.exc import SQLAlchemyError

from services.gateway.api.storage import StorageAccess, get_storage, media_response_headers
from services.gateway.deps import CameraGuard, camera_scope, require_user
from services.gateway.models import error_response
from shared.storage.clips import ClipError

log = logging.getLogger(__name__)

router = APIRouter(prefix="/api", tags=["recordings"], dependencies=[Depends(require_user)])

RANGE = re.compile(r"^bytes=(\d{0,19})-(\d{0,19})$")
MAX_TS_MS = 10**15
DAY_MS = 86_400_000


def media_response(request: Request, data: bytes, media_type: str, filename: str,
                   extra_headers: dict[str, str] | None = None) -> Response:  # fmt: skip
    """200 with the whole body, or 206 for one ``Range: bytes=a-b`` (416 if unsatisfiable)."""
    headers = media_response_headers(extra_headers)
    headers["Content-Disposition"] = f'inline; filename="{filename}"'
    total = len(data)
    rng = request.headers.get("range")
    if not rng:
        return Response(data, media_type=media_type, headers=headers)
    m = RANGE.match(rng.strip())
    if not m or (not m.group(1) and not m.group(2)):
        # Malformed or multi-range: RFC 9110 lets us ignore it and send everything.
        return Response(data, media_type=media_type, headers=headers)
    a, b = m.group(1), m.group(2)
    if a:
        start = int(a)
        end = min(int(b), total - 1) if b else total - 1
    else:  # suffix: the last N bytes
        n = int(b)
        start, end = max(0, total - n), total - 1
    if start >= total or end < start:
        headers["Content-Range"] = f"bytes */{total}"
        return Response(b"", status_code=416, headers=headers)
    headers["Content-Range"] = f"bytes {start}-{end}/{total}"
    return Response(data[start : end + 1], status_code=206, media_type=media_type, headers=headers)


class Segment(BaseModel):
    start: int = Field(description="Unix ms of the first frame.")
    end: int = Field(description="Unix ms after the last frame.")
    bytes: int
    frames: int
    mode: str = Field(description="'continuous' or 'events'.")
    event: bool = Field(description="Footage that belongs to an event (kept longer).")


class Gap(BaseModel):
    start: int
    end: int
    reason: str = Field(description="no_frames, dropped_no_space, dropped_media_unavailable, ...")


class RecordingsView(BaseModel):
    camera_id: str
    since: int
    until: int
    segments: list[Segment]
    gaps: list[Gap]


def check_camera_id(camera_id: str) -> None:
    if not camera_id or len(camera_id) > 300 or any(ord(ch) < 32 for ch in camera_id):
        raise HTTPException(400, "bad camera id (1-300 printable characters)")


def _window(since: int | None, until: int | None) -> tuple[int, int]:
    now = time.time_ns() // 1_000_000
    until = until if until is not None else now
    since = since if since is not None else until - DAY_MS
    if since > until:
        raise HTTPException(400, "since is after until")
    return since, until


@router.get(
    "/recordings",
    response_model=RecordingsView,
    responses={404: error_response("Unknown camera (or outside your camera scope).")},
)
def recordings(
    request: Request,
    camera_id: str = Query(..., min_length=1, max_length=300),
    since: int | None = Query(None, ge=0, le=MAX_TS_MS, description="Unix ms (default until-24h)."),
    until: int | None = Query(None, ge=0, le=MAX_TS_MS, description="Unix ms (default now)."),
    guard: CameraGuard = Depends(camera_scope),
) -> RecordingsView:
    """The camera's recorded segments and recorded gaps in [since, until]."""
    check_camera_id(camera_id)
    guard.camera(camera_id)  # out of scope: 404, like an unknown camera
    since, until = _window(since, until)
    access = get_storage(request)
    try:
        segs = access.store.segments(camera_id, since, until)
        gaps = access.store.gaps(camera_id, since, until)
    except SQLAlchemyError:
        raise HTTPException(503, "event store unavailable") from None
    return RecordingsView(
        camera_id=camera_id, since=since, until=until,
        segments=[Segment(**{k: s[k] for k in Segment.model_fields}) for s in segs],
        gaps=[Gap(**g) for g in gaps],
    )  # fmt: skip


def clip_of(access: StorageAccess, camera_id: str, start: int, end: int) -> bytes | None:
    """The footage of [start, end] as one MP4 (whole segments), None when there is none."""
    try:
        segs = access.store.segments(camera_id, start, end)
    except SQLAlchemyError:
        raise HTTPException(503, "event store unavailable") from None
    if not segs:
        return None
    try:
        return access.clips.get_or_build(access.media, segs)
    except ClipError:
        return None
    except (OSError, av.error.FFmpegError) as exc:  # e.g. no space for the temp file
        log.warning("clip not assembled", extra={"camera_id": camera_id, "error": str(exc)[:200]})
        raise HTTPException(503, "cannot assemble the clip right now (server storage)") from None


@router.get(
    "/recordings/{camera_id:path}/clip.mp4",
    response_class=Response,
    responses={
        200: {"content": {"video/mp4": {}}},
        206: {"description": "The requested byte range."},
        404: error_response("No footage in that range."),
        416: {"description": "Range not satisfiable."},
    },
)
def recording_clip(
    camera_id: str,
    request: Request,
    start: int = Query(..., description="Unix ms.", le=MAX_TS_MS),
    end: int = Query(..., description="Unix ms.", le=MAX_TS_MS),
    guard: CameraGuard = Depends(camera_scope),  # camera_id in the path: checked there
) -> Response:
    """Any stretch of a camera's footage (at most ``storage.clip_max_s``) as one MP4."""
    access = get_storage(request)
    check_camera_id(camera_id)
    if start < 0 or end < 0:
        raise HTTPException(400, "start and end must be unix milliseconds (not negative)")
    if end <= start:
        raise HTTPException(400, "end must be after start")
    if (end - start) / 1000 > access.clip_max_s:
        raise HTTPException(400, f"range too long: at most {access.clip_max_s:g} s per clip")
    data = clip_of(access, camera_id, start, end)
    if data is None:
        raise HTTPException(404, "no footage of this camera in that range")
    name = f"{camera_id.replace('/', '_')}-{start}-{end}.mp4"
    return media_response(request, data, "video/mp4", re.sub(r"[^A-Za-z0-9_.-]", "_", name))
