"""/api/events (history from the event store), event snapshots and clips;
/api/snapshots, /api/detections, /api/analysis.

``GET /api/events`` lists events newest first by stream id.  Events the archiver
has stored come from the event store (indexed filters, a million rows stay fast);
the newest ones it has not stored yet come straight from the Redis ``events``
stream, so the list is always current; with the database down, the stream alone
answers.  The cursor is a stream id either way.
"""

from __future__ import annotations

import json
import logging
import re
import time
from typing import Any

import cv2
import numpy as np
from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from sqlalchemy.exc import SQLAlchemyError

from services.gateway.api.recordings import clip_of, media_response
from services.gateway.api.storage import StorageAccess, get_storage
from services.gateway.deps import CameraGuard, GatewayState, camera_scope, get_state, require_user
from services.gateway.models import EventPage, EventRecord, ResultsView, error_response
from services.gateway.scoping import snapshot_camera
from shared.eventstore import EventQuery
from shared.redisutil import parse_entry
from shared.storage import BadKey, MediaError, MediaNotFound, snapshot_key

log = logging.getLogger(__name__)

router = APIRouter(prefix="/api", tags=["results"], dependencies=[Depends(require_user)])

STREAM_ID = re.compile(r"^\d{1,20}-\d{1,20}$")
SNAPSHOT_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")
EVENT_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
SCAN_BATCH = 200
SCAN_MAX = 5000  # most entries examined per request when filters match rarely
TS_MARGIN_MS = 60_000  # how long after its `ts` an event may reach the stream
U64_MAX = 2**64 - 1
BIGINT_MAX = 2**63 - 1
MAX_TS_MS = 10**15  # year 33658: any real timestamp; keeps stream-id arithmetic in range


def _valid_stream_id(value: str) -> bool:
    """``<ms>-<seq>`` with both parts within Redis' 64-bit range (else Redis errors)."""
    if not STREAM_ID.match(value):
        return False
    ms, seq = value.split("-")
    return int(ms) <= U64_MAX and int(seq) <= U64_MAX


def _sid(value: str) -> tuple[int, int]:
    """A stream id as a comparable tuple, clamped to the database's BIGINT."""
    ms, seq = value.split("-")
    return min(int(ms), BIGINT_MAX), min(int(seq), BIGINT_MAX)


def _num(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _with_urls(rec: dict[str, Any]) -> dict[str, Any]:
    sid = rec.get("snapshot_id")
    rec["snapshot_url"] = f"/api/snapshots/{sid}" if isinstance(sid, str) and sid else None
    eid = rec.get("event_id")
    obj = rec.get("object")
    # A clip where footage exists, or will (a running object: the route explains).
    has_footage = (
        isinstance(obj, dict)
        and obj.get("kind") == "object"
        and (obj.get("has_clip") is not False or obj.get("running"))
    )
    rec["clip_url"] = (
        f"/api/events/{eid}/clip.mp4" if isinstance(eid, str) and eid and has_footage else None
    )
    return rec


def _storage_or_none(request: Request) -> StorageAccess | None:
    try:
        return get_storage(request)
    except HTTPException:
        return None


def _newest_archived(access: StorageAccess | None) -> tuple[int, int] | None | bool:
    """Stream id of the newest stored event; None when none; False when the DB is down."""
    if access is None:
        return False
    try:
        return access.store.newest_stream_id()
    except SQLAlchemyError:
        return False


@router.get("/events", response_model=EventPage)
def list_events(
    request: Request,
    camera_id: str | None = Query(None, max_length=300),
    type: str | None = Query(None, max_length=64, description="object_entered, object_left, ..."),
    label: str | None = Query(
        None, max_length=128, description="Object class (person, car, ...) or recognised name."
    ),
    since: int | None = Query(
        None, ge=0, le=MAX_TS_MS, description="Event `ts` (unix ms) >= since."
    ),
    until: int | None = Query(
        None, ge=0, le=MAX_TS_MS, description="Event `ts` (unix ms) <= until."
    ),
    has_clip: bool | None = Query(
        None, description="Only events with (true) or without (false) recorded footage."
    ),
    cursor: str | None = Query(
        None, description="`next_cursor` of the previous page (a stream id)."
    ),
    limit: int = Query(50, ge=1, le=500),
    guard: CameraGuard = Depends(camera_scope),
) -> EventPage:
    """Events, newest first, filtered and paginated with a stream-id cursor (only the
    cameras in the caller's scope)."""
    if cursor is not None and not _valid_stream_id(cursor):
        raise HTTPException(400, "cursor must be a stream id like 1700000000000-0")
    if cursor is not None and not any(int(part) for part in cursor.split("-")):
        return EventPage(events=[], next_cursor=None)  # nothing is older than the first id
    if since is not None and until is not None and since > until:
        raise HTTPException(400, "since is after until")
    for name, value in (("camera_id", camera_id), ("type", type), ("label", label)):
        if value is not None and any(ord(ch) < 32 for ch in value):
            raise HTTPException(400, f"{name}: control characters are not allowed")
    gw = get_state(request)
    if camera_id is not None and not guard.allows(camera_id):
        return EventPage(events=[], next_cursor=None)  # like an unknown camera
    access = _storage_or_none(request)
    boundary = _newest_archived(access)
    db_ok = boundary is not False
    out: list[dict[str, Any]] = []
    # 1. The stream part: what the archiver has not stored yet (everything, DB down).
    in_stream_range = not db_ok or boundary is None or cursor is None or _sid(cursor) > boundary
    if in_stream_range and has_clip is None:
        lower = boundary if db_ok and boundary is not None else None
        items, more_cursor = _stream_events(gw, camera_id, type, label, since, until, cursor,
                                            limit, lower, guard)  # fmt: skip
        out += items
        if more_cursor is not None:
            return EventPage(events=[EventRecord(**_with_urls(e)) for e in out],
                             next_cursor=more_cursor)  # fmt: skip
    if not db_ok or boundary is None or len(out) >= limit:
        return EventPage(events=[EventRecord(**_with_urls(e)) for e in out], next_cursor=None)
    # 2. The event store part: everything up to the newest archived id.
    assert access is not None
    q = EventQuery(
        camera_id=camera_id, type=type, label=label, since=since, until=until,
        has_clip=has_clip, cursor=_sid(cursor) if cursor else None, limit=limit - len(out),
        cameras=None if guard.everything else _scoped_cameras(gw, access, guard),
    )  # fmt: skip
    try:
        rows, next_cursor = access.store.list_events(
            q, pre_ms=access.pre_roll_ms, post_ms=access.post_roll_ms
        )
    except SQLAlchemyError:
        raise HTTPException(503, "event store unavailable") from None
    out += rows
    return EventPage(events=[EventRecord(**_with_urls(e)) for e in out], next_cursor=next_cursor)


def _scoped_cameras(gw: GatewayState, access: StorageAccess, guard: CameraGuard) -> frozenset[str]:
    """The camera ids a scoped caller may see: registered ones and those with stored
    events, in scope."""
    known = set(gw.r.smembers(gw.keys.cameras))
    try:
        known |= set(access.store.event_camera_ids())
    except SQLAlchemyError:
        pass
    return frozenset(guard.ids(known))


def _stream_events(
    gw: GatewayState,
    camera_id: str | None,
    type: str | None,
    label: str | None,
    since: int | None,
    until: int | None,
    cursor: str | None,
    limit: int,
    lower: tuple[int, int] | None,
    guard: CameraGuard,
) -> tuple[list[dict[str, Any]], str | None]:
    """Stream entries newer than ``lower`` (exclusive); cursor when more remain."""
    key = gw.keys.stream("events")
    # Stream ids are the time an event was stored, a little after its `ts`: bound the
    # scan by id with a margin, then filter exactly on `ts`.
    if cursor:
        end = f"({cursor}"
    elif until is not None:
        end = f"{until + TS_MARGIN_MS}-18446744073709551615"
    else:
        end = "+"
    start = f"{max(0, since - TS_MARGIN_MS)}-0" if since is not None else "-"
    if lower is not None:
        lo = f"({lower[0]}-{lower[1]}"
        if start == "-" or _sid(start[:]) <= lower:
            start = lo
    out: list[dict[str, Any]] = []
    scanned = 0
    last_id: str | None = None
    exhausted = False
    while len(out) < limit and scanned < SCAN_MAX:
        batch = gw.r.xrevrange(key, end, start, count=SCAN_BATCH)
        if not batch:
            exhausted = True
            break
        for entry_id, fields in batch:
            scanned += 1
            last_id = entry_id
            if camera_id and fields.get("camera_id") != camera_id:
                continue
            if not guard.allows(str(fields.get("camera_id", ""))):
                continue
            if type and fields.get("type") != type:
                continue
            if since is not None or until is not None:
                ts = _num(fields.get("ts"))
                if ts is None or (since is not None and ts < since):
                    continue
                if until is not None and ts > until:
                    continue
            rec = parse_entry(entry_id, fields)
            if label and label not in (rec.get("class"), rec.get("name")):
                continue
            out.append(rec)
            if len(out) >= limit:
                break
        if len(batch) < SCAN_BATCH and len(out) < limit:
            exhausted = True
            break
        end = f"({last_id}"
    next_cursor = None if exhausted else last_id
    if next_cursor is not None and not gw.r.xrevrange(key, f"({next_cursor}", start, count=1):
        next_cursor = None
    return out, next_cursor


def _find_event(
    request: Request, event_id: str, guard: CameraGuard
) -> tuple[dict[str, Any], StorageAccess | None]:
    """The stored event (with its object) or, not archived yet, its stream entry; an
    event of a camera outside the caller's scope is unknown (404)."""
    ev, access = _lookup_event(request, event_id)
    if not guard.allows(str(ev.get("camera_id") or "")):
        raise HTTPException(404, "unknown event (or deleted by retention)")
    return ev, access


def _lookup_event(request: Request, event_id: str) -> tuple[dict[str, Any], StorageAccess | None]:
    if not EVENT_ID.match(event_id):
        raise HTTPException(400, "bad event id")
    access = _storage_or_none(request)
    if access is not None:
        try:
            ev = access.store.get_event(
                event_id, pre_ms=access.pre_roll_ms, post_ms=access.post_roll_ms
            )
        except SQLAlchemyError:
            ev = None
        if ev is not None:
            return ev, access
    gw = get_state(request)
    for entry_id, fields in gw.r.xrevrange(gw.keys.stream("events"), "+", "-", count=SCAN_MAX):
        data = fields.get("data", "")
        if event_id in data:
            rec = parse_entry(entry_id, fields)
            if rec.get("event_id") == event_id:
                return rec, access
    raise HTTPException(404, "unknown event (or deleted by retention)")


@router.get(
    "/events/{event_id}", response_model=EventRecord, responses={404: error_response("Unknown.")}
)
def get_event(
    event_id: str, request: Request, guard: CameraGuard = Depends(camera_scope)
) -> EventRecord:
    """One event with its tracked object, ``snapshot_url`` and ``clip_url``."""
    ev, _ = _find_event(request, event_id, guard)
    ev = _with_urls(ev)
    if ev.get("snapshot_id"):
        ev["snapshot_url"] = f"/api/events/{event_id}/snapshot.jpg"
    return EventRecord(**ev)


def _snapshot_bytes(request: Request, snapshot_id: str) -> bytes | None:
    """The snapshot JPEG: from the media store (Redis holds at most the pointer),
    or from Redis itself for snapshots written before the media store."""
    gw = get_state(request)
    data = gw.rb.get(gw.keys.snapshot(snapshot_id))
    if data is not None and data[:2] == b"\xff\xd8":
        return data  # a JPEG still in Redis (written by an older worker)
    access = _storage_or_none(request)
    if access is None:
        return None
    try:
        return access.media.get(snapshot_key(snapshot_id))
    except (MediaNotFound, BadKey):
        return None
    except MediaError:
        raise HTTPException(503, "media store unavailable") from None


@router.get(
    "/snapshots/{snapshot_id}",
    response_class=Response,
    responses={
        200: {"content": {"image/jpeg": {}}},
        404: error_response("Snapshot expired or unknown."),
    },
)
def get_snapshot(
    snapshot_id: str, request: Request, guard: CameraGuard = Depends(camera_scope)
) -> Response:
    if not SNAPSHOT_ID.match(snapshot_id):
        raise HTTPException(400, "bad snapshot id")
    data = _snapshot_bytes(request, snapshot_id)
    if data is None:
        raise HTTPException(404, "snapshot expired or unknown")
    if not guard.everything:
        owner = snapshot_camera(get_state(request), _storage_or_none(request), snapshot_id)
        if not guard.allows(owner or ""):
            raise HTTPException(404, "snapshot expired or unknown")
    return Response(
        data, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"}
    )


def _draw_box(jpeg: bytes, box: Any) -> bytes:
    img = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    if img is None or not (isinstance(box, list) and len(box) == 4):
        return jpeg
    h, w = img.shape[:2]
    try:
        x1, y1, x2, y2 = (float(v) for v in box)
    except (TypeError, ValueError):
        return jpeg
    p1 = (int(max(0, min(1, x1)) * w), int(max(0, min(1, y1)) * h))
    p2 = (int(max(0, min(1, x2)) * w), int(max(0, min(1, y2)) * h))
    cv2.rectangle(img, p1, p2, (0, 200, 255), max(2, w // 320))
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 85])
    return buf.tobytes() if ok else jpeg


@router.get(
    "/events/{event_id}/snapshot.jpg",
    response_class=Response,
    responses={200: {"content": {"image/jpeg": {}}}, 404: error_response("No snapshot.")},
)
def event_snapshot(
    event_id: str,
    request: Request,
    box: bool = Query(False, description="Draw the box."),
    guard: CameraGuard = Depends(camera_scope),
) -> Response:
    """The best snapshot of the event's tracked object; ``?box=1`` draws its box."""
    ev, _ = _find_event(request, event_id, guard)
    obj = ev.get("object") or {}
    sid = obj.get("snapshot_id") or ev.get("snapshot_id")
    if not isinstance(sid, str) or not sid:
        raise HTTPException(404, "this event has no snapshot")
    data = _snapshot_bytes(request, sid)
    if data is None:
        raise HTTPException(404, "snapshot expired or deleted by retention")
    if box:
        data = _draw_box(data, obj.get("box") or ev.get("box"))
    return Response(
        data, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"}
    )


@router.get(
    "/events/{event_id}/clip.mp4",
    response_class=Response,
    responses={
        200: {"content": {"video/mp4": {}}},
        206: {"description": "The requested byte range."},
        404: error_response("No footage of this event."),
        409: error_response("The event is still running: its clip is not complete yet."),
        416: {"description": "Range not satisfiable."},
    },
)
def event_clip(
    event_id: str, request: Request, guard: CameraGuard = Depends(camera_scope)
) -> Response:
    """The event's footage from its start − pre-roll to its end + post-roll (HTTP Range)."""
    ev, access = _find_event(request, event_id, guard)
    if access is None:
        raise HTTPException(503, "storage unavailable")
    obj = ev.get("object")
    if not obj or obj.get("kind") != "object":
        raise HTTPException(
            404, "no footage: this event is not a tracked object or not archived yet"
        )
    start = int(obj["start"]) - access.pre_roll_ms
    now = time.time_ns() // 1_000_000
    if obj.get("running"):
        raise HTTPException(
            409,
            "event still running: the object has not left yet; its clip is complete "
            f"{access.post_roll_ms / 1000:g} s after it leaves (live footage so far: "
            f"/api/recordings/{ev.get('camera_id')}/clip.mp4?start={start}&end={now})",
        )
    end = int(obj["end"]) + access.post_roll_ms
    data = clip_of(access, obj["camera_id"], start, end)
    if data is None:
        raise HTTPException(404, "no footage recorded for this event")
    return media_response(request, data, "video/mp4", f"event-{event_id}.mp4")


def _results(
    gw: GatewayState, stream: str, camera_id: str | None, limit: int, guard: CameraGuard
) -> ResultsView:
    cams = guard.ids([camera_id] if camera_id else sorted(gw.r.smembers(gw.keys.cameras)))
    latest: dict[str, dict[str, Any]] = {}
    if cams:
        raws = gw.r.mget([gw.keys.latest(stream, c) for c in cams])
        for cam, raw in zip(cams, raws, strict=True):
            if raw:
                try:
                    latest[cam] = json.loads(raw)
                except ValueError:
                    continue
    recent: list[dict[str, Any]] = []
    end = "+"
    scanned = 0
    while len(recent) < limit and scanned < SCAN_MAX:
        batch = gw.r.xrevrange(gw.keys.stream(stream), end, "-", count=SCAN_BATCH)
        for entry_id, fields in batch:
            scanned += 1
            if camera_id and fields.get("camera_id") != camera_id:
                continue
            if not guard.allows(str(fields.get("camera_id", ""))):
                continue
            recent.append(parse_entry(entry_id, fields))
            if len(recent) >= limit:
                break
        if len(batch) < SCAN_BATCH:
            break
        end = f"({batch[-1][0]}"
    return ResultsView(latest=latest, recent=recent)


@router.get("/detections", response_model=ResultsView)
def detections(
    request: Request,
    camera_id: str | None = Query(None, max_length=300),
    limit: int = Query(20, ge=0, le=500),
    guard: CameraGuard = Depends(camera_scope),
) -> ResultsView:
    """Latest detection record per camera plus the most recent ones."""
    return _results(get_state(request), "detections", camera_id, limit, guard)


@router.get("/analysis", response_model=ResultsView)
def analysis(
    request: Request,
    camera_id: str | None = Query(None, max_length=300),
    limit: int = Query(20, ge=0, le=500),
    guard: CameraGuard = Depends(camera_scope),
) -> ResultsView:
    """Latest analyst summary per camera plus the most recent ones."""
    return _results(get_state(request), "analysis", camera_id, limit, guard)
