"""/api/events, /api/snapshots, /api/detections, /api/analysis: results from Redis streams."""

from __future__ import annotations

import json
import re
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response

from services.gateway.deps import CameraGuard, GatewayState, camera_scope, get_state, require_user
from services.gateway.models import EventPage, ResultsView, error_response
from services.gateway.scoping import snapshot_camera
from shared.redisutil import parse_entry

router = APIRouter(prefix="/api", tags=["results"], dependencies=[Depends(require_user)])

STREAM_ID = re.compile(r"^\d{1,20}-\d{1,20}$")
SNAPSHOT_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")
SCAN_BATCH = 200
SCAN_MAX = 5000  # most entries examined per request when filters match rarely
TS_MARGIN_MS = 60_000  # how long after its `ts` an event may reach the stream
U64_MAX = 2**64 - 1
MAX_TS_MS = 10**15  # year 33658: any real timestamp; keeps stream-id arithmetic in range


def _valid_stream_id(value: str) -> bool:
    """``<ms>-<seq>`` with both parts within Redis' 64-bit range (else Redis errors)."""
    if not STREAM_ID.match(value):
        return False
    ms, seq = value.split("-")
    return int(ms) <= U64_MAX and int(seq) <= U64_MAX


def _num(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _with_snapshot(rec: dict[str, Any]) -> dict[str, Any]:
    sid = rec.get("snapshot_id")
    rec["snapshot_url"] = f"/api/snapshots/{sid}" if isinstance(sid, str) and sid else None
    return rec


@router.get("/events", response_model=EventPage)
def list_events(
    request: Request,
    camera_id: str | None = Query(None, max_length=300),
    type: str | None = Query(None, max_length=64, description="object_entered, object_left, ..."),
    since: int | None = Query(
        None, ge=0, le=MAX_TS_MS, description="Event `ts` (unix ms) >= since."
    ),
    until: int | None = Query(
        None, ge=0, le=MAX_TS_MS, description="Event `ts` (unix ms) <= until."
    ),
    cursor: str | None = Query(
        None, description="`next_cursor` of the previous page (a stream id)."
    ),
    limit: int = Query(50, ge=1, le=500),
    guard: CameraGuard = Depends(camera_scope),
) -> EventPage:
    """Events, newest first, filtered and paginated with a stream-id cursor."""
    if cursor is not None and not _valid_stream_id(cursor):
        raise HTTPException(400, "cursor must be a stream id like 1700000000000-0")
    if cursor is not None and not any(int(part) for part in cursor.split("-")):
        return EventPage(events=[], next_cursor=None)  # nothing is older than the first id
    if since is not None and until is not None and since > until:
        raise HTTPException(400, "since is after until")
    gw = get_state(request)
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
            out.append(_with_snapshot(parse_entry(entry_id, fields)))
            if len(out) >= limit:
                break
        if len(batch) < SCAN_BATCH and len(out) < limit:
            exhausted = True
            break
        end = f"({last_id}"
    next_cursor = None if exhausted else last_id
    if next_cursor is not None and not gw.r.xrevrange(key, f"({next_cursor}", start, count=1):
        next_cursor = None
    return EventPage(events=out, next_cursor=next_cursor)


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
    gw = get_state(request)
    if not guard.everything and not guard.allows(snapshot_camera(gw, snapshot_id) or ""):
        raise HTTPException(404, "snapshot expired or unknown")
    data = gw.rb.get(gw.keys.snapshot(snapshot_id))
    if data is None:
        raise HTTPException(404, "snapshot expired or unknown")
    return Response(
        data, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"}
    )


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
