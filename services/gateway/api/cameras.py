"""/api/cameras: registry view, streaming commands, live snapshot and MJPEG.

Camera ids are ``<client>/<name>`` and contain a slash: routes use the ``path``
converter, so ``/api/cameras/lab-1/front/snapshot.jpg`` works unencoded (encoding
the slash as ``%2F`` works too).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse

from services.gateway import audit, metrics
from services.gateway.api.common import camera_or_404, client_status, enrich_cameras
from services.gateway.deps import CameraGuard, camera_scope, get_state, require_user
from services.gateway.models import (
    NOT_FOUND,
    Camera,
    CommandAccepted,
    StreamSettings,
    error_response,
)
from shared import registry

log = logging.getLogger(__name__)

# Every route here takes or returns a camera's data: all of them go through camera_scope
# (a camera_id out of scope is a 404 before the route runs; writes need an operator).
router = APIRouter(prefix="/api/cameras", tags=["cameras"], dependencies=[Depends(require_user)])
Scope = Annotated[CameraGuard, Depends(camera_scope)]

BOUNDARY = "sentriframe"


COMMAND_AUDIT = {
    "start_streaming": "stream_started",
    "stop_streaming": "stream_stopped",
    "update_streaming_settings": "stream_settings",
}


def _command(
    request: Request, guard: CameraGuard, camera_id: str, command: str, **kw
) -> CommandAccepted:
    gw = get_state(request)
    guard.camera(camera_id, write=True)
    cam = camera_or_404(gw, camera_id)
    entry = registry.send_command(
        gw.r, gw.keys, cam["client_id"], command, camera=cam["name"], **kw
    )
    log.info(
        "command queued",
        extra={"camera_id": camera_id, "client_id": cam["client_id"], "command": command},
    )
    audit.record(
        request, COMMAND_AUDIT[command], principal=guard.principal, target=camera_id,
        **{k: v for k, v in kw.items() if v is not None},
    )  # fmt: skip
    return CommandAccepted(command_id=entry, camera_id=camera_id, command=command)


@router.get("", response_model=list[Camera])
def list_cameras(request: Request, guard: Scope) -> list[Camera]:
    gw = get_state(request)
    cams = guard.cameras(registry.list_cameras(gw.r, gw.keys))
    statuses = {c["client_id"]: client_status(gw, c["client_id"]) for c in cams}
    return enrich_cameras(gw, cams, statuses)


@router.post(
    "/{camera_id:path}/stream/start",
    response_model=CommandAccepted,
    status_code=202,
    responses=NOT_FOUND,
)
def start_streaming(camera_id: str, request: Request, guard: Scope) -> CommandAccepted:
    """Ask the camera's agent (through ingest) to start sending frames."""
    return _command(request, guard, camera_id, "start_streaming")


@router.post(
    "/{camera_id:path}/stream/stop",
    response_model=CommandAccepted,
    status_code=202,
    responses=NOT_FOUND,
)
def stop_streaming(camera_id: str, request: Request, guard: Scope) -> CommandAccepted:
    return _command(request, guard, camera_id, "stop_streaming")


@router.post(
    "/{camera_id:path}/settings",
    response_model=CommandAccepted,
    status_code=202,
    responses=NOT_FOUND,
)
def update_settings(
    camera_id: str, body: StreamSettings, request: Request, guard: Scope
) -> CommandAccepted:
    """Change JPEG quality and/or frame rate on the agent."""
    return _command(
        request, guard, camera_id, "update_streaming_settings", quality=body.quality, fps=body.fps
    )


@router.get(
    "/{camera_id:path}/snapshot.jpg",
    response_class=Response,
    responses={
        200: {"content": {"image/jpeg": {}}},
        504: error_response("No live frame arrived within gateway.snapshot_wait_s."),
        **NOT_FOUND,
    },
)
async def snapshot(camera_id: str, request: Request, guard: Scope) -> Response:
    """The latest live frame (subscribes to the camera for a short while if needed)."""
    gw = get_state(request)
    guard.camera(camera_id)
    await run_in_threadpool(camera_or_404, gw, camera_id)
    gw.live.acquire(camera_id)
    try:
        frame = gw.live.latest(camera_id) or await gw.live.wait_frame(
            camera_id, -1, gw.settings.gateway.snapshot_wait_s
        )
    finally:
        gw.live.release(camera_id)
    if frame is None:
        raise HTTPException(504, "no live frame from this camera (is it streaming?)")
    return Response(
        frame.jpeg,
        media_type="image/jpeg",
        headers={"X-Frame-Seq": str(frame.header.seq), "X-Frame-Ts": str(frame.header.ts)},
    )


@router.get(
    "/{camera_id:path}/mjpeg",
    response_class=StreamingResponse,
    responses={
        200: {"content": {f"multipart/x-mixed-replace; boundary={BOUNDARY}": {}}},
        **NOT_FOUND,
    },
)
async def mjpeg(camera_id: str, request: Request, guard: Scope) -> StreamingResponse:
    """Live MJPEG (multipart/x-mixed-replace), capped at gateway.mjpeg_max_fps.  The
    stream ends within gateway.credential_recheck_s once its session or token is revoked
    or logged out, its user changes password, is disabled or deleted, or loses the
    camera from its scope."""
    gw = get_state(request)
    guard.camera(camera_id)
    await run_in_threadpool(camera_or_404, gw, camera_id)
    interval = 1.0 / gw.settings.gateway.mjpeg_max_fps
    recheck_s = gw.settings.gateway.credential_recheck_s
    principal = guard.principal

    async def still_allowed() -> bool:
        current = await run_in_threadpool(gw.auth.recheck, principal)
        return current is not None and current.scope.allows(camera_id)

    async def parts() -> AsyncIterator[bytes]:
        gw.live.acquire(camera_id)
        metrics.MJPEG_STREAMS.inc()
        last_seq = -1
        next_at = 0.0
        check_at = time.monotonic() + recheck_s
        try:
            while True:
                delay = next_at - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                frame = await gw.live.wait_frame(camera_id, last_seq, min(5.0, recheck_s))
                if await request.is_disconnected():
                    return
                if time.monotonic() >= check_at:
                    check_at = time.monotonic() + recheck_s
                    if not await still_allowed():
                        metrics.MJPEG_REVOKED.inc()
                        log.info(
                            "mjpeg closed: credentials no longer valid",
                            extra={"camera_id": camera_id, "user": principal.user},
                        )
                        return
                if frame is None:
                    continue
                last_seq = frame.header.seq
                next_at = time.monotonic() + interval
                yield (
                    (
                        f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\n"
                        f"Content-Length: {len(frame.jpeg)}\r\n\r\n"
                    ).encode()
                    + frame.jpeg
                    + b"\r\n"
                )
        finally:
            metrics.MJPEG_STREAMS.dec()
            gw.live.release(camera_id, linger=0)

    return StreamingResponse(parts(), media_type=f"multipart/x-mixed-replace; boundary={BOUNDARY}")


@router.get("/{camera_id:path}", response_model=Camera, responses=NOT_FOUND)
def get_camera(camera_id: str, request: Request, guard: Scope) -> Camera:
    gw = get_state(request)
    guard.camera(camera_id)
    cam = camera_or_404(gw, camera_id)
    return enrich_cameras(gw, [cam], {cam["client_id"]: client_status(gw, cam["client_id"])})[0]
