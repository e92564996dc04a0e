"""/api/faces: the face gallery (services.faces.gallery), enrol by multipart upload."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Depends, File, Form, HTTPException, Request, UploadFile
from fastapi.concurrency import run_in_threadpool

from services.gateway import audit
from services.gateway.auth import Principal
from services.gateway.deps import GatewayState, get_state, require_operator, require_user
from services.gateway.models import (
    FACE_NAME_DESCRIPTION,
    FACE_NAME_PATTERN,
    NOT_FOUND,
    Ok,
    Person,
    RenameRequest,
    error_response,
)

log = logging.getLogger(__name__)

router = APIRouter(prefix="/api/faces", tags=["faces"], dependencies=[Depends(require_user)])

# What the gallery decodes (JPEG, PNG, WebP, BMP, GIF, TIFF), recognised by content.
IMAGE_MAGIC = (
    b"\xff\xd8\xff",
    b"\x89PNG\r\n\x1a\n",
    b"GIF87a",
    b"GIF89a",
    b"BM",
    b"II*\x00",
    b"MM\x00*",
)


def _is_image(data: bytes) -> bool:
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return True
    return data.startswith(IMAGE_MAGIC)


MAX_FILES = 10


def _gallery(gw: GatewayState) -> Any:
    """Build the faces engineer's Gallery lazily (it pulls in dlib)."""
    gallery = gw.extras.get("gallery")
    if gallery is not None:
        return gallery
    try:
        from services.faces.config import FacesConfig
        from services.faces.gallery import Gallery
        from shared.config import load_section, process_config_file
    except ImportError as exc:
        raise HTTPException(503, f"face gallery unavailable: {exc}") from None
    gallery = Gallery(
        gw.r, gw.keys, load_section(FacesConfig, "faces", config_file=process_config_file())
    )
    gw.extras["gallery"] = gallery
    return gallery


def _call(fn: Callable[..., Any], *args: Any) -> Any:
    """Run a gallery method, mapping GalleryError to its HTTP status."""
    try:
        from services.faces.gallery import GalleryError
    except ImportError as exc:
        raise HTTPException(503, f"face gallery unavailable: {exc}") from None
    try:
        return fn(*args)
    except GalleryError as exc:
        raise HTTPException(getattr(exc, "status", 400), str(exc)) from None


@router.get("", response_model=list[Person])
def list_people(request: Request) -> list[dict[str, Any]]:
    g = _gallery(get_state(request))
    return _call(g.list)


@router.post(
    "",
    response_model=Person,
    status_code=201,
    responses={
        409: error_response("The gallery is busy or the name is taken."),
        413: error_response("A photo is larger than gateway.max_upload_bytes."),
        415: error_response("A file is not an image."),
    },
)
async def enroll(
    request: Request,
    principal: Principal = Depends(require_operator),
    name: str = Form(
        ...,
        min_length=1,
        max_length=64,
        pattern=FACE_NAME_PATTERN,
        description=FACE_NAME_DESCRIPTION,
    ),
    files: list[UploadFile] = File(
        ..., description="1-10 photos (JPEG, PNG, WebP, ...) of one person."
    ),
) -> dict[str, Any]:
    """Enrol (or add photos to) a person.  413 for an oversize photo, 415 for a non-image,
    400 when no single clear face is found, 409 when the gallery is busy."""
    gw = get_state(request)
    if len(files) > MAX_FILES:
        raise HTTPException(400, f"at most {MAX_FILES} photos per request")
    limit = gw.settings.gateway.max_upload_bytes
    images: list[bytes] = []
    for f in files:
        data = await f.read(limit + 1)
        if len(data) > limit:
            raise HTTPException(413, f"{f.filename}: larger than {limit} bytes")
        if not _is_image(data):
            raise HTTPException(
                415, f"{f.filename}: not an image (accepted: JPEG, PNG, WebP, BMP, GIF, TIFF)"
            )
        images.append(data)
    g = _gallery(gw)
    person = await run_in_threadpool(_call, g.enroll, name, images)
    log.info("face enrolled", extra={"person": name, "photos": len(images)})
    await run_in_threadpool(
        audit.record, request, "face_enrolled", principal=principal, target=person.get("name"),
        photos=len(images),
    )  # fmt: skip
    return person


@router.get("/{name:path}", response_model=Person, responses=NOT_FOUND)
def get_person(name: str, request: Request) -> dict[str, Any]:
    person = _call(_gallery(get_state(request)).get, name)
    if person is None:
        raise HTTPException(404, f"no person named {name!r}")
    return person


@router.delete("/{name:path}", response_model=Ok, responses=NOT_FOUND)
def delete_person(
    name: str, request: Request, principal: Principal = Depends(require_operator)
) -> Ok:
    if not _call(_gallery(get_state(request)).delete, name):
        raise HTTPException(404, f"no person named {name!r}")
    audit.record(request, "face_deleted", principal=principal, target=name)
    return Ok()


@router.post(
    "/{name:path}/rename",
    response_model=Person,
    responses={**NOT_FOUND, 409: error_response("The new name is taken.")},
)
def rename_person(
    name: str,
    body: RenameRequest,
    request: Request,
    principal: Principal = Depends(require_operator),
) -> dict[str, Any]:
    person = _call(_gallery(get_state(request)).rename, name, body.new_name)
    audit.record(
        request, "face_renamed", principal=principal, target=name, new_name=person.get("name")
    )
    return person
